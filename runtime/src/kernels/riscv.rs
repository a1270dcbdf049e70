//! riscv64 kernels: RVV 1.0.
//!
//! Stable Rust has neither RVV intrinsics nor `target_feature(enable =
//! "v")`, so each kernel's inner loop is one `asm!` block wrapped in
//! `.option push / .option arch, +v / .option pop`: the binary is built for
//! plain rv64gc, holds both these and the scalar kernels, and [`upgrade`]
//! picks at run time. Each asm block sets `vl`/`vtype` itself before its
//! first vector instruction and declares every vector register it touches
//! as clobbered (vl/vtype are not preserved across calls in the RISC-V ABI;
//! in the default build no compiled code uses them). The code is
//! vector-length agnostic: it needs VLEN ≥ 128, which the V extension
//! guarantees, and never assumes more.
//!
//! Quantized rows go in groups of four blocks. Per block, `vwmul` (int8)
//! or `vwmul` + `vwmacc` on signed nibbles (int4) give i16 products, and
//! `vwredsum` sums them exactly into an i32 (seeded from a register zeroed
//! at e32: the seed is read at 2·SEW, so an e16 write would leave its upper
//! half stale). Four `vwredsum`s land in element 0 of four registers; three
//! `vslideup`s at e16 gather them into one register (each slide overwrites
//! the previous slide's junk), so the group's sums meet their four f16
//! weight scales and activation scales in e32 vector ops and one `vfmacc`.
//! Per block the arithmetic is the scalar kernel's; only the float
//! summation order differs. A last group of fewer than four blocks is
//! copied into zero-padded buffers. The instruction count per block does
//! not shrink with a wider VLEN (a block is 32 values, VLEN ≥ 128 holds it).
//!
//! f16 values convert to f32 with integer ops (no Zvfhmin needed): the
//! 15 magnitude bits shifted into f32 position and multiplied by 2^112
//! give the exact value of normal and subnormal halves; inf/NaN get the
//! all-ones exponent; the sign is or-ed in. f16 and f32 rows run a
//! strip-mined `vfmacc` loop at LMUL 4.
//!
//! Vector loads of misaligned f16/f32 elements may trap (the spec leaves it
//! to the implementation), so a weight slice that is not element aligned
//! (never the case for model files, whose tensors are 64-byte aligned)
//! takes the scalar kernel.
//!
//! Every function here is reached only through [`upgrade`], which installs
//! it after checking the CPU's features; tests compare each with `scalar`.

use core::arch::asm;

use super::{check_float, check_quantized, scalar, Activations, Kernels};
use crate::quant::{BLOCK_LEN, Q4_BLOCK_BYTES, Q4_VALUE_BYTES, Q8_BLOCK_BYTES, Q8_VALUE_BYTES};

/// True when the CPU (and the kernel, which must save vector state) has
/// RVV 1.0 with VLEN ≥ 128.
fn has_v() -> bool {
    let v = {
        cfg_if::cfg_if! {
            if #[cfg(all(feature = "std", target_os = "linux"))] {
                extern "C" {
                    fn getauxval(t: u64) -> u64;
                }
                const AT_HWCAP: u64 = 16;
                // SAFETY: `getauxval` is part of every Linux libc (glibc
                // 2.16+, musl) and only reads the process's auxiliary vector.
                let hwcap = unsafe { getauxval(AT_HWCAP) };
                hwcap & (1 << (b'V' - b'A')) != 0
            } else {
                cfg!(target_feature = "v")
            }
        }
    };
    v && vlen_bytes() >= 16
}

/// VLEN / 8, read from the `vlenb` CSR. Only call with V present.
fn vlen_bytes() -> usize {
    let vlenb: usize;
    // SAFETY: reading `vlenb` has no side effects; callers checked that the
    // CPU has V (otherwise the CSR does not exist).
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "csrr {0}, vlenb",
            ".option pop",
            out(reg) vlenb,
            options(nomem, nostack, preserves_flags)
        );
    }
    vlenb
}

