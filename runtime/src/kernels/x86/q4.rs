//! int4 weights: AVX-512 VNNI and AVX2 matvecs and batched products.

use core::arch::x86_64::*;

use super::{byte_mask, f16x8, f32x8, hsum8, lane_mask, scales8, TILE_ROWS, TILE_TOKENS};
use crate::kernels::check_batch;
use crate::kernels::{check_quantized, Activations, BatchActs};
use crate::quant::{BLOCK_LEN, Q4_BLOCK_BYTES, Q4_VALUE_BYTES};

/// Lane indices that spread block scales `4k..4k+4` over the four 128-bit
/// lanes of a 4-block int4 step.
static SPREAD4: [[i32; 16]; 4] = {
    let mut t = [[0i32; 16]; 4];
    let mut k = 0;
    while k < 4 {
        let mut l = 0;
        while l < 16 {
            t[k][l] = (4 * k + l / 4) as i32;
            l += 1;
        }
        k += 1;
    }
    t
};

pub(crate) fn matvec_q4_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has AVX-512 F/BW/VL/
    // VNNI, F16C and FMA; `check_quantized` proved the buffer sizes the loads use.
    unsafe { q4_avx512(w, row_bytes, blocks, x, out) }
}

/// Rows computed together: they share the activation loads and permutes,
/// and give the memory system independent streams.
const ROWS: usize = 4;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn q4_avx512(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let low4 = _mm512_set1_epi8(0x0f);
    // Qword indices that gather the first (second) halves of four blocks.
    let idx_lo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    let idx_hi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    let xq = x.qs.as_ptr() as *const u8;
    for (chunk, outs) in out.chunks_mut(ROWS).enumerate() {
        let nrows = outs.len();
        // SAFETY (whole loop body): every load is masked to the bytes of
        // the chunk's rows (`row_bytes` = 18 × blocks each, inside `w` by
        // `check_quantized`) or of the activations (32 × blocks bytes, blocks scales
        // and sums). Rows past `nrows` repeat the last row (never stored).
        let rows: [*const u8; ROWS] = core::array::from_fn(|i| {
            w.as_ptr()
                .add((chunk * ROWS + i.min(nrows - 1)) * row_bytes)
        });
        for r in rows {
            _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(ROWS * row_bytes) as *const i8);
        }
        let mut acc = [_mm512_setzero_ps(); ROWS];
        let mut corr = [_mm512_setzero_ps(); ROWS];
        let mut g = 0;
        while g < blocks {
            let n = (blocks - g).min(16);
            let m16 = lane_mask(n);
            let dx = _mm512_maskz_loadu_ps(m16, x.scales.as_ptr().add(g));
            let sx = _mm512_maskz_loadu_ps(m16, x.sums.as_ptr().add(g));
            let mut s = [_mm512_setzero_ps(); ROWS];
            for i in 0..ROWS {
                let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                    m16,
                    rows[i].add(2 * g) as *const i16,
                ));
                corr[i] = _mm512_fmadd_ps(dw, sx, corr[i]);
                s[i] = _mm512_mul_ps(dw, dx);
            }
            let mut k = 0;
            while 4 * k < n {
                let b = g + 4 * k;
                let m = (blocks - b).min(4);
                let xa = _mm512_maskz_loadu_epi8(
                    byte_mask(m * BLOCK_LEN),
                    xq.add(b * BLOCK_LEN) as *const i8,
                );
                let xb = _mm512_maskz_loadu_epi8(
                    byte_mask(m.saturating_sub(2) * BLOCK_LEN),
                    xq.add((b + 2).min(blocks) * BLOCK_LEN) as *const i8,
                );
                let xlo = _mm512_permutex2var_epi64(xa, idx_lo, xb);
                let xhi = _mm512_permutex2var_epi64(xa, idx_hi, xb);
                let spread = _mm512_loadu_si512(SPREAD4[k].as_ptr() as *const _);
                let wmask = byte_mask(m * Q4_VALUE_BYTES);
                for i in 0..ROWS {
                    let values = rows[i].add(2 * blocks + b * Q4_VALUE_BYTES);
                    // The same bytes of the next chunk of rows: a prefetch
                    // only hints, so past the end it is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(values.wrapping_add(ROWS * row_bytes) as *const i8);
                    let wv = _mm512_maskz_loadu_epi8(wmask, values as *const i8);
                    let lo = _mm512_and_si512(wv, low4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xlo);
                    let dot = _mm512_dpbusd_epi32(dot, hi, xhi);
                    let sk = _mm512_permutexvar_ps(spread, s[i]);
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sk, acc[i]);
                }
                k += 1;
            }
            g += 16;
        }
        for (i, o) in outs.iter_mut().enumerate() {
            *o = _mm512_reduce_add_ps(acc[i]) - 8.0 * _mm512_reduce_add_ps(corr[i]);
        }
    }
}

