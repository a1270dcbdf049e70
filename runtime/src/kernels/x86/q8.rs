//! int8 weights: AVX-512 VNNI and AVX2 matvecs, the AVX-512 VNNI batched
//! product, and AVX2's as one matvec a token (a 2 × 4 AVX2 tile measured
//! 7% slower: its accumulators and sign-adjusted blocks spill).

use core::arch::x86_64::*;

use super::{byte_mask, hsum8, lane_mask, scales8, TILE_ROWS, TILE_TOKENS};
use crate::kernels::check_batch;
use crate::kernels::{check_quantized, Activations, BatchActs};
use crate::quant::{BLOCK_LEN, Q8_BLOCK_BYTES, Q8_VALUE_BYTES};

/// Lane indices that spread block scales `2k, 2k+1` over the two 256-bit
/// halves of a 2-block int8 step.
static SPREAD2: [[i32; 16]; 8] = {
    let mut t = [[0i32; 16]; 8];
    let mut k = 0;
    while k < 8 {
        let mut l = 0;
        while l < 16 {
            t[k][l] = (2 * k + l / 8) as i32;
            l += 1;
        }
        k += 1;
    }
    t
};

pub(crate) fn matvec_q8_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_avx512`.
    unsafe { q8_avx512(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn q8_avx512(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let zero = _mm512_setzero_si512();
    let xq = x.qs.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY (whole loop body): loads are masked to this row's bytes
        // and to the activations' 32 × blocks values and blocks scales.
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(2 * blocks) as *const i8;
        let mut acc = _mm512_setzero_ps();
        let mut g = 0;
        while g < blocks {
            let n = (blocks - g).min(16);
            let m16 = lane_mask(n);
            let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m16, row.add(2 * g) as *const i16));
            let dx = _mm512_maskz_loadu_ps(m16, x.scales.as_ptr().add(g));
            let s = _mm512_mul_ps(dw, dx);
            let mut k = 0;
            while 2 * k < n {
                let b = g + 2 * k;
                let mask = byte_mask((blocks - b).min(2) * Q8_VALUE_BYTES);
                // The same bytes two rows on: a prefetch only hints, so
                // past the end it is harmless.
                _mm_prefetch::<_MM_HINT_T0>(
                    values.wrapping_add(b * Q8_VALUE_BYTES + 2 * row_bytes),
                );
                let wv = _mm512_maskz_loadu_epi8(mask, values.add(b * Q8_VALUE_BYTES));
                let xv = _mm512_maskz_loadu_epi8(mask, xq.add(b * BLOCK_LEN));
                // w·x = |w|·(x negated where w < 0); activations are never -128.
                let xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
                let dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), xs);
                let sk =
                    _mm512_permutexvar_ps(_mm512_loadu_si512(SPREAD2[k].as_ptr() as *const _), s);
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sk, acc);
                k += 1;
            }
            g += 16;
        }
        *o = _mm512_reduce_add_ps(acc);
    }
}

pub(crate) fn matvec_q8_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `q4::matvec_q4_avx2`.
    unsafe { q8_avx2(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_avx2(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let xq = x.qs.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY (whole loop body): each load is one whole block of this row
        // or of the activations, block index < blocks.
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(2 * blocks);
        let mut acc = _mm256_setzero_ps();
        let mut g = 0;
        while g < blocks {
            let (s, _) = scales8(row, blocks, g, x);
            for k in 0..(blocks - g).min(8) {
                let b = g + k;
                let wv = _mm256_loadu_si256(values.add(b * Q8_VALUE_BYTES) as *const __m256i);
                let xv = _mm256_loadu_si256(xq.add(b * BLOCK_LEN) as *const __m256i);
                // w·x = |w|·(x with w's sign); activations are never -128.
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                let d = _mm256_madd_epi16(p, ones);
                let sk = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(k as i32));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sk, acc);
            }
            g += 8;
        }
        *o = hsum8(acc);
    }
}

pub(crate) fn matmul_q8_avx512(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let blocks = check_batch(w, cols, rows, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `q4::matmul_q4_avx512`.
    unsafe { q8_matmul_avx512(w, blocks, rows, x, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn q8_matmul_avx512(
    w: &[u8],
    blocks: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let row_bytes = blocks * Q8_BLOCK_BYTES;
    let zero = _mm512_setzero_si512();
    let stride = x.block_stride;
    for r0 in (0..rows).step_by(TILE_ROWS) {
        // SAFETY (whole body): as in `q4::q4_matmul_avx512`.
        let rp: [*const u8; TILE_ROWS] =
            core::array::from_fn(|i| w.as_ptr().add((r0 + i).min(rows - 1) * row_bytes));
        for t0 in (0..x.tokens).step_by(TILE_TOKENS) {
            let tok: [usize; TILE_TOKENS] = core::array::from_fn(|j| (t0 + j).min(x.tokens - 1));
            let mut acc = [[_mm512_setzero_ps(); TILE_TOKENS]; TILE_ROWS];
            let mut g = 0;
            while g < blocks {
                let n = (blocks - g).min(16);
                let m16 = lane_mask(n);
                let mut s = [[_mm512_setzero_ps(); TILE_TOKENS]; TILE_ROWS];
                for i in 0..TILE_ROWS {
                    let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                        m16,
                        rp[i].add(2 * g) as *const i16,
                    ));
                    for j in 0..TILE_TOKENS {
                        s[i][j] = _mm512_mul_ps(
                            dw,
                            _mm512_maskz_loadu_ps(m16, x.scales.as_ptr().add(tok[j] * stride + g)),
                        );
                    }
                }
                let mut k = 0;
                while 2 * k < n {
                    let b = g + 2 * k;
                    let mask = byte_mask((blocks - b).min(2) * Q8_VALUE_BYTES);
                    let mut wa = [zero; TILE_ROWS];
                    let mut neg = [0 as __mmask64; TILE_ROWS];
                    for i in 0..TILE_ROWS {
                        let wv = _mm512_maskz_loadu_epi8(
                            mask,
                            rp[i].add(2 * blocks + b * Q8_VALUE_BYTES) as *const i8,
                        );
                        neg[i] = _mm512_movepi8_mask(wv);
                        wa[i] = _mm512_abs_epi8(wv);
                    }
                    let spread = _mm512_loadu_si512(SPREAD2[k].as_ptr() as *const _);
                    for j in 0..TILE_TOKENS {
                        let xv = _mm512_maskz_loadu_epi8(
                            mask,
                            x.qs.as_ptr().add((tok[j] * stride + b) * BLOCK_LEN),
                        );
                        for i in 0..TILE_ROWS {
                            let xs = _mm512_mask_sub_epi8(xv, neg[i], zero, xv);
                            let dot = _mm512_dpbusd_epi32(zero, wa[i], xs);
                            let sk = _mm512_permutexvar_ps(spread, s[i][j]);
                            acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sk, acc[i][j]);
                        }
                    }
                    k += 1;
                }
                g += 16;
            }
            for i in 0..TILE_ROWS.min(rows - r0) {
                for j in 0..TILE_TOKENS.min(x.tokens - t0) {
                    out[(t0 + j) * rows + r0 + i] = _mm512_reduce_add_ps(acc[i][j]);
                }
            }
        }
    }
}

crate::kernels::matmul_per_token!(matmul_q8_avx2, matvec_q8_avx2, Q8);