/// Replaces the entries this CPU can run faster.
pub fn upgrade(mut k: Kernels) -> Kernels {
    if has_v() {
        k.name = "riscv64-rvv";
        k.matvec_q4 = matvec_q4_rvv;
        k.matvec_q8 = matvec_q8_rvv;
        k.matvec_f16 = matvec_f16_rvv;
        k.matvec_f32 = matvec_f32_rvv;
    }
    k
}

/// Blocks per asm loop iteration.
const GROUP: usize = 4;
/// 2^112 as f32: scales f16 bits shifted into f32 position to their value.
const F16_MAGIC: f32 = f32::from_bits((127 + 112) << 23);

/// asm lines converting the f16 bit patterns zero-extended in `$h` (e32
/// lanes) to f32 in `$out`, under the current vtype (which must be e32 with
/// mask-undisturbed policy). Clobbers `v0` and `$h`. Needs operands
/// `m7fff`, `m7bff`, `m8000`, `exp` (integers) and `magic` (`F16_MAGIC`).
macro_rules! f16_bits_to_f32 {
    ($out:literal, $h:literal) => {
        concat!(
            "vand.vx ",
            $out,
            ", ",
            $h,
            ", {m7fff}\n",
            "vmsgtu.vx v0, ",
            $out,
            ", {m7bff}\n",
            "vsll.vi ",
            $out,
            ", ",
            $out,
            ", 13\n",
            "vfmul.vf ",
            $out,
            ", ",
            $out,
            ", {magic}\n",
            "vor.vx ",
            $out,
            ", ",
            $out,
            ", {exp}, v0.t\n",
            "vand.vx ",
            $h,
            ", ",
            $h,
            ", {m8000}\n",
            "vsll.vi ",
            $h,
            ", ",
            $h,
            ", 16\n",
            "vor.vv ",
            $out,
            ", ",
            $out,
            ", ",
            $h,
            "\n",
        )
    };
}

/// asm lines for the end of a group: `v2 += f32(i32 sums in the first four
/// e32 lanes of $sums) · f32(f16 scales at {s}) · (f32 scales at {dx})`,
/// then the pointers move on by one group. Leaves vtype at e32, m1, vl 4.
macro_rules! scale_group {
    ($sums:literal) => {
        concat!(
            "vsetivli zero, 4, e32, m1, ta, mu\n",
            "vfcvt.f.x.v v28, ",
            $sums,
            "\n",
            "vle32.v v29, ({dx})\n",
            "vle16.v v30, ({s})\n",
            "vzext.vf2 v31, v30\n",
            f16_bits_to_f32!("v3", "v31"),
            "vfmul.vv v29, v29, v3\n",
            "vfmacc.vv v2, v28, v29\n",
            "addi {dx}, {dx}, 16\n",
            "addi {s}, {s}, 8\n",
        )
    };
}

