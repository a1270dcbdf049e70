//! aarch64 kernels: NEON, dotprod (sdot) and i8mm.
//!
//! Every function here is reached only through [`upgrade`], which installs
//! it after checking the CPU's features; tests compare each with `scalar`.

use super::Kernels;

/// Replaces the entries this CPU can run faster (none yet).
pub fn upgrade(k: Kernels) -> Kernels {
    k
}
