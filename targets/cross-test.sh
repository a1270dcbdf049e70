#!/usr/bin/env bash
# Runs the runtime's tests (`cargo test -p mote`) for aarch64 and riscv64
# Linux under qemu-user, on several emulated CPUs so that every kernel
# table is chosen and checked:
#
#   aarch64  -cpu max          NEON + dotprod + i8mm -> aarch64-neon-i8mm
#   aarch64  -cpu cortex-a76   NEON + dotprod  -> aarch64-neon-dotprod
#   aarch64  -cpu cortex-a72   NEON only       -> aarch64-neon
#   riscv64  rv64,v=true,vlen=128              -> riscv64-rvv
#   riscv64  rv64,v=true,vlen=256              -> riscv64-rvv
#   riscv64  rv64 (no V)                       -> scalar (RVV-only tests skipped)
#
# MOTE_EXPECT_KERNELS tells the kernel tests which table the CPU must get.
# Meant for a fresh Debian 12 machine (as root, or with sudo): installs the
# cross compilers, libcs and qemu-user if they are missing, and the Rust
# targets. Works from any directory. Honours CARGO_TARGET_DIR. Extra
# arguments go to every `cargo test` (e.g. `--lib`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

summary=()

# step NAME COMMAND...: runs and times one step.
step() {
    local name=$1 start end
    shift
    echo "=== $name"
    start=$(date +%s%N)
    "$@"
    end=$(date +%s%N)
    local ms=$(((end - start) / 1000000))
    local took
    took=$(printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)))
    summary+=("$(printf '%9s  %s' "$took" "$name")")
    echo "=== $name: $took"
}

need_apt=0
for tool in aarch64-linux-gnu-gcc riscv64-linux-gnu-gcc qemu-aarch64 qemu-riscv64; do
    command -v "$tool" >/dev/null || need_apt=1
done
for libc in /usr/aarch64-linux-gnu/lib/libc.so.6 /usr/riscv64-linux-gnu/lib/libc.so.6; do
    [[ -e $libc ]] || need_apt=1
done
if ((need_apt)); then
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    # --no-install-recommends keeps qemu's recommended extras (and a
    # downgrade of a backports qemu-utils) out; qemu-user alone needs none.
    step "apt-get update" "${sudo[@]}" apt-get update
    step "apt-get install" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends \
        gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu \
        libc6-dev-arm64-cross libc6-dev-riscv64-cross qemu-user
fi
step "rustup targets" rustup target add aarch64-unknown-linux-gnu riscv64gc-unknown-linux-gnu

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER=riscv64-linux-gnu-gcc

# run TRIPLE QEMU_CPU EXPECTED_KERNELS [test args...]
run() {
    local triple=$1 cpu=$2 expect=$3
    shift 3
    local arch=${triple%%-*} var
    var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER
    local sysroot=/usr/${arch}-linux-gnu
    [[ $arch == riscv64gc ]] && sysroot=/usr/riscv64-linux-gnu
    local qemu=qemu-${arch%gc}
    env "$var=$qemu -cpu $cpu -L $sysroot" MOTE_EXPECT_KERNELS="$expect" \
        cargo test -p mote --target "$triple" "${args[@]}" -- "$@"
}

args=("$@")
step "aarch64 build" cargo test -p mote --target aarch64-unknown-linux-gnu "${args[@]}" --no-run
step "aarch64 -cpu max" run aarch64-unknown-linux-gnu max aarch64-neon-i8mm
step "aarch64 -cpu cortex-a76" run aarch64-unknown-linux-gnu cortex-a76 aarch64-neon-dotprod
step "aarch64 -cpu cortex-a72" run aarch64-unknown-linux-gnu cortex-a72 aarch64-neon
step "riscv64 build" cargo test -p mote --target riscv64gc-unknown-linux-gnu "${args[@]}" --no-run
step "riscv64 v, vlen=128" run riscv64gc-unknown-linux-gnu \
    rv64,v=true,vlen=128,elen=64,vext_spec=v1.0 riscv64-rvv
step "riscv64 v, vlen=256" run riscv64gc-unknown-linux-gnu \
    rv64,v=true,vlen=256,elen=64,vext_spec=v1.0 riscv64-rvv
step "riscv64 no V" run riscv64gc-unknown-linux-gnu rv64 scalar --skip rvv_

echo
echo "cross-test: all passed"
printf '%s\n' "${summary[@]}"
