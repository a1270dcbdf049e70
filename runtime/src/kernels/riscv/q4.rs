//! int4 weights: the RVV matvec.

use core::arch::asm;

use super::{matvec_blocks, F16_MAGIC};
use crate::kernels::{check_quantized, scalar, Activations};
use crate::quant::{Q4_BLOCK_BYTES, Q4_VALUE_BYTES};

/// Σ over `groups` groups of four int4 blocks of `d_w · d_x · (w · x)`.
///
/// Safety: as for `q8::q8_groups`, with 16 value bytes per block at `w`.
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

pub(crate) fn matvec_q4_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q4(w, row_bytes, x, out);
    }
    // SAFETY: as for `q8::matvec_q8_rvv`.
    unsafe { matvec_blocks(q4_groups, Q4_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_q4_rvv, matvec_q4_rvv, Q4);
