//! f32 weights: the reference dot with f32 activations, matvec and batched
//! product.
#![deny(unsafe_code)]

use super::{matmul, matvec};
use crate::kernels::{Activations, BatchActs};

/// Little-endian f32 weights · f32 activations.
pub fn dot_f32(row: &[u8], x: &Activations<'_>) -> f32 {
    let x = x.f32s;
    row.chunks_exact(4)
        .zip(x)
        .map(|(w, &x)| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * x)
        .sum()
}

/// Scalar f32 matvec.
pub fn matvec_f32(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_f32, w, row_bytes, x, out)
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
