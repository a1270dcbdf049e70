//! x86-64 kernels: AVX-512 (F, BW, VL, VNNI) with F16C and FMA.
//!
//! int4 rows: the 16 nibble bytes of a block hold elements 0..16 (low
//! nibbles) and 16..32 (high). Four blocks load as one 64-byte vector; the
//! activation halves are permuted to match, and `vpdpbusd` multiplies the
//! unsigned nibbles (stored `q + 8`) with the signed activations. The `+ 8`
//! is removed once per row with the per-block activation sums. int8 rows
//! use `vpdpbusd` on |w| and the activations negated where w < 0. Scales are
//! planar in the row, so 16 of them convert with one `vcvtph2ps`.
//!
//! Every function here is reached only through [`upgrade`], which installs
//! it after checking the CPU's features; tests compare each with `scalar`.

use core::arch::x86_64::*;

use super::{check_float, check_quantized, Activations, BatchActs, Kernels};
use crate::quant::{
    mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES, Q4_BLOCK_BYTES, Q4_VALUE_BYTES,
    Q8_BLOCK_BYTES, Q8_VALUE_BYTES,
};

/// True when the CPU has everything the AVX-512 kernels use.
fn has_avx512_vnni() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("fma")
        } else {
            cfg!(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vl",
                target_feature = "avx512vnni",
                target_feature = "f16c",
                target_feature = "fma"
            ))
        }
    }
}

/// True when the CPU has everything the AVX2 kernels use.
fn has_avx2() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        } else {
            cfg!(all(target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))
        }
    }
}

/// Replaces the entries this CPU can run faster: AVX2 first, then AVX-512
/// VNNI over it where present.
pub fn upgrade(k: Kernels) -> Kernels {
    upgrade_avx512(upgrade_avx2(k))
}

/// The AVX2 + FMA + F16C table (no AVX-512): x86-64 CPUs since 2013.
fn upgrade_avx2(mut k: Kernels) -> Kernels {
    if has_avx2() {
        k.name = "x86-avx2";
        k.matvec_q4 = matvec_q4_avx2;
        k.matvec_q8 = matvec_q8_avx2;
        k.matvec_mxfp4 = matvec_mxfp4_avx2;
        k.matmul_mxfp4 = matmul_mxfp4_avx2;
    }
    k
}

fn upgrade_avx512(mut k: Kernels) -> Kernels {
    if has_avx512_vnni() {
        k.name = "x86-avx512vnni";
        k.matvec_q4 = matvec_q4_avx512;
        k.matvec_q8 = matvec_q8_avx512;
        k.matvec_f16 = matvec_f16_avx512;
        k.matvec_f32 = matvec_f32_avx512;
        k.matmul_q4 = matmul_q4_avx512;
        k.matmul_q8 = matmul_q8_avx512;
    }
    k
}

/// Mask of the first `n` of 64 byte lanes.
#[inline(always)]
fn byte_mask(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// Mask of the first `n` of 16 lanes.
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

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

fn matvec_q4_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `upgrade` only when the CPU has AVX-512 F/BW/VL/
    // VNNI, F16C and FMA; `check` proved the buffer sizes the loads use.
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
        // `check`) or of the activations (32 × blocks bytes, blocks scales
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

fn matvec_q8_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_avx512`.
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

fn matvec_f16_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    // SAFETY: as for `matvec_q4_avx512`.
    unsafe { f16_avx512(w, row_bytes, cols, x.f32s, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
unsafe fn f16_avx512(w: &[u8], row_bytes: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: loads are masked to `cols` elements of this row and of x.
        let row = w.as_ptr().add(r * row_bytes) as *const i16;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < cols {
            let m = lane_mask(cols - i);
            let wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row.add(i)));
            acc = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)), acc);
            i += 16;
        }
        *o = _mm512_reduce_add_ps(acc);
    }
}

fn matvec_f32_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 4);
    // SAFETY: as for `matvec_q4_avx512`.
    unsafe { f32_avx512(w, row_bytes, cols, x.f32s, out) }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn f32_avx512(w: &[u8], row_bytes: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: loads are masked to `cols` elements of this row and of x.
        let row = w.as_ptr().add(r * row_bytes) as *const f32;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < cols {
            let m = lane_mask(cols - i);
            acc = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, row.add(i)),
                _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)),
                acc,
            );
            i += 16;
        }
        *o = _mm512_reduce_add_ps(acc);
    }
}

/// Eight blocks' combined scales `d_w · d_x` and `d_w · sums` from block
/// `g` on (fewer at the row's end: the rest are zero).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales8(
    row: *const u8,
    blocks: usize,
    g: usize,
    x: &Activations<'_>,
) -> (__m256, __m256) {
    let n = (blocks - g).min(8);
    let (dw, dx, sx) = if n == 8 {
        // SAFETY: 8 scales of the row (16 bytes) and 8 activation scales
        // and sums exist from block g on.
        (
            _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * g) as *const __m128i)),
            _mm256_loadu_ps(x.scales.as_ptr().add(g)),
            _mm256_loadu_ps(x.sums.as_ptr().add(g)),
        )
    } else {
        let (mut w, mut d, mut s) = ([0u16; 8], [0.0f32; 8], [0.0f32; 8]);
        for i in 0..n {
            // SAFETY: block g + i < blocks: its scale lies inside the row.
            w[i] = u16::from_le_bytes([*row.add(2 * (g + i)), *row.add(2 * (g + i) + 1)]);
            d[i] = x.scales[g + i];
            s[i] = x.sums[g + i];
        }
        (
            _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr() as *const __m128i)),
            _mm256_loadu_ps(d.as_ptr()),
            _mm256_loadu_ps(s.as_ptr()),
        )
    };
    (_mm256_mul_ps(dw, dx), _mm256_mul_ps(dw, sx))
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2")]
unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

fn matvec_q4_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `upgrade` only when the CPU has AVX2, FMA and
    // F16C; `check` proved the buffer sizes the loads use.
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
                let idx = _mm256_setr_epi32(
                    k as i32,
                    k as i32,
                    k as i32,
                    k as i32,
                    k as i32 + 1,
                    k as i32 + 1,
                    k as i32 + 1,
                    k as i32 + 1,
                );
                let sk = _mm256_permutevar8x32_ps(s, idx);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sk, acc);
                k += 2;
            }
            g += 8;
        }
        *o = hsum8(acc) - 8.0 * hsum8(corr);
    }
}

fn matvec_mxfp4_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_avx2`.
    unsafe { mxfp4_avx2(w, row_bytes, blocks, x, out) }
}

