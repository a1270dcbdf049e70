//! Reference kernels: plain Rust, no `unsafe`, every target. Fast kernels
//! must match these (integer sums exactly, floats within a stated tolerance).
#![deny(unsafe_code)]

use half::f16;

use super::{Activations, BatchActs};
use crate::quant::{
    mxfp4_half_scale, scale_at, split_row, BLOCK_LEN, FP4_TIMES_TWO, Q4_VALUE_BYTES, Q8_VALUE_BYTES,
};

/// int8 weight row · int8 activation blocks.
pub fn dot_q8(row: &[u8], x: &Activations<'_>) -> f32 {
    let blocks = x.scales.len();
    let (scales, values) = split_row(row, blocks);
    let mut acc = 0.0f32;
    for (b, (w, xq)) in values
        .chunks_exact(Q8_VALUE_BYTES)
        .zip(x.qs.chunks_exact(BLOCK_LEN))
        .enumerate()
    {
        let mut sum = 0i32;
        for (&w, &x) in w.iter().zip(xq) {
            sum += (w as i8 as i32) * (x as i32);
        }
        acc += scale_at(scales, b) * x.scales[b] * sum as f32;
    }
    acc
}

/// int4 weight row · int8 activation blocks.
pub fn dot_q4(row: &[u8], x: &Activations<'_>) -> f32 {
    let blocks = x.scales.len();
    let (scales, values) = split_row(row, blocks);
    let mut acc = 0.0f32;
    for (b, (w, xq)) in values
        .chunks_exact(Q4_VALUE_BYTES)
        .zip(x.qs.chunks_exact(BLOCK_LEN))
        .enumerate()
    {
        let mut sum = 0i32;
        for (j, &byte) in w.iter().enumerate() {
            sum += ((byte & 0x0f) as i32 - 8) * xq[j] as i32;
            sum += ((byte >> 4) as i32 - 8) * xq[j + Q4_VALUE_BYTES] as i32;
        }
        acc += scale_at(scales, b) * x.scales[b] * sum as f32;
    }
    acc
}

/// Both FP4 codes of a byte, doubled (low nibble first).
const FP4_PAIRS: [[i8; 2]; 256] = {
    let mut t = [[0i8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [FP4_TIMES_TWO[b & 0x0f], FP4_TIMES_TWO[b >> 4]];
        b += 1;
    }
    t
};

/// MXFP4 weight row · int8 activation blocks: FP4 values doubled are
/// integers, so each block is an integer sum times both scales.
pub fn dot_mxfp4(row: &[u8], x: &Activations<'_>) -> f32 {
    let blocks = x.scales.len();
    let (scales, values) = row.split_at(blocks);
    let mut acc = 0.0f32;
    for (b, (w, xq)) in values
        .chunks_exact(Q4_VALUE_BYTES)
        .zip(x.qs.chunks_exact(BLOCK_LEN))
        .enumerate()
    {
        // Decode the block to i8 first (one table read a byte): the dot
        // then vectorizes like int8's.
        let mut wq = [0i8; BLOCK_LEN];
        for (pair, &byte) in wq.chunks_exact_mut(2).zip(w) {
            pair.copy_from_slice(&FP4_PAIRS[byte as usize]);
        }
        let sum: i32 = wq.iter().zip(xq).map(|(&w, &x)| w as i32 * x as i32).sum();
        acc += mxfp4_half_scale(scales[b]) * x.scales[b] * sum as f32;
    }
    acc
}

/// Little-endian f16 weights · f32 activations.
pub fn dot_f16(row: &[u8], x: &Activations<'_>) -> f32 {
    let x = x.f32s;
    row.chunks_exact(2)
        .zip(x)
        .map(|(w, &x)| f16::from_bits(u16::from_le_bytes([w[0], w[1]])).to_f32() * x)
        .sum()
}

/// Little-endian f32 weights · f32 activations.
pub fn dot_f32(row: &[u8], x: &Activations<'_>) -> f32 {
    let x = x.f32s;
    row.chunks_exact(4)
        .zip(x)
        .map(|(w, &x)| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * x)
        .sum()
}

/// `out[r] = dot(row r of w, x)` for the rows in `w` (each `row_bytes` long).
pub fn matvec(
    dot: fn(&[u8], &Activations<'_>) -> f32,
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
        *o = dot(row, x);
    }
}

/// Scalar int8 matvec.
pub fn matvec_q8(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_q8, w, row_bytes, x, out)
}

