//! Puts memory.x on the linker path and checks that the model to embed exists.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=MOTE_DEMO_MODEL");
    let model = std::env::var("MOTE_DEMO_MODEL")
        .expect("set MOTE_DEMO_MODEL to the .mote file to embed (see check.sh)");
    println!("cargo:rerun-if-changed={model}");
}
