//! The f32 work around the products: norms, softmax, activations, rotary
//! embeddings, dot and axpy.
#![deny(unsafe_code)]

/// Reads element `i` of a little-endian f32 tensor.
#[inline]
pub fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

/// `out = x / rms(x) * weight`, with `weight` as little-endian f32 bytes.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let ss = dot(x, x) / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ss + eps);
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = v * inv * f32_at(weight, i);
    }
}

/// `out = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias` (LayerNorm,
/// biased variance as torch computes it).
pub fn layernorm(out: &mut [f32], x: &[f32], weight: &[u8], bias: &[u8], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / libm::sqrtf(var + eps);
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = (v - mean) * inv * f32_at(weight, i) + f32_at(bias, i);
    }
}

/// `x = x / rms(x) * weight` in place.
pub fn rmsnorm_in_place(x: &mut [f32], weight: &[u8], eps: f32) {
    let ss = dot(x, x) / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ss + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * inv * f32_at(weight, i);
    }
}

/// `e^x` within 2 ulp of the correctly rounded value for normal results,
/// from multiplies, adds and bit moves only, so that a loop of it over a
/// slice vectorizes on every target (one `libm::expf` call an element does
/// not). Results below 2^-126 flush to zero, above `f32::MAX` are
/// infinity; NaN stays NaN. (Cephes' `expf` polynomial on
/// `[-ln 2 / 2, ln 2 / 2]` after `x = n · ln 2 + r`.)
#[inline]
pub fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LO: f32 = -87.336_55; // ln 2^-126
    const HI: f32 = 88.722_84; // ln f32::MAX
    let xc = crate::math::clamp(x, LO, HI);
    let t = xc * core::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // 2^n as two factors of at most 2^64 each (n is -126..=128).
    let n = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    let half = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    let y = e * pow2(half) * pow2(n - half);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    softmax_with(exp_shifted, x)
}

/// [`softmax`] with `exp_shifted` of an ISA whose vector code the compiler
/// cannot emit by itself (RVV).
#[inline(always)]
pub(crate) fn softmax_with(exp_shifted: impl Fn(&mut [f32], f32) -> f32, x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let inv = 1.0 / exp_shifted(x, max);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `x[i] = exp(x[i] − max)`; returns their sum.
pub fn exp_shifted(x: &mut [f32], max: f32) -> f32 {
    x.iter_mut().for_each(|v| *v = exp(*v - max));
    x.iter().sum()
}

/// `gate = silu(gate) * up`, the SwiGLU activation.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// Rotates each head of `x` by position angles, Hugging Face half-rotation
/// layout: element `i` pairs with `i + head_dim / 2`. `inv_freq` has
/// `head_dim / 2` entries; `pos` is already scaled.
pub fn rope(x: &mut [f32], head_dim: usize, pos: f32, inv_freq: &[f32]) {
    let half = head_dim / 2;
    // One sin/cos per frequency for all heads (libm's sincosf costs about
    // as much as rotating a whole head), a stack chunk of them at a time so
    // that the rotation of each head is a plain loop that vectorizes.
    const CHUNK: usize = 64;
    for (c, freqs) in inv_freq.chunks(CHUNK).enumerate() {
        let (mut sin, mut cos) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
        for (i, &f) in freqs.iter().enumerate() {
            (sin[i], cos[i]) = libm::sincosf(pos * f);
        }
        let (sin, cos) = (&sin[..freqs.len()], &cos[..freqs.len()]);
        let start = c * CHUNK;
        for head in x.chunks_exact_mut(head_dim) {
            let (first, second) = head.split_at_mut(half);
            let first = &mut first[start..start + freqs.len()];
            let second = &mut second[start..start + freqs.len()];
            for (((a, b), &s), &k) in first.iter_mut().zip(second.iter_mut()).zip(sin).zip(cos) {
                let (x, y) = (*a, *b);
                *a = x * k - y * s;
                *b = y * k + x * s;
            }
        }
    }
}

/// Rotates each head of `x` by position angles, interleaved layout
/// (DeepSeek): element `2i` pairs with `2i + 1`.
pub fn rope_interleaved(x: &mut [f32], head_dim: usize, pos: f32, inv_freq: &[f32]) {
    for (i, &f) in inv_freq.iter().enumerate().take(head_dim / 2) {
        let (sin, cos) = libm::sincosf(pos * f);
        for head in x.chunks_exact_mut(head_dim) {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos - b * sin;
            head[2 * i + 1] = b * cos + a * sin;
        }
    }
}

/// f32 dot product with 16 running sums, so it vectorizes on every target.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let mut x = [1000.0f32, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut x, 4, 0.0, &[1.0, 0.01]);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }

    /// Within 2 ulp of `libm::expf` (correctly rounded to within 1 ulp)
    /// wherever the result is a normal float; zero below, infinity above,
    /// NaN for NaN; exact at 0.
    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f32;
        let mut x = -90.0f32;
        while x < 90.0 {
            let (got, want) = (exp(x), libm::expf(x));
            if want >= f32::MIN_POSITIVE && want.is_finite() {
                let ulp = f32::from_bits(want.to_bits() + 1) - want;
                worst = worst.max((got - want).abs() / ulp);
            } else if want.is_infinite() {
                assert_eq!(got, f32::INFINITY, "{x}");
            } else {
                assert!(got <= f32::MIN_POSITIVE, "{x}: {got}");
            }
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }
}
