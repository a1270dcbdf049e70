//! int8 weights: the dotprod (`sdot`) and NEON matvecs, and the dotprod
//! and i8mm batched products (tiles of `tile.rs`).

use core::arch::aarch64::*;

use super::tile::{tile_kernel, SignedBlock, Smmla};
use super::{fold4, matvec_blocks, sdot, GroupDot, GROUP};
use crate::kernels::{check_quantized, Activations};
use crate::quant::{BLOCK_LEN, Q8_BLOCK_BYTES, Q8_VALUE_BYTES};

/// int8 rows with `sdot`.
struct Q8Sdot;

impl GroupDot for Q8Sdot {
    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let (w, x) = (w.add(k * Q8_VALUE_BYTES) as *const i8, x.add(k * BLOCK_LEN));
            let acc = sdot(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
            *dot = sdot(acc, vld1q_s8(w.add(16)), vld1q_s8(x.add(16)));
        }
        fold4(dots)
    }
}

/// int8 rows with widening multiplies (no `sdot`).
struct Q8Neon;

impl GroupDot for Q8Neon {
    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let (w, x) = (w.add(k * Q8_VALUE_BYTES) as *const i8, x.add(k * BLOCK_LEN));
            let (w0, w1) = (vld1q_s8(w), vld1q_s8(w.add(16)));
            let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
            // Each i16 lane holds one product (|p| <= 128²): exact.
            let acc = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
            let acc = vpadalq_s16(acc, vmull_high_s8(w0, x0));
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
            *dot = vpadalq_s16(acc, vmull_high_s8(w1, x1));
        }
        fold4(dots)
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_dotprod(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    unsafe { matvec_blocks::<Q8Sdot>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn q8_neon(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    unsafe { matvec_blocks::<Q8Neon>(w, row_bytes, blocks, x, out) }
}

pub(crate) fn matvec_q8_dotprod(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_dotprod`.
    unsafe { q8_dotprod(w, row_bytes, blocks, x, out) }
}

pub(crate) fn matvec_q8_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_neon`.
    unsafe { q8_neon(w, row_bytes, blocks, x, out) }
}

/// int8 blocks for the batched tiles: already signed bytes.
struct Q8Signed;

impl SignedBlock for Q8Signed {
    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn halves(w: *const u8) -> (int8x16_t, int8x16_t) {
        let w = w as *const i8;
        (vld1q_s8(w), vld1q_s8(w.add(16)))
    }
}

tile_kernel!(
    matmul_q8_i8mm,
    Q8Signed,
    Q8_BLOCK_BYTES,
    Smmla,
    "neon,dotprod,i8mm"
);

crate::kernels::matmul_per_token!(matmul_q8_neon, matvec_q8_neon, Q8);
