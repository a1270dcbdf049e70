//! MXFP4 weights: the dotprod (`sdot`) and NEON matvecs, and batched
//! products of one matvec a token.

use core::arch::aarch64::*;

use super::{fold4, sdot, GROUP};
use crate::kernels::{check_quantized, Activations};
use crate::quant::{mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES, Q4_VALUE_BYTES};

pub(crate) fn matvec_mxfp4_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_neon`.
    unsafe { mxfp4_neon(w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_mxfp4_neon, matvec_mxfp4_neon, Mxfp4);

crate::kernels::matmul_per_token!(matmul_mxfp4_dotprod, matvec_mxfp4_dotprod, Mxfp4);

pub(crate) fn matvec_mxfp4_dotprod(
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_dotprod`.
    unsafe { mxfp4_dotprod(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn mxfp4_neon(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    mxfp4_rows::<false>(w, row_bytes, blocks, x, out)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn mxfp4_dotprod(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    mxfp4_rows::<true>(w, row_bytes, blocks, x, out)
}

/// MXFP4 rows: one table lookup (`tbl`) turns each nibble into its FP4
/// value doubled (−12..=12, exact as i8) and `zip` puts the low (even) and
/// high (odd) elements back in order. Blocks go four at a time like the
/// int4 kernels: their integer dots with the int8 activations (`sdot`, or
/// widening multiplies: four products of at most 12 · 128 per i16 lane)
/// fold into one `int32x4` that meets the four scale products in one
/// multiply-add; a last partial group goes block by block.
///
/// Safety: the caller has run `check_quantized` for MXFP4 blocks and the
/// CPU has NEON (and dotprod when `DOTPROD`); inlined into a function with
/// those features.
#[inline(always)]
unsafe fn mxfp4_rows<const DOTPROD: bool>(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let table = vld1q_s8(FP4_TIMES_TWO.as_ptr());
    let low4 = vdupq_n_u8(0x0f);
    let xq = x.qs.as_ptr();
    // Block `b`'s integer dot: 16 value bytes at `v`, 32 activations at `xb`.
    let dot = |v: *const u8, xb: *const i8| -> int32x4_t {
        let v = vld1q_u8(v);
        let lo = vqtbl1q_s8(table, vandq_u8(v, low4));
        let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(v));
        let (w0, w1) = (vzip1q_s8(lo, hi), vzip2q_s8(lo, hi));
        let (x0, x1) = (vld1q_s8(xb), vld1q_s8(xb.add(16)));
        if DOTPROD {
            sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1)
        } else {
            let p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
            let p = vmlal_high_s8(p, w0, x0);
            let p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(x1));
            vpaddlq_s16(vmlal_high_s8(p, w1, x1))
        }
    };
    let full = blocks / GROUP * GROUP;
    for (r, o) in out.iter_mut().enumerate() {
        // Row r: `blocks` scale bytes, then 16 bytes a block (inside `w`).
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(blocks);
        let mut acc = vdupq_n_f32(0.0);
        for b in (0..full).step_by(GROUP) {
            let dots: [int32x4_t; GROUP] = core::array::from_fn(|k| {
                dot(
                    values.add((b + k) * Q4_VALUE_BYTES),
                    xq.add((b + k) * BLOCK_LEN),
                )
            });
            let dw: [f32; GROUP] = core::array::from_fn(|k| mxfp4_half_scale(*row.add(b + k)));
            let scale = vmulq_f32(vld1q_f32(dw.as_ptr()), vld1q_f32(x.scales.as_ptr().add(b)));
            acc = vfmaq_f32(acc, vcvtq_f32_s32(fold4(dots)), scale);
        }
        let mut tail = vaddvq_f32(acc);
        for b in full..blocks {
            let sum = vaddvq_s32(dot(values.add(b * Q4_VALUE_BYTES), xq.add(b * BLOCK_LEN)));
            tail += mxfp4_half_scale(*row.add(b)) * x.scales[b] * sum as f32;
        }
        *o = tail;
    }
}
