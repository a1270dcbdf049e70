//! Reference kernels: plain Rust, no `unsafe`, every target. Fast kernels
//! must match these (integer sums exactly, floats within a stated tolerance).
//! One file per weight format (dot, matvec and batched product; `rows4`
//! for the int4/int8 rows4 layout), plus the
//! f32 work around the products (`ops`, `attend`).
#![deny(unsafe_code)]

mod attend;
mod f16;
mod f32;
mod mxfp4;
mod ops;
mod q4;
mod q8;
mod rows4;

#[cfg(any(
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "x86_64"
))]
pub(crate) use attend::attend_with;
pub use attend::{attend, f16_to_f32, CacheView, KvRows, KvView};
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) use attend::{attend_stored, scores_by, values_by};
pub use f16::{dot_f16, matmul_f16, matvec_f16};
pub use f32::{dot_f32, matmul_f32, matvec_f32};
pub use mxfp4::{dot_mxfp4, matmul_mxfp4, matvec_mxfp4};
use ops::softmax_with;
pub use ops::{
    axpy, dot, exp, exp_shifted, f32_at, layernorm, rmsnorm, rmsnorm_in_place, rope,
    rope_interleaved, silu_mul, softmax,
};
pub use q4::{dot_q4, matmul_q4, matvec_q4};
pub use q8::{dot_q8, matmul_q8, matvec_q8};
pub use rows4::{matmul_q4_rows4, matmul_q8_rows4, matvec_q4_rows4, matvec_q8_rows4};

use super::{Activations, BatchActs};

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
}