/// Scalar int4 matvec.
pub fn matvec_q4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_q4, w, row_bytes, x, out)
}

/// Scalar MXFP4 matvec.
pub fn matvec_mxfp4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_mxfp4, w, row_bytes, x, out)
}

/// Scalar f16 matvec.
pub fn matvec_f16(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_f16, w, row_bytes, x, out)
}

/// Scalar f32 matvec.
pub fn matvec_f32(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_f32, w, row_bytes, x, out)
}

/// Batched product: each row is read once for all tokens (it stays in L1).
pub fn matmul(
    dot: fn(&[u8], &Activations<'_>) -> f32,
    row_bytes: usize,
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    for (r, row) in w.chunks_exact(row_bytes).take(rows).enumerate() {
        for t in 0..x.tokens {
            out[t * rows + r] = dot(row, &x.token(t, cols));
        }
    }
}

/// Scalar int8 batched product.
pub fn matmul_q8(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul(
        dot_q8,
        crate::DType::Q8.row_bytes(cols),
        w,
        cols,
        rows,
        x,
        out,
    )
}

/// Scalar int4 batched product.
pub fn matmul_q4(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul(
        dot_q4,
        crate::DType::Q4.row_bytes(cols),
        w,
        cols,
        rows,
        x,
        out,
    )
}

/// Scalar MXFP4 batched product.
pub fn matmul_mxfp4(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul(
        dot_mxfp4,
        crate::DType::Mxfp4.row_bytes(cols),
        w,
        cols,
        rows,
        x,
        out,
    )
}

/// Scalar f16 batched product.
pub fn matmul_f16(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul(
        dot_f16,
        crate::DType::F16.row_bytes(cols),
        w,
        cols,
        rows,
        x,
        out,
    )
}

/// Scalar f32 batched product.
pub fn matmul_f32(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul(
        dot_f32,
        crate::DType::F32.row_bytes(cols),
        w,
        cols,
        rows,
        x,
        out,
    )
}

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
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
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
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ss + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * inv * f32_at(weight, i);
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `gate = silu(gate) * up`, the SwiGLU activation.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + libm::expf(-*g)) * u;
    }
}