/// MXFP4 rows: each block's nibbles become FP4 values doubled plus 12
/// (0..=24, unsigned for `maddubs`) by one table shuffle, interleaved back
/// into element order; the `+12` comes off once per block as
/// `12 · half_scale · sums[b]`.
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
        *t = (v + 12) as u8;
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
        let mut corr = 0.0f32;
        for b in 0..blocks {
            let d = mxfp4_half_scale(*row.add(b));
            let v = _mm_loadu_si128(values.add(b * Q4_VALUE_BYTES) as *const __m128i);
            let lo = _mm_shuffle_epi8(lut, _mm_and_si128(v, low4));
            let hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), low4));
            // Byte j holds elements 2j (low) and 2j + 1 (high).
            let wv = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
            let xv = _mm256_loadu_si256(xq.add(b * BLOCK_LEN) as *const __m256i);
            let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones);
            acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sum),
                _mm256_set1_ps(d * x.scales[b]),
                acc,
            );
            corr += 12.0 * d * x.sums[b];
        }
        *o = hsum8(acc) - corr;
    }
}

fn matmul_mxfp4_avx2(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    super::matmul_by_tokens(
        matvec_mxfp4_avx2,
        crate::DType::Mxfp4,
        w,
        cols,
        rows,
        x,
        out,
    )
}

fn matvec_q8_avx2(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_avx2`.
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

/// Row and token tile of the batched products: R × T accumulators stay in
/// registers while each weight chunk is unpacked once for T tokens.
const TILE_ROWS: usize = 2;
const TILE_TOKENS: usize = 4;

/// Checks a batched product's shapes; returns the blocks per row.
fn check_batch(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &[f32],
    block_bytes: usize,
) -> usize {
    let blocks = cols.div_ceil(BLOCK_LEN);
    let last = x.tokens.saturating_sub(1);
    assert!(
        x.tokens > 0
            && w.len() >= rows * blocks * block_bytes
            && out.len() >= x.tokens * rows
            && x.block_stride >= blocks
            && x.qs.len() >= (last * x.block_stride + blocks) * BLOCK_LEN
            && x.scales.len() >= last * x.block_stride + blocks
            && x.sums.len() >= last * x.block_stride + blocks,
        "matmul shapes disagree"
    );
    blocks
}

fn matmul_q4_avx512(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    let blocks = check_batch(w, cols, rows, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `upgrade` only on CPUs with the features enabled
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

fn matmul_q8_avx512(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    let blocks = check_batch(w, cols, rows, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `matmul_q4_avx512`.
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
        // SAFETY (whole body): as in `q4_matmul_avx512`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{
        compare_matmul_with_scalar, compare_misaligned_with_scalar, compare_with_scalar,
    };

    #[test]
    fn avx2_kernels_match_scalar() {
        if !has_avx2() {
            let want = std::env::var("MOTE_EXPECT_KERNELS").unwrap_or_default();
            assert!(
                !want.starts_with("x86-"),
                "this CPU was expected to have AVX2"
            );
            std::println!("no AVX2 on this CPU: only the scalar table runs");
            return;
        }
        let k = upgrade_avx2(Kernels::scalar());
        assert_eq!(k.name, "x86-avx2");
        compare_with_scalar(&k);
        compare_misaligned_with_scalar(&k);
        compare_matmul_with_scalar(&k);
    }

    #[test]
    fn avx512_kernels_match_scalar() {
        if !has_avx512_vnni() {
            // CI names the table its CPU must get; elsewhere this CPU simply
            // lacks the features and the scalar table is what runs.
            let want = std::env::var("MOTE_EXPECT_KERNELS").unwrap_or_default();
            assert_ne!(
                want, "x86-avx512vnni",
                "this CPU was expected to have AVX-512 VNNI"
            );
            std::println!("no AVX-512 VNNI on this CPU: only the scalar table runs");
            return;
        }
        assert_eq!(upgrade(Kernels::scalar()).name, "x86-avx512vnni");
        compare_with_scalar(&upgrade(Kernels::scalar()));
        compare_matmul_with_scalar(&upgrade(Kernels::scalar()));
    }
}
