//! MXFP4 weights: the AVX2 matvec, and a batched product of one matvec a
//! token.

use core::arch::x86_64::*;

use super::hsum8;
use crate::kernels::{check_quantized, Activations};
use crate::quant::{mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES, Q4_VALUE_BYTES};

pub(crate) fn matvec_mxfp4_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_avx2`.
    unsafe { mxfp4_avx2(w, row_bytes, blocks, x, out) }
}

/// MXFP4 rows: each block's nibbles become FP4 values doubled (−12..=12,
/// exact in i8) by one table shuffle, interleaved back into element order;
/// `maddubs` takes their magnitudes against the activations with the
/// weights' signs, so every block's integer dot is exact (activations are
/// never −128).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mxfp4_avx2(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let mut table = [0u8; 16];
    for (t, &v) in table.iter_mut().zip(FP4_TIMES_TWO.iter()) {
        *t = v as u8;
    }
    let lut = _mm_loadu_si128(table.as_ptr() as *const __m128i);
    let low4 = _mm_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let xq = x.qs.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY (whole loop body): loads stay inside this row (17 × blocks
        // bytes: the scales, then 16 bytes a block) and the activations
        // (32 × blocks values).
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(blocks);
        let mut acc = _mm256_setzero_ps();
        for b in 0..blocks {
            let d = mxfp4_half_scale(*row.add(b));
            let v = _mm_loadu_si128(values.add(b * Q4_VALUE_BYTES) as *const __m128i);
            let lo = _mm_shuffle_epi8(lut, _mm_and_si128(v, low4));
            let hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), low4));
            // Byte j holds elements 2j (low) and 2j + 1 (high).
            let wv = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
            let xv = _mm256_loadu_si256(xq.add(b * BLOCK_LEN) as *const __m256i);
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            let sum = _mm256_madd_epi16(p, ones);
            acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sum),
                _mm256_set1_ps(d * x.scales[b]),
                acc,
            );
        }
        *o = hsum8(acc);
    }
}

crate::kernels::matmul_per_token!(matmul_mxfp4_avx2, matvec_mxfp4_avx2, Mxfp4);