pub(crate) fn matvec_q4_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has AVX2, FMA and
    // F16C; `check_quantized` proved the buffer sizes the loads use.
    unsafe { q4_avx2(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_avx2(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    let low4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let zero_block = [0i8; BLOCK_LEN];
    let xq = x.qs.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY (whole loop body): loads stay inside this row (18 × blocks
        // bytes) and the activations (32 × blocks values); an odd last block
        // pairs with zero weights and a zero activation block on the stack.
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(2 * blocks);
        let mut acc = _mm256_setzero_ps();
        let mut corr = _mm256_setzero_ps();
        let mut g = 0;
        while g < blocks {
            let (s, c) = scales8(row, blocks, g, x);
            corr = _mm256_add_ps(corr, c);
            let mut k = 0;
            while k < 8 && g + k < blocks {
                let b = g + k;
                let pair = b + 1 < blocks;
                let wa = _mm_loadu_si128(values.add(b * Q4_VALUE_BYTES) as *const __m128i);
                let wb = if pair {
                    _mm_loadu_si128(values.add((b + 1) * Q4_VALUE_BYTES) as *const __m128i)
                } else {
                    _mm_set1_epi8(0)
                };
                let v = _mm256_set_m128i(wb, wa);
                let lo = _mm256_and_si256(v, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                let xa = _mm256_loadu_si256(xq.add(b * BLOCK_LEN) as *const __m256i);
                let xb_ptr = if pair {
                    xq.add((b + 1) * BLOCK_LEN)
                } else {
                    zero_block.as_ptr()
                };
                let xb = _mm256_loadu_si256(xb_ptr as *const __m256i);
                let xlo = _mm256_permute2x128_si256(xa, xb, 0x20);
                let xhi = _mm256_permute2x128_si256(xa, xb, 0x31);
                let p =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
                let d = _mm256_madd_epi16(p, ones);
                // Lanes 0-3 hold block b, lanes 4-7 block b + 1.
                let sk = _mm256_permutevar8x32_ps(s, pair_spread(k));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sk, acc);
                k += 2;
            }
            g += 8;
        }
        *o = hsum8(acc) - 8.0 * hsum8(corr);
    }
}

pub(crate) fn matmul_q4_avx512(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let blocks = check_batch(w, cols, rows, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only on CPUs with the features enabled
    // below; `check_batch` proved every range the loads use.
    unsafe { q4_matmul_avx512(w, blocks, rows, x, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn q4_matmul_avx512(
    w: &[u8],
    blocks: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let row_bytes = blocks * Q4_BLOCK_BYTES;
    let low4 = _mm512_set1_epi8(0x0f);
    let idx_lo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    let idx_hi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    let stride = x.block_stride;
    for r0 in (0..rows).step_by(TILE_ROWS) {
        // SAFETY (whole body): rows past the end repeat the last row and
        // tokens past the end repeat the last token (never stored); loads are
        // masked to `blocks` blocks of a row or a token (`check_batch`).
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
                let dx: [__m512; TILE_TOKENS] = core::array::from_fn(|j| {
                    _mm512_maskz_loadu_ps(m16, x.scales.as_ptr().add(tok[j] * stride + g))
                });
                for i in 0..TILE_ROWS {
                    let dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                        m16,
                        rp[i].add(2 * g) as *const i16,
                    ));
                    let dw8 = _mm512_mul_ps(dw, _mm512_set1_ps(8.0));
                    for j in 0..TILE_TOKENS {
                        let sx =
                            _mm512_maskz_loadu_ps(m16, x.sums.as_ptr().add(tok[j] * stride + g));
                        // The +8 of the stored nibbles, removed per block.
                        acc[i][j] = _mm512_fnmadd_ps(dw8, sx, acc[i][j]);
                        s[i][j] = _mm512_mul_ps(dw, dx[j]);
                    }
                }
                let mut k = 0;
                while 4 * k < n {
                    let b = g + 4 * k;
                    let m = (blocks - b).min(4);
                    let wmask = byte_mask(m * Q4_VALUE_BYTES);
                    let mut lo = [_mm512_setzero_si512(); TILE_ROWS];
                    let mut hi = [_mm512_setzero_si512(); TILE_ROWS];
                    for i in 0..TILE_ROWS {
                        let wv = _mm512_maskz_loadu_epi8(
                            wmask,
                            rp[i].add(2 * blocks + b * Q4_VALUE_BYTES) as *const i8,
                        );
                        lo[i] = _mm512_and_si512(wv, low4);
                        hi[i] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
                    }
                    let spread = _mm512_loadu_si512(SPREAD4[k].as_ptr() as *const _);
                    for j in 0..TILE_TOKENS {
                        let xq = x.qs.as_ptr().add((tok[j] * stride + b) * BLOCK_LEN);
                        let xa = _mm512_maskz_loadu_epi8(byte_mask(m * BLOCK_LEN), xq);
                        let xb = _mm512_maskz_loadu_epi8(
                            byte_mask(m.saturating_sub(2) * BLOCK_LEN),
                            xq.add(2.min(m) * BLOCK_LEN),
                        );
                        let xlo = _mm512_permutex2var_epi64(xa, idx_lo, xb);
                        let xhi = _mm512_permutex2var_epi64(xa, idx_hi, xb);
                        for i in 0..TILE_ROWS {
                            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[i], xlo);
                            let dot = _mm512_dpbusd_epi32(dot, hi[i], xhi);
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

pub(crate) fn matmul_q4_avx2(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let blocks = check_batch(w, cols, rows, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has AVX2, FMA and
    // F16C; `check_batch` proved every range the loads use.
    unsafe { q4_matmul_avx2(w, blocks, rows, x, out) }
}

/// Lane indices that spread the scales of blocks `k` and `k + 1` (of eight)
/// over the two 128-bit halves of a 2-block step.
#[target_feature(enable = "avx2")]
unsafe fn pair_spread(k: usize) -> __m256i {
    let (a, b) = (k as i32, k as i32 + 1);
    _mm256_setr_epi32(a, a, a, a, b, b, b, b)
}

/// The batched product in tiles of `TILE_ROWS` rows × `TILE_TOKENS`
/// tokens: each pair of a row's blocks is unpacked once for the tile's
/// tokens, each token's activations permuted once for its rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_matmul_avx2(w: &[u8], blocks: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    let row_bytes = blocks * Q4_BLOCK_BYTES;
    let low4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let stride = x.block_stride;
    for r0 in (0..rows).step_by(TILE_ROWS) {
        // SAFETY (whole body): rows past the end repeat the last row and
        // tokens past the end repeat the last token (never stored); every
        // load is a whole block (or scale run) with index < blocks of a row
        // or a token (`check_batch`); an odd last block pairs with zeros.
        let rp: [*const u8; TILE_ROWS] =
            core::array::from_fn(|i| w.as_ptr().add((r0 + i).min(rows - 1) * row_bytes));
        for t0 in (0..x.tokens).step_by(TILE_TOKENS) {
            let xp: [*const i8; TILE_TOKENS] = core::array::from_fn(|j| {
                let t = (t0 + j).min(x.tokens - 1);
                x.qs.as_ptr().add(t * stride * BLOCK_LEN)
            });
            let first: [usize; TILE_TOKENS] =
                core::array::from_fn(|j| (t0 + j).min(x.tokens - 1) * stride);
            let mut acc = [[_mm256_setzero_ps(); TILE_TOKENS]; TILE_ROWS];
            let mut g = 0;
            while g < blocks {
                let n = (blocks - g).min(8);
                let dw: [__m256; TILE_ROWS] = core::array::from_fn(|i| f16x8(rp[i].add(2 * g), n));
                let dx: [__m256; TILE_TOKENS] =
                    core::array::from_fn(|j| f32x8(x.scales.as_ptr().add(first[j] + g), n));
                for j in 0..TILE_TOKENS {
                    let sx = f32x8(x.sums.as_ptr().add(first[j] + g), n);
                    for i in 0..TILE_ROWS {
                        // The +8 of the stored nibbles, removed per block.
                        let dw8 = _mm256_mul_ps(dw[i], _mm256_set1_ps(8.0));
                        acc[i][j] = _mm256_fnmadd_ps(dw8, sx, acc[i][j]);
                    }
                }
                let mut k = 0;
                while k < n {
                    let b = g + k;
                    let pair = k + 1 < n;
                    let spread = pair_spread(k);
                    let mut lo = [_mm256_setzero_si256(); TILE_ROWS];
                    let mut hi = [_mm256_setzero_si256(); TILE_ROWS];
                    let mut sw = [_mm256_setzero_ps(); TILE_ROWS];
                    for i in 0..TILE_ROWS {
                        let values = rp[i].add(2 * blocks + b * Q4_VALUE_BYTES);
                        let wa = _mm_loadu_si128(values as *const __m128i);
                        let wb = if pair {
                            _mm_loadu_si128(values.add(Q4_VALUE_BYTES) as *const __m128i)
                        } else {
                            _mm_setzero_si128()
                        };
                        let v = _mm256_set_m128i(wb, wa);
                        lo[i] = _mm256_and_si256(v, low4);
                        hi[i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                        sw[i] = _mm256_permutevar8x32_ps(dw[i], spread);
                    }
                    for j in 0..TILE_TOKENS {
                        let xa = _mm256_loadu_si256(xp[j].add(b * BLOCK_LEN) as *const __m256i);
                        let xb = if pair {
                            _mm256_loadu_si256(xp[j].add((b + 1) * BLOCK_LEN) as *const __m256i)
                        } else {
                            _mm256_setzero_si256()
                        };
                        let xlo = _mm256_permute2x128_si256(xa, xb, 0x20);
                        let xhi = _mm256_permute2x128_si256(xa, xb, 0x31);
                        let sx = _mm256_permutevar8x32_ps(dx[j], spread);
                        for i in 0..TILE_ROWS {
                            let p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo[i], xlo),
                                _mm256_maddubs_epi16(hi[i], xhi),
                            );
                            let d = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                            acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(d, sw[i]), sx, acc[i][j]);
                        }
                    }
                    k += 2;
                }
                g += 8;
            }
            for i in 0..TILE_ROWS.min(rows - r0) {
                for j in 0..TILE_TOKENS.min(x.tokens - t0) {
                    out[(t0 + j) * rows + r0 + i] = hsum8(acc[i][j]);
                }
            }
        }
    }
}
