//! MXFP4 weights: the RVV matvec.

use core::arch::asm;

use crate::kernels::{check_quantized, Activations};
use crate::quant::{mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES, Q4_VALUE_BYTES};

/// Blocks whose combined scales are computed ahead of one asm loop.
const CHUNK: usize = 64;

/// Σ over `n` MXFP4 blocks of `ds[b] · (w_b · x_b)`.
///
/// Per block: the 16 nibble bytes split into low (elements 2j) and high
/// (2j + 1) nibbles, each looked up in the doubled FP4 table (`vrgather`,
/// values −12..=12); a two-field segment load splits the activations into
/// even and odd elements to match; `vwmul` + `vwmacc` (|.| ≤ 3072 in i16)
/// and `vwredsum` give the block's exact i32 sum, which scalar code scales.
///
/// Safety: the CPU has V; `w` points at `16n` value bytes, `xq` at `32n`
/// activations and `ds` at `n` f32.
unsafe fn mxfp4_blocks(w: *const u8, xq: *const i8, ds: *const f32, n: usize) -> f32 {
    let mut acc = 0.0f32;
    // SAFETY: each iteration reads 16 bytes at w, 32 at xq and 4 at ds,
    // then advances each by exactly that; `n` iterations (none for n = 0).
    // The table is 16 bytes.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "beqz {n}, 2f",
            "vsetivli zero, 4, e32, m1, ta, ma",
            "vmv.v.i v2, 0", // reduction seed: 0 as i32
            "vsetivli zero, 16, e8, m1, ta, ma",
            "vle8.v v1, ({lut})",
            "1:",
            "vsetivli zero, 16, e8, m1, ta, ma",
            "vle8.v v4, ({w})",
            "vand.vi v5, v4, 15",
            "vsrl.vi v6, v4, 4",
            "vrgather.vv v7, v1, v5",
            "vrgather.vv v8, v1, v6",
            "vlseg2e8.v v10, ({x})",
            "vwmul.vv v12, v7, v10",
            "vwmacc.vv v12, v8, v11",
            "vsetivli zero, 16, e16, m2, ta, ma",
            "vwredsum.vs v14, v12, v2",
            "vsetivli zero, 1, e32, m1, ta, ma",
            "vmv.x.s {t}, v14",
            "fcvt.s.w {f}, {t}",
            "flw {d}, 0({ds})",
            "fmadd.s {acc}, {f}, {d}, {acc}",
            "addi {w}, {w}, 16",
            "addi {x}, {x}, 32",
            "addi {ds}, {ds}, 4",
            "addi {n}, {n}, -1",
            "bnez {n}, 1b",
            "2:",
            ".option pop",
            w = inout(reg) w => _,
            x = inout(reg) xq => _,
            ds = inout(reg) ds => _,
            n = inout(reg) n => _,
            acc = inout(freg) acc,
            lut = in(reg) FP4_TIMES_TWO.as_ptr(),
            t = out(reg) _,
            f = out(freg) _,
            d = out(freg) _,
            out("v1") _, out("v2") _, out("v4") _, out("v5") _,
            out("v6") _, out("v7") _, out("v8") _, out("v10") _,
            out("v11") _, out("v12") _, out("v13") _, out("v14") _,
            options(readonly, nostack),
        );
    }
    acc
}

pub(crate) fn matvec_mxfp4_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let (scales, values) = row.split_at(blocks);
        let mut acc = 0.0;
        for c in (0..blocks).step_by(CHUNK) {
            let n = (blocks - c).min(CHUNK);
            let mut ds = [0.0f32; CHUNK];
            for (d, (&e, &dx)) in ds
                .iter_mut()
                .zip(scales[c..c + n].iter().zip(&x.scales[c..]))
            {
                *d = mxfp4_half_scale(e) * dx;
            }
            // SAFETY: V is present (see `kernels::table`); blocks c..c + n
            // of the row's values and of the activations exist
            // (`check_quantized`), and `ds` holds n scales.
            acc += unsafe {
                mxfp4_blocks(
                    values[c * Q4_VALUE_BYTES..].as_ptr(),
                    x.qs[c * BLOCK_LEN..].as_ptr(),
                    ds.as_ptr(),
                    n,
                )
            };
        }
        *o = acc;
    }
}

crate::kernels::matmul_per_token!(matmul_mxfp4_rvv, matvec_mxfp4_rvv, Mxfp4);