/// Σ over `groups` groups of four int8 blocks of `d_w · d_x · (w · x)`.
///
/// Safety: the CPU has V with VLEN ≥ 128; `w` points at `4 · groups`
/// blocks of int8 values (32 bytes each), `s` at as many f16 scales
/// (2-byte aligned), `xq` at `128 · groups` activations and `dx` at
/// `4 · groups` activation scales.
unsafe fn q8_groups(
    w: *const u8,
    s: *const u8,
    xq: *const i8,
    dx: *const f32,
    groups: usize,
) -> f32 {
    let sum: f32;
    // SAFETY: the loads stay inside the ranges the caller vouched for: each
    // iteration reads 4 × 32 bytes at w and at xq, 8 bytes at s and 16 at dx,
    // then advances them by exactly that; `groups` iterations.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetivli zero, 4, e32, m1, ta, mu",
            "vmv.v.i v1, 0", // reduction seed: 0 as i32 and as +0.0
            "vmv.v.i v2, 0", // four f32 lanes of running sum
            "beqz {n}, 2f",
            "1:",
            "vsetvli zero, {len}, e8, m2, ta, ma",
            "vle8.v v4, ({w})",
            "vle8.v v6, ({x})",
            "vwmul.vv v8, v4, v6",
            "addi {t}, {w}, 32",
            "addi {u}, {x}, 32",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v12, v4, v6",
            "addi {t}, {w}, 64",
            "addi {u}, {x}, 64",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v16, v4, v6",
            "addi {t}, {w}, 96",
            "addi {u}, {x}, 96",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v20, v4, v6",
            // Block sums as i32 in element 0 of v24, v12, v16, v20; then
            // gathered as e32 lanes 0..4 of v24 (e16 lanes 2k, 2k + 1).
            "vsetvli zero, {len}, e16, m4, ta, ma",
            "vwredsum.vs v24, v8, v1",
            "vwredsum.vs v12, v12, v1",
            "vwredsum.vs v16, v16, v1",
            "vwredsum.vs v20, v20, v1",
            "vslideup.vi v24, v12, 2",
            "vslideup.vi v24, v16, 4",
            "vslideup.vi v24, v20, 6",
            scale_group!("v24"),
            "addi {w}, {w}, 128",
            "addi {x}, {x}, 128",
            "addi {n}, {n}, -1",
            "bnez {n}, 1b",
            "2:",
            "vfredusum.vs v3, v2, v1",
            "vfmv.f.s {sum}, v3",
            ".option pop",
            w = inout(reg) w => _,
            s = inout(reg) s => _,
            x = inout(reg) xq => _,
            dx = inout(reg) dx => _,
            n = inout(reg) groups => _,
            len = in(reg) 32usize,
            t = out(reg) _,
            u = out(reg) _,
            m7fff = in(reg) 0x7fffu32,
            m7bff = in(reg) 0x7bffu32,
            m8000 = in(reg) 0x8000u32,
            exp = in(reg) 0x7f80_0000u32,
            magic = in(freg) F16_MAGIC,
            sum = lateout(freg) sum,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// Σ over `groups` groups of four int4 blocks of `d_w · d_x · (w · x)`.
///
/// Safety: as for [`q8_groups`], with 16 value bytes per block at `w`.
unsafe fn q4_groups(
    w: *const u8,
    s: *const u8,
    xq: *const i8,
    dx: *const f32,
    groups: usize,
) -> f32 {
    let sum: f32;
    // SAFETY: the loads stay inside the ranges the caller vouched for: each
    // iteration reads 4 × 16 bytes at w, 4 × 32 at xq, 8 at s and 16 at dx,
    // then advances them by exactly that; `groups` iterations.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetivli zero, 4, e32, m1, ta, mu",
            "vmv.v.i v1, 0", // reduction seed: 0 as i32 and as +0.0
            "vmv.v.i v2, 0", // four f32 lanes of running sum
            "beqz {n}, 2f",
            "1:",
            // Per block: q = nibble − 8 (low nibbles: elements 0..16, high:
            // 16..32), then 16 i16 lanes of two products each (|.| ≤ 2048).
            "vsetivli zero, 16, e8, m1, ta, ma",
            "vle8.v v4, ({w})",
            "vle8.v v5, ({x})",
            "addi {u}, {x}, 16",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v8, v7, v5",
            "vwmacc.vv v8, v4, v6",
            "addi {t}, {w}, 16",
            "addi {u}, {x}, 32",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 48",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v10, v7, v5",
            "vwmacc.vv v10, v4, v6",
            "addi {t}, {w}, 32",
            "addi {u}, {x}, 64",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 80",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v12, v7, v5",
            "vwmacc.vv v12, v4, v6",
            "addi {t}, {w}, 48",
            "addi {u}, {x}, 96",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 112",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v14, v7, v5",
            "vwmacc.vv v14, v4, v6",
            // Block sums as i32 in element 0 of v16, v10, v12, v14; then
            // gathered as e32 lanes 0..4 of v16 (e16 lanes 2k, 2k + 1).
            "vsetivli zero, 16, e16, m2, ta, ma",
            "vwredsum.vs v16, v8, v1",
            "vwredsum.vs v10, v10, v1",
            "vwredsum.vs v12, v12, v1",
            "vwredsum.vs v14, v14, v1",
            "vslideup.vi v16, v10, 2",
            "vslideup.vi v16, v12, 4",
            "vslideup.vi v16, v14, 6",
            scale_group!("v16"),
            "addi {w}, {w}, 64",
            "addi {x}, {x}, 128",
            "addi {n}, {n}, -1",
            "bnez {n}, 1b",
            "2:",
            "vfredusum.vs v3, v2, v1",
            "vfmv.f.s {sum}, v3",
            ".option pop",
            w = inout(reg) w => _,
            s = inout(reg) s => _,
            x = inout(reg) xq => _,
            dx = inout(reg) dx => _,
            n = inout(reg) groups => _,
            t = out(reg) _,
            u = out(reg) _,
            m7fff = in(reg) 0x7fffu32,
            m7bff = in(reg) 0x7bffu32,
            m8000 = in(reg) 0x8000u32,
            exp = in(reg) 0x7f80_0000u32,
            magic = in(freg) F16_MAGIC,
            sum = lateout(freg) sum,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// One of the group kernels above.
type GroupsFn = unsafe fn(*const u8, *const u8, *const i8, *const f32, usize) -> f32;

/// `out[r] = row r · x` for quantized rows of `blocks` blocks of
/// `value_bytes` value bytes each, `groups` doing the vector work.
///
/// Safety: the CPU has V with VLEN ≥ 128; [`check`] passed for this block
/// size; `w` is 2-byte aligned (so every row's f16 scales are: row_bytes is
/// even).
unsafe fn matvec_blocks(
    groups: GroupsFn,
    value_bytes: usize,
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let full = blocks / GROUP;
    let tail = blocks % GROUP;
    let tail_start = full * GROUP;
    // The last, partial group of activations, zero padded once for all rows
    // (zero activations and zero scales add nothing).
    let mut x_pad = [0i8; GROUP * BLOCK_LEN];
    let mut dx_pad = [0.0f32; GROUP];
    x_pad[..tail * BLOCK_LEN].copy_from_slice(&x.qs[tail_start * BLOCK_LEN..blocks * BLOCK_LEN]);
    dx_pad[..tail].copy_from_slice(&x.scales[tail_start..blocks]);
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let (scales, values) = row.split_at(2 * blocks);
        let mut sum = 0.0;
        if full > 0 {
            // SAFETY: the first `full` groups of this row's scales and
            // values, of the activations and of their scales (`check`); the
            // scales are 2-byte aligned (see the function's contract).
            sum = unsafe {
                groups(
                    values.as_ptr(),
                    scales.as_ptr(),
                    x.qs.as_ptr(),
                    x.scales.as_ptr(),
                    full,
                )
            };
        }
        if tail > 0 {
            let mut w_pad = [0u8; GROUP * Q8_VALUE_BYTES];
            let mut s_pad = [0u16; GROUP]; // u16: aligned for `vle16`
            w_pad[..tail * value_bytes].copy_from_slice(&values[tail_start * value_bytes..]);
            for (d, b) in s_pad
                .iter_mut()
                .zip(scales[2 * tail_start..].chunks_exact(2))
            {
                *d = u16::from_le_bytes([b[0], b[1]]);
            }
            // SAFETY: one whole group in each padded buffer.
            sum += unsafe {
                groups(
                    w_pad.as_ptr(),
                    s_pad.as_ptr() as *const u8,
                    x_pad.as_ptr(),
                    dx_pad.as_ptr(),
                    1,
                )
            };
        }
        *o = sum;
    }
}

fn matvec_q8_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q8(w, row_bytes, x, out);
    }
    // SAFETY: installed by `upgrade` only when the CPU has V (VLEN ≥ 128);
    // `check` passed and `w` is 2-byte aligned.
    unsafe { matvec_blocks(q8_groups, Q8_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

fn matvec_q4_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q4(w, row_bytes, x, out);
    }
    // SAFETY: as for `matvec_q8_rvv`.
    unsafe { matvec_blocks(q4_groups, Q4_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

fn matvec_f32_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 4);
    if !(w.as_ptr() as usize).is_multiple_of(4) {
        return scalar::matvec_f32(w, row_bytes, x, out);
    }
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let sum: f32;
        // SAFETY: V is present (see `upgrade`); the loop reads `cols` f32s
        // from the row (4-byte aligned: `w` is and row_bytes = 4 · cols) and
        // from x, `vl` at a time, advancing by exactly what it read.
        unsafe {
            asm!(
                ".option push",
                ".option arch, +v",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vmv.v.i v8, 0",
                "vmv.v.i v4, 0",
                "beqz {n}, 2f",
                "1:",
                // Tail-undisturbed: the accumulator's lanes past a short
                // last `vl` keep their sums.
                "vsetvli {t}, {n}, e32, m4, tu, ma",
                "vle32.v v16, ({w})",
                "vle32.v v20, ({x})",
                "vfmacc.vv v8, v16, v20",
                "slli {u}, {t}, 2",
                "add {w}, {w}, {u}",
                "add {x}, {x}, {u}",
                "sub {n}, {n}, {t}",
                "bnez {n}, 1b",
                "2:",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vfredusum.vs v4, v8, v4",
                "vfmv.f.s {sum}, v4",
                ".option pop",
                w = inout(reg) row.as_ptr() => _,
                x = inout(reg) x.f32s.as_ptr() => _,
                n = inout(reg) cols => _,
                t = out(reg) _,
                u = out(reg) _,
                sum = lateout(freg) sum,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                options(readonly, nostack),
            );
        }
        *o = sum;
    }
}

