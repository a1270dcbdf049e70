//! One attention head over a ring of cached keys and values, stored as
//! f32, f16 or int8 blocks (see [`crate::kv_cache`]).
#![deny(unsafe_code)]

use super::{axpy, dot, exp, exp_shifted, softmax_with};
use crate::kv_cache::KV_BLOCK;

/// One head's cached keys and values: a ring of `slots` positions
/// `stride` floats apart (slot `s` at `s * stride`), the visible ones
/// starting at slot `first` and wrapping past the last slot.
#[derive(Debug, Clone, Copy)]
pub struct CacheView<'c> {
    /// Keys, from this head's first float in slot 0.
    pub k: &'c [f32],
    /// Values, likewise.
    pub v: &'c [f32],
    /// Floats between consecutive slots.
    pub stride: usize,
    /// Slots in the ring.
    pub slots: usize,
    /// Slot of the first visible position (`< slots`).
    pub first: usize,
}

impl CacheView<'_> {
    /// Offset of visible position `i` (`i < slots`).
    #[inline]
    pub(crate) fn at(&self, i: usize) -> usize {
        let s = self.first + i;
        (if s >= self.slots { s - self.slots } else { s }) * self.stride
    }
}

/// One head's cached numbers in the cache's type, from the head's first
/// number (and, for int8, its first block's scale) in slot 0.
#[derive(Debug, Clone, Copy)]
pub enum KvRows<'c> {
    /// f32 numbers.
    F32(&'c [f32]),
    /// f16 numbers (their bits).
    F16(&'c [u16]),
    /// int8 numbers; a row's numbers `32j..32j + 32` share f16 scale `j`.
    Q8 {
        /// The numbers.
        qs: &'c [i8],
        /// The blocks' scales (f16 bits).
        scales: &'c [u16],
    },
}

/// One head's cached keys and values in any cache type: a ring of `slots`
/// positions, number `i` of slot `s` at `s * stride + i`, its int8 scale
/// at `s * scale_stride + i / 32`.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'c> {
    /// Keys.
    pub k: KvRows<'c>,
    /// Values.
    pub v: KvRows<'c>,
    /// Numbers between consecutive slots.
    pub stride: usize,
    /// int8 blocks between consecutive slots (unused by the float types).
    pub scale_stride: usize,
    /// Slots in the ring.
    pub slots: usize,
    /// Slot of the first visible position (`< slots`).
    pub first: usize,
}

impl<'c> KvView<'c> {
    /// The view of an f32 cache, which the ISAs' fast paths take.
    pub fn f32(&self) -> Option<CacheView<'c>> {
        match (self.k, self.v) {
            (KvRows::F32(k), KvRows::F32(v)) => Some(CacheView {
                k,
                v,
                stride: self.stride,
                slots: self.slots,
                first: self.first,
            }),
            _ => None,
        }
    }

    /// Slot of visible position `i` (`i < slots`).
    #[inline]
    pub(crate) fn slot(&self, i: usize) -> usize {
        let s = self.first + i;
        if s >= self.slots {
            s - self.slots
        } else {
            s
        }
    }
}

/// f16 bits as f32, exactly (subnormals, infinities and NaNs included),
/// without branches so that loops of it vectorize: the magnitude's bits
/// moved into f32's fields and scaled by 2^112 (the exponent bias
/// difference), then all-ones exponents for infinity and NaN.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let magnitude = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    let special = if h & 0x7c00 == 0x7c00 { 0x7f80_0000 } else { 0 };
    f32::from_bits(magnitude.to_bits() | special | (h & 0x8000) << 16)
}

/// One attention head over `scores.len()` cached positions: `scores[t] =
/// q·k_t · scale`, softmax, `out = Σ scores[t] v_t`; keys are as wide as
/// `q`, values as `out`. A `sink` logit (gpt-oss) joins the softmax's
/// denominator without a value.
pub fn attend(
    q: &[f32],
    cache: KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    match cache.f32() {
        Some(cache) => attend_with(
            |q, cache, scale, scores| scores_by(dot, q, cache, scale, scores),
            exp_shifted,
            |scores, cache, out| values_by(axpy, scores, cache, out),
            q,
            cache,
            scale,
            sink,
            scores,
            out,
        ),
        None => attend_stored(dot, axpy, exp_shifted, q, cache, scale, sink, scores, out),
    }
}

