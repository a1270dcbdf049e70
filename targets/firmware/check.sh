#!/usr/bin/env bash
# Builds the no_std runtime for both MCU targets, builds both demo
# firmwares with the tiny int4 MoE in flash, runs them under qemu-system
# and checks that they print exactly the tokens the host's `mote generate`
# prints for the same model and prompt. Installs what a fresh Debian 12
# machine lacks. Exit status non-zero on any difference.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v qemu-system-arm >/dev/null || ! command -v qemu-system-riscv32 >/dev/null; then
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        qemu-system-arm qemu-system-misc
fi
rustup target add thumbv7em-none-eabihf riscv32imac-unknown-none-elf
rustup component add llvm-tools

echo "== no_std runtime"
for target in thumbv7em-none-eabihf riscv32imac-unknown-none-elf; do
    (cd "$root" && RUSTFLAGS="-D warnings" cargo build -p mote --no-default-features --release --target "$target")
done

echo "== the model and the host's tokens"
model="$here/target/demo-int4.mote"
mkdir -p "$here/target"
(cd "$root" && cargo run -q --release -p mote-cli -- quantize tests/fixtures/mixtral-tiny/f32 -o "$model" --dtype int4 -q)
host=$(cd "$root" && cargo run -q --release -p mote-cli -- generate "$model" --tokens 1,17,42,99 --max-tokens 8 --ignore-eos)
want=$(echo "$host" | sed -E 's/.*\[([0-9,]*)\].*/\1/')
echo "host: $want"

size_tool="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-size"
status=0
for pair in "mote-demo-cm4 thumbv7em-none-eabihf" "mote-demo-rv32 riscv32imac-unknown-none-elf"; do
    set -- $pair
    crate=$1 target=$2
    echo "== $crate ($target)"
    (cd "$here" && MOTE_DEMO_MODEL="$model" cargo build -q --release -p "$crate" --target "$target")
    start=$(date +%s%N)
    out=$(cd "$here" && MOTE_DEMO_MODEL="$model" cargo run -q --release -p "$crate" --target "$target" 2>&1) || true
    ms=$((($(date +%s%N) - start) / 1000000))
    echo "$out"
    got=$(echo "$out" | sed -nE 's/^tokens: ([0-9,]*).*/\1/p')
    text=$("$size_tool" -A "$here/target/$target/release/$crate" | awk '$1 == ".text" {print $2}')
    if [[ "$got" == "$want" ]]; then
        echo "$crate: same tokens as the host in ${ms} ms under qemu; .text $text bytes"
    else
        echo "$crate: tokens differ from the host: got '$got', want '$want'"
        status=1
    fi
done
if ((status == 0)); then
    echo "firmware: 2 passed, 0 failed"
else
    echo "firmware: tokens differ"
fi
exit $status
