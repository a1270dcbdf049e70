//! int8 weights: the RVV matvec.

use core::arch::asm;

use super::{matvec_blocks, F16_MAGIC};
use crate::kernels::{check_quantized, scalar, Activations};
use crate::quant::{Q8_BLOCK_BYTES, Q8_VALUE_BYTES};

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

pub(crate) fn matvec_q8_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q8(w, row_bytes, x, out);
    }
    // SAFETY: installed by `kernels::table` only when the CPU has V (VLEN ≥ 128);
    // `check_quantized` passed and `w` is 2-byte aligned.
    unsafe { matvec_blocks(q8_groups, Q8_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_q8_rvv, matvec_q8_rvv, Q8);
