//! int4 weights: the reference dot with int8 activation blocks, matvec and
//! batched product.
#![deny(unsafe_code)]

use super::{matmul, matvec};
use crate::kernels::{Activations, BatchActs};
use crate::quant::{scale_at, split_row, BLOCK_LEN, Q4_VALUE_BYTES};

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

/// Scalar int4 matvec.
pub fn matvec_q4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_q4, w, row_bytes, x, out)
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
