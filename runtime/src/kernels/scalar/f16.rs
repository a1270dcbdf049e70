//! f16 weights: the reference dot with f32 activations, matvec and batched
//! product.
#![deny(unsafe_code)]

use half::f16;

use super::{matmul, matvec};
use crate::kernels::{Activations, BatchActs};

/// Little-endian f16 weights · f32 activations.
pub fn dot_f16(row: &[u8], x: &Activations<'_>) -> f32 {
    let x = x.f32s;
    row.chunks_exact(2)
        .zip(x)
        .map(|(w, &x)| f16::from_bits(u16::from_le_bytes([w[0], w[1]])).to_f32() * x)
        .sum()
}

/// Scalar f16 matvec.
pub fn matvec_f16(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_f16, w, row_bytes, x, out)
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
