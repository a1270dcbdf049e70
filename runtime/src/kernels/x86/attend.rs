//! One attention head over the KV cache with AVX2, FMA and F16C, for every
//! cache type: a row's numbers load eight at a time as f32 lanes (f32
//! directly, f16 through `vcvtph2ps`, int8 sign-extended and multiplied by
//! its block's scale), so nothing is converted into a buffer first. The
//! softmax is `scalar::attend_with`'s.

use core::arch::x86_64::*;

use super::{f16x8, f32x8, hsum8};
use crate::kernels::scalar::{self, f16_to_f32, KvRows, KvView};
use crate::kv_cache::KV_BLOCK;

/// [`scalar::attend`] with AVX2 scores and values.
pub(crate) fn attend_avx2(
    q: &[f32],
    cache: KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    assert!(
        fits(cache.k, &cache, q.len()) && fits(cache.v, &cache, out.len()),
        "attention cache view shorter than its slots"
    );
    scalar::attend_with(
        // SAFETY: installed after `has_avx2` (AVX2, FMA, F16C); every row
        // read lies inside the views (`fits`, above).
        |q, c, scale, s| unsafe { scores_avx2(q, c, scale, s) },
        scalar::exp_shifted,
        // SAFETY: as above.
        |s, c, o| unsafe { values_avx2(s, c, o) },
        q,
        cache,
        scale,
        sink,
        scores,
        out,
    )
}

/// True when every slot's first `width` numbers (and their int8 scales)
/// lie inside `rows`.
fn fits(rows: KvRows<'_>, c: &KvView<'_>, width: usize) -> bool {
    let Some(last) = c.slots.checked_sub(1) else {
        return width == 0;
    };
    let numbers = last * c.stride + width;
    match rows {
        KvRows::F32(r) => numbers <= r.len(),
        KvRows::F16(r) => numbers <= r.len(),
        KvRows::Q8 { qs, scales } => {
            numbers <= qs.len() && last * c.scale_stride + width.div_ceil(KV_BLOCK) <= scales.len()
        }
    }
}

/// Numbers `i..i + n` (`n ≤ 8`) of the row at number `at` (its first
/// int8 scale at `block_at`) as f32 lanes, zeros after them.
///
/// Safety: the numbers (and scale) are inside `rows`; AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8(rows: KvRows<'_>, at: usize, block_at: usize, i: usize, n: usize) -> __m256 {
    // SAFETY: the caller's contract covers numbers at + i .. at + i + n.
    unsafe {
        match rows {
            KvRows::F32(r) => f32x8(r.as_ptr().add(at + i), n),
            KvRows::F16(r) => f16x8(r.as_ptr().add(at + i) as *const u8, n),
            KvRows::Q8 { qs, scales } => {
                let p = qs.as_ptr().add(at + i);
                let bytes = if n == 8 {
                    _mm_loadl_epi64(p as *const __m128i)
                } else {
                    let mut b = [0i8; 16];
                    core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n);
                    _mm_loadu_si128(b.as_ptr() as *const __m128i)
                };
                let d = f16_to_f32(*scales.get_unchecked(block_at + i / KV_BLOCK));
                _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)),
                    _mm256_set1_ps(d),
                )
            }
        }
    }
}

/// `scores[t] = q·k_t · scale` for every visible position.
///
/// Safety: AVX2, FMA and F16C; `fits(c.k, c, q.len())`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_avx2(q: &[f32], c: KvView<'_>, scale: f32, scores: &mut [f32]) {
    let d = q.len();
    for (t, s) in scores.iter_mut().enumerate() {
        let slot = c.slot(t);
        let (at, block_at) = (slot * c.stride, slot * c.scale_stride);
        let mut acc = _mm256_setzero_ps();
        for i in (0..d).step_by(8) {
            let n = (d - i).min(8);
            // SAFETY: q holds d floats; the row's (the caller's contract).
            acc = unsafe {
                _mm256_fmadd_ps(
                    f32x8(q.as_ptr().add(i), n),
                    load8(c.k, at, block_at, i, n),
                    acc,
                )
            };
        }
        // SAFETY: register-only AVX.
        *s = unsafe { hsum8(acc) } * scale;
    }
}

/// `out = Σ scores[t] v_t`, eight columns at a time in one register.
///
/// Safety: AVX2, FMA and F16C; `fits(c.v, c, out.len())`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values_avx2(scores: &[f32], c: KvView<'_>, out: &mut [f32]) {
    let d = out.len();
    for i in (0..d).step_by(8) {
        let n = (d - i).min(8);
        let mut acc = _mm256_setzero_ps();
        for (t, &p) in scores.iter().enumerate() {
            let slot = c.slot(t);
            // SAFETY: the row's numbers (the caller's contract).
            let v = unsafe { load8(c.v, slot * c.stride, slot * c.scale_stride, i, n) };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(p), v, acc);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        out[i..i + n].copy_from_slice(&lanes[..n]);
    }
}