/// Rotates each head of `x` by position angles, Hugging Face half-rotation
/// layout: element `i` pairs with `i + head_dim / 2`. `inv_freq` has
/// `head_dim / 2` entries; `pos` is already scaled.
pub fn rope(x: &mut [f32], head_dim: usize, pos: f32, inv_freq: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (sin, cos) = libm::sincosf(pos * f);
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

/// Rotates each head of `x` by position angles, interleaved layout
/// (DeepSeek): element `2i` pairs with `2i + 1`.
pub fn rope_interleaved(x: &mut [f32], head_dim: usize, pos: f32, inv_freq: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &f) in head.chunks_exact_mut(2).zip(inv_freq) {
            let (sin, cos) = libm::sincosf(pos * f);
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = b * cos + a * sin;
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
    fn at(&self, i: usize) -> usize {
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
    let d = q.len();
    for (t, s) in scores.iter_mut().enumerate() {
        let at = cache.at(t);
        *s = dot(q, &cache.k[at..at + d]) * scale;
    }
    match sink {
        None => softmax(scores),
        Some(sink) => {
            let max = scores.iter().fold(sink, |m, &s| m.max(s));
            let mut sum = libm::expf(sink - max);
            for s in scores.iter_mut() {
                *s = libm::expf(*s - max);
                sum += *s;
            }
            scores.iter_mut().for_each(|s| *s /= sum);
        }
    }
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        let at = cache.at(t);
        axpy(out, p, &cache.v[at..at + out.len()]);
    }
}

/// `x` limited to `lo..=hi` (NaN stays NaN), as `f32::clamp` but without
/// its `lo <= hi` assertion, whose float-formatting panic message costs
/// firmware several KiB of `.text`.
#[inline]
pub fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `y += a * x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{
        dequantize_row_q4, dequantize_row_q8, quantize_activations, quantize_row_q4,
        quantize_row_q8, Q4_BLOCK_BYTES, Q8_BLOCK_BYTES,
    };

    #[test]
    fn int_dots_equal_the_float_dot_of_dequantized_values() {
        let w: [f32; 96] = core::array::from_fn(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1);
        let x: [f32; 96] = core::array::from_fn(|i| ((i * 13 % 17) as f32 - 8.0) * 0.3);
        let (mut qs, mut sc, mut sums) = ([0i8; 96], [0.0f32; 3], [0.0f32; 3]);
        quantize_activations(&x, &mut qs, &mut sc, &mut sums);
        let acts = Activations {
            f32s: &x,
            qs: &qs,
            scales: &sc,
            sums: &sums,
        };
        let reference = |deq: &[f32]| -> f32 {
            deq.iter()
                .enumerate()
                .map(|(i, w)| w * qs[i] as f32 * sc[i / 32])
                .sum()
        };
        let mut b8 = [0u8; 3 * Q8_BLOCK_BYTES];
        quantize_row_q8(&w, &mut b8);
        let mut d8 = [0.0f32; 96];
        dequantize_row_q8(&b8, &mut d8);
        let want = reference(&d8);
        assert!((dot_q8(&b8, &acts) - want).abs() < 1e-3 * want.abs().max(1.0));
        let mut b4 = [0u8; 3 * Q4_BLOCK_BYTES];
        quantize_row_q4(&w, &mut b4);
        let mut d4 = [0.0f32; 96];
        dequantize_row_q4(&b4, &mut d4);
        let want = reference(&d4);
        assert!((dot_q4(&b4, &acts) - want).abs() < 1e-3 * want.abs().max(1.0));
        let mut bf = [0u8; 3 * crate::quant::MXFP4_BLOCK_BYTES];
        crate::quant::quantize_row_mxfp4(&w, &mut bf);
        let mut df = [0.0f32; 96];
        crate::quant::dequantize_row_mxfp4(&bf, &mut df);
        let want = reference(&df);
        assert!((dot_mxfp4(&bf, &acts) - want).abs() < 1e-3 * want.abs().max(1.0));
    }

    #[test]
    fn mxfp4_decodes_as_the_ocp_table_and_quantizes_to_its_nearest_values() {
        // One block, scale byte 126 (2^-1): codes 0..16 in order, low nibble first.
        let mut row = [0u8; crate::quant::MXFP4_BLOCK_BYTES];
        row[0] = 126;
        for j in 0..16 {
            row[1 + j] = ((2 * j) % 16) as u8 | ((((2 * j + 1) % 16) as u8) << 4);
        }
        let mut out = [0.0f32; 32];
        crate::quant::dequantize_row_mxfp4(&row, &mut out);
        let table = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        for (i, &v) in out.iter().enumerate() {
            let code = i % 16;
            let magnitude = table[code % 8] * 0.5;
            let want = if code >= 8 { -magnitude } else { magnitude };
            assert_eq!(v, want, "element {i}");
        }
        // Values on the grid survive a round trip; the scale is the
        // smallest with max|x| <= 6·2^e.
        let mut again = [0u8; crate::quant::MXFP4_BLOCK_BYTES];
        crate::quant::quantize_row_mxfp4(&out, &mut again);
        assert_eq!(again[0], 126);
        let mut back = [0.0f32; 32];
        crate::quant::dequantize_row_mxfp4(&again, &mut back);
        assert_eq!(back, out);
        // Subnormal scales (bytes 0 and 1) decode as exact powers of two.
        assert_eq!(crate::quant::mxfp4_half_scale(0), libm::ldexpf(1.0, -128));
        assert_eq!(crate::quant::mxfp4_half_scale(1), libm::ldexpf(1.0, -127));
        assert_eq!(crate::quant::mxfp4_half_scale(127), 0.5);
    }

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
}