fn matvec_f16_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_f16(w, row_bytes, x, out);
    }
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let sum: f32;
        // SAFETY: V is present (see `upgrade`); the loop reads `cols` f16s
        // from the row (2-byte aligned: `w` is and row_bytes = 2 · cols) and
        // `cols` f32s from x, `vl` at a time, advancing by what it read.
        unsafe {
            asm!(
                ".option push",
                ".option arch, +v",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vmv.v.i v8, 0",
                "vmv.v.i v4, 0",
                "beqz {n}, 2f",
                "1:",
                // Tail-undisturbed for the accumulator, mask-undisturbed
                // for the inf/NaN fix-up in the conversion.
                "vsetvli {t}, {n}, e32, m4, tu, mu",
                "vle16.v v12, ({w})",
                "vzext.vf2 v16, v12",
                f16_bits_to_f32!("v20", "v16"),
                "vle32.v v16, ({x})",
                "vfmacc.vv v8, v20, v16",
                "slli {u}, {t}, 1",
                "add {w}, {w}, {u}",
                "slli {u}, {t}, 2",
                "add {x}, {x}, {u}",
                "sub {n}, {n}, {t}",
                "bnez {n}, 1b",
                "2:",
                "vsetvli {t}, zero, e32, m4, ta, ma",
                "vfredusum.vs v4, v8, v4",
                "vfmv.f.s {sum}, v4",
                ".option pop",
                w = inout(reg) row.as_ptr() => _,
                x = inout(reg) x.f32s.as_ptr() => _,
                n = inout(reg) cols => _,
                t = out(reg) _,
                u = out(reg) _,
                m7fff = in(reg) 0x7fffu32,
                m7bff = in(reg) 0x7bffu32,
                m8000 = in(reg) 0x8000u32,
                exp = in(reg) 0x7f80_0000u32,
                magic = in(freg) F16_MAGIC,
                sum = lateout(freg) sum,
                out("v0") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                options(readonly, nostack),
            );
        }
        *o = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::compare_with_scalar;
    use crate::kernels::MatvecFn;

    /// The table must follow the CPU: `MOTE_EXPECT_KERNELS` names it when
    /// set (`targets/cross-test.sh` sets it for each qemu CPU, `scalar` for
    /// `-cpu rv64`); unset, the RVV table is required (qemu `v=true`).
    #[test]
    fn detected_kernels_are_the_expected_ones_and_match_scalar() {
        let fast = upgrade(Kernels::scalar());
        let want = std::env::var("MOTE_EXPECT_KERNELS");
        std::println!("kernels: {} (expected: {want:?})", fast.name);
        assert_eq!(fast.name, want.as_deref().unwrap_or("riscv64-rvv"));
        compare_with_scalar(&fast);
    }

    /// Requires V (run with `--skip rvv_` on CPUs without it).
    fn require_v() {
        assert!(has_v(), "this test needs a CPU with RVV 1.0");
        std::println!("VLEN = {}", 8 * vlen_bytes());
    }

    /// Integer sums must be exact at the i8 extremes (−128 · −128 included),
    /// which the quantizers never produce. All values equal, so every float
    /// step is exact too and the results must be identical.
    #[test]
    fn rvv_extreme_int8_values_are_exact() {
        require_v();
        let blocks = 7;
        let qs = std::vec![-128i8; blocks * BLOCK_LEN];
        let ones = std::vec![1.0f32; blocks];
        let x = Activations {
            f32s: &[],
            qs: &qs,
            scales: &ones,
            sums: &ones, // unused by these kernels
        };
        for (b8, b4) in [(0x80u8, 0x00u8), (0x7f, 0xff)] {
            for (byte, block_bytes, reference, fast) in [
                (
                    b8,
                    Q8_BLOCK_BYTES,
                    scalar::matvec_q8 as MatvecFn,
                    matvec_q8_rvv as MatvecFn,
                ),
                (b4, Q4_BLOCK_BYTES, scalar::matvec_q4, matvec_q4_rvv),
            ] {
                let mut row = std::vec![byte; blocks * block_bytes];
                for b in 0..blocks {
                    row[2 * b..2 * b + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                    // f16 1.0
                }
                let (mut want, mut got) = ([0.0f32], [0.0f32]);
                reference(&row, row.len(), &x, &mut want);
                fast(&row, row.len(), &x, &mut got);
                assert_eq!(got, want, "byte {byte:#x}");
            }
        }
    }

    /// Every f16 bit pattern converts like `half` does: normals,
    /// subnormals, zeros, infinities and NaNs. One-column rows, so each
    /// output is one weight times 1.0.
    #[test]
    fn rvv_f16_conversion_covers_every_pattern() {
        require_v();
        let bytes: std::vec::Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        let x = Activations {
            f32s: &[1.0],
            qs: &[],
            scales: &[],
            sums: &[],
        };
        let mut got = std::vec![0.0f32; 1 << 16];
        matvec_f16_rvv(&bytes, 2, &x, &mut got);
        for (bits, got) in (0..=u16::MAX).zip(got) {
            let want = half::f16::from_bits(bits).to_f32();
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}: {got}");
            } else {
                // == so that −0 (summed onto +0) matches.
                assert!(got == want, "{bits:#06x}: {got} vs {want}");
            }
        }
    }

    /// Weights at an odd address (never so in model files) still give the
    /// scalar result.
    #[test]
    fn misaligned_weights_match_scalar() {
        crate::kernels::tests::compare_misaligned_with_scalar(&upgrade(Kernels::scalar()));
    }
}