/// [`attend`] over f16 or int8 rows with an ISA's `dot`, `axpy` and
/// `exp_shifted`: each row is converted to f32 a block of 32 numbers at a
/// time on the stack as it is read.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_stored(
    dot: impl Fn(&[f32], &[f32]) -> f32,
    axpy: impl Fn(&mut [f32], f32, &[f32]),
    exp_shifted: impl Fn(&mut [f32], f32) -> f32,
    q: &[f32],
    cache: KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        |q, cache: KvView<'_>, scale, scores| {
            for (t, s) in scores.iter_mut().enumerate() {
                let slot = cache.slot(t);
                let mut sum = 0.0;
                blocks_of(cache.k, cache, slot, q.len(), |i, x, d| {
                    sum += d * dot(&q[i..i + x.len()], x)
                });
                *s = sum * scale;
            }
        },
        exp_shifted,
        |scores, cache: KvView<'_>, out| {
            out.fill(0.0);
            let width = out.len();
            for (t, &p) in scores.iter().enumerate() {
                blocks_of(cache.v, cache, cache.slot(t), width, |i, x, d| {
                    axpy(&mut out[i..i + x.len()], p * d, x)
                });
            }
        },
        q,
        cache,
        scale,
        sink,
        scores,
        out,
    )
}

/// Calls `each(i, numbers, scale)` for the f32 values of numbers `i..i +
/// 32` (fewer at the end) of slot `slot`'s first `width` numbers of
/// `rows`, to be multiplied by `scale` (1 for the float types).
#[inline(always)]
fn blocks_of(
    rows: KvRows<'_>,
    view: KvView<'_>,
    slot: usize,
    width: usize,
    mut each: impl FnMut(usize, &[f32], f32),
) {
    let at = slot * view.stride;
    let mut buf = [0.0f32; KV_BLOCK];
    for i in (0..width).step_by(KV_BLOCK) {
        let n = KV_BLOCK.min(width - i);
        let x = &mut buf[..n];
        match rows {
            KvRows::F32(c) => each(i, &c[at + i..at + i + n], 1.0),
            KvRows::F16(c) => {
                x.iter_mut()
                    .zip(&c[at + i..at + i + n])
                    .for_each(|(x, &h)| *x = f16_to_f32(h));
                each(i, x, 1.0)
            }
            KvRows::Q8 { qs, scales } => {
                x.iter_mut()
                    .zip(&qs[at + i..at + i + n])
                    .for_each(|(x, &q)| *x = q as f32);
                let d = f16_to_f32(scales[slot * view.scale_stride + i / KV_BLOCK]);
                each(i, x, d)
            }
        }
    }
}

/// [`attend`] with an ISA's three steps: the scores (`scores[t] = q·k_t ·
/// scale`), `exp_shifted` for the softmax, and the values (`out = Σ
/// scores[t] v_t`). The softmax and its sink stay here, in one place; an
/// ISA whose vector code the compiler cannot emit by itself (RVV) or that
/// keeps a head in registers (NEON) supplies the rest.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_with<View: Copy>(
    scores_of: impl Fn(&[f32], View, f32, &mut [f32]),
    exp_shifted: impl Fn(&mut [f32], f32) -> f32,
    values_of: impl Fn(&[f32], View, &mut [f32]),
    q: &[f32],
    cache: View,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    scores_of(q, cache, scale, scores);
    match sink {
        None => softmax_with(exp_shifted, scores),
        Some(sink) => {
            let max = scores.iter().fold(sink, |m, &s| m.max(s));
            let sum = exp(sink - max) + exp_shifted(scores, max);
            scores.iter_mut().for_each(|s| *s /= sum);
        }
    }
    values_of(scores, cache, out);
}

/// `scores[t] = dot(q, k_t) · scale` for every visible position.
#[inline(always)]
pub(crate) fn scores_by(
    dot: impl Fn(&[f32], &[f32]) -> f32,
    q: &[f32],
    cache: CacheView<'_>,
    scale: f32,
    scores: &mut [f32],
) {
    let d = q.len();
    for (t, s) in scores.iter_mut().enumerate() {
        let at = cache.at(t);
        *s = dot(q, &cache.k[at..at + d]) * scale;
    }
}

/// `out = Σ scores[t] v_t` with `axpy` (`y += a·x`).
#[inline(always)]
pub(crate) fn values_by(
    axpy: impl Fn(&mut [f32], f32, &[f32]),
    scores: &[f32],
    cache: CacheView<'_>,
    out: &mut [f32],
) {
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        let at = cache.at(t);
        axpy(out, p, &cache.v[at..at + out.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let (got, want) = (f16_to_f32(h), f16::from_bits(h).to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got} vs {want}"
            );
        }
    }
}
