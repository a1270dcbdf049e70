//! One attention head over a ring of cached keys and values.
#![deny(unsafe_code)]

use super::{axpy, dot, exp, exp_shifted, softmax_with};

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

/// One attention head over `scores.len()` cached positions: `scores[t] =
/// q·k_t · scale`, softmax, `out = Σ scores[t] v_t`; keys are as wide as
/// `q`, values as `out`. A `sink` logit (gpt-oss) joins the softmax's
/// denominator without a value.
pub fn attend(
    q: &[f32],
    cache: CacheView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        |q, cache, scale, scores| scores_by(dot, q, cache, scale, scores),
        exp_shifted,
        |scores, cache, out| values_by(axpy, scores, cache, out),
        q,
        cache,
        scale,
        sink,
        scores,
        out,
    )
}

/// [`attend`] with an ISA's three steps: the scores (`scores[t] = q·k_t ·
/// scale`), `exp_shifted` for the softmax, and the values (`out = Σ
/// scores[t] v_t`). The softmax and its sink stay here, in one place; an
/// ISA whose vector code the compiler cannot emit by itself (RVV) or that
/// keeps a head in registers (NEON) supplies the rest.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_with(
    scores_of: impl Fn(&[f32], CacheView<'_>, f32, &mut [f32]),
    exp_shifted: impl Fn(&mut [f32], f32) -> f32,
    values_of: impl Fn(&[f32], CacheView<'_>, &mut [f32]),
    q: &[f32],
    cache: CacheView<'_>,
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
