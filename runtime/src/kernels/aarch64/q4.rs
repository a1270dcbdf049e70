//! int4 weights: the NEON matvec (with dotprod, the matvec and the
//! batched product are `rows4.rs`'s, on four planar rows at a time).

use core::arch::aarch64::*;

use super::{fold4, matvec_blocks, GroupDot, GROUP};
use crate::kernels::{check_quantized, Activations};
use crate::quant::{BLOCK_LEN, Q4_BLOCK_BYTES, Q4_VALUE_BYTES};

/// int4 rows with widening multiplies on signed nibbles (no `sdot`).
struct Q4Neon;

impl GroupDot for Q4Neon {
    const VALUE_BYTES: usize = Q4_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let low4 = vdupq_n_u8(0x0f);
        let eight = vdupq_n_s8(8);
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let v = vld1q_u8(w.add(k * Q4_VALUE_BYTES));
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low4)), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
            let (x0, x1) = (
                vld1q_s8(x.add(k * BLOCK_LEN)),
                vld1q_s8(x.add(k * BLOCK_LEN + 16)),
            );
            // Four products per i16 lane, each |p| <= 8 · 128: exact.
            let p = vmull_s8(vget_low_s8(lo), vget_low_s8(x0));
            let p = vmlal_high_s8(p, lo, x0);
            let p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(x1));
            *dot = vpaddlq_s16(vmlal_high_s8(p, hi, x1));
        }
        fold4(dots)
    }
}

#[target_feature(enable = "neon")]
unsafe fn q4_neon(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    unsafe { matvec_blocks::<Q4Neon>(w, row_bytes, blocks, x, out) }
}

pub(crate) fn matvec_q4_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has NEON; `check_quantized`
    // proved the buffer sizes the loads use.
    unsafe { q4_neon(w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_q4_neon, matvec_q4_neon, Q4);
