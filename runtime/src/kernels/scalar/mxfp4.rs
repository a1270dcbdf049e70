//! MXFP4 weights: the reference dot with int8 activation blocks, matvec and
//! batched product.
#![deny(unsafe_code)]

use super::{matmul, matvec};
use crate::kernels::{Activations, BatchActs};
use crate::quant::{mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, Q4_VALUE_BYTES};

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

/// Scalar MXFP4 matvec.
pub fn matvec_mxfp4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec(dot_mxfp4, w, row_bytes, x, out)
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
