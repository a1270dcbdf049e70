//! Rotary position embeddings: the inverse frequencies of a session
//! (Llama 3, YaRN and LongRoPE scaling applied once, at session start),
//! positions as rope sees them, and the rotation of heads in the family's
//! pair layout. Pure functions over the config; no state.

use crate::format::config::{ModelConfig, RopeScaling};
use crate::kernels::scalar;

/// Rope inverse frequencies `θ^(-2i/d)` for a session of `max_context`
/// positions, with Llama 3.1's scaling (as transformers'
/// `_compute_llama3_parameters`), YaRN's (`_compute_yarn_parameters`) or
/// LongRoPE's per-frequency factors applied where the config asks for them;
/// returns the factor rotated queries and keys are scaled by (LongRoPE's
/// mscale, YaRN's attention factor, else 1).
pub(super) fn frequencies(config: &ModelConfig, max_context: u32, inv_freq: &mut [f32]) -> f32 {
    let dim = config.rope_dim() as f32;
    for (i, f) in inv_freq.iter_mut().enumerate() {
        *f = 1.0 / libm::powf(config.rope_theta, (2 * i) as f32 / dim);
    }
    if let RopeScaling::Yarn {
        factor,
        original_max_position,
        beta_fast,
        beta_slow,
        attention_factor,
        truncate,
    } = config.rope_scaling
    {
        // The dimension at which a frequency turns `rotations` times over
        // the original context (f32: no double-precision code on MCUs).
        let correction = |rotations: f32| {
            let turns = original_max_position as f32 / (rotations * 2.0 * core::f32::consts::PI);
            dim * libm::logf(turns) / (2.0 * libm::logf(config.rope_theta))
        };
        let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
        if truncate {
            (low, high) = (libm::floorf(low), libm::ceilf(high));
        }
        let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
        if low == high {
            high += 0.001;
        }
        for (i, f) in inv_freq.iter_mut().enumerate() {
            // 1 keeps the frequency (extrapolation), 0 divides it by `factor`.
            let keep = 1.0 - crate::math::clamp((i as f32 - low) / (high - low), 0.0, 1.0);
            *f = (*f / factor) * (1.0 - keep) + *f * keep;
        }
        return attention_factor;
    }
    if let RopeScaling::LongRope {
        original_max_position,
        short_mscale,
        long_mscale,
    } = config.rope_scaling
    {
        // transformers picks the factors by the current length; a session
        // picks them once, by the context it plans for.
        let long = max_context > original_max_position;
        let (factors, mscale) = match long {
            true => (&config.rope_long_factor, long_mscale),
            false => (&config.rope_short_factor, short_mscale),
        };
        for (f, d) in inv_freq.iter_mut().zip(factors.iter()) {
            *f /= d;
        }
        return mscale;
    }
    if let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position,
    } = config.rope_scaling
    {
        let old = original_max_position as f32;
        let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
        for f in inv_freq.iter_mut() {
            let wavelen = 2.0 * core::f32::consts::PI / *f;
            let scaled = if wavelen > low_wavelen {
                *f / factor
            } else {
                *f
            };
            *f = if wavelen < high_wavelen || wavelen > low_wavelen {
                scaled
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            };
        }
    }
    1.0
}

/// Rotates every `dim`-wide head of `x` to position `p` in the family's
/// pair layout, and scales it by `scale` (1: unchanged).
pub(super) fn rotate(
    c: &ModelConfig,
    x: &mut [f32],
    dim: usize,
    p: f32,
    inv_freq: &[f32],
    scale: f32,
) {
    match c.rope_interleaved {
        true => scalar::rope_interleaved(x, dim, p, inv_freq),
        false => scalar::rope(x, dim, p, inv_freq),
    }
    if scale != 1.0 {
        x.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Position `pos` as rope sees it (divided by a linear scaling factor).
pub(super) fn position(c: &ModelConfig, pos: usize) -> f32 {
    match c.rope_scaling {
        RopeScaling::Linear { factor } => pos as f32 / factor,
        _ => pos as f32,
    }
}
