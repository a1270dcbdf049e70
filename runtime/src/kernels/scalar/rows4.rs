//! int4 and int8 matrices in the rows4 layout (four rows' blocks side by
//! side, `quant::rows4`): the reference matvec and batched product. Per row
//! the integer block sums and the float order are those of `dot_q4` /
//! `dot_q8`, so the results equal the planar kernels' bit for bit.
#![deny(unsafe_code)]

use super::{dot_q4, dot_q8, matvec};
use crate::format::tensor::ROWS4;
use crate::kernels::{matmul_by_tokens, Activations, BatchActs};
use crate::quant::{rows4_block_bytes, rows4_value_at, scale_at, BLOCK_LEN, Q4_VALUE_BYTES};
use crate::DType;

/// `q` of row `r`, element `i` of an int4 rows4 block's values.
fn q4_at(values: &[u8], r: usize, i: usize) -> i32 {
    let byte = values[rows4_value_at(r, i % Q4_VALUE_BYTES)];
    let nibble = if i < Q4_VALUE_BYTES {
        byte << 4
    } else {
        byte & 0xf0
    };
    (nibble as i8 >> 4) as i32
}

/// `q` of row `r`, element `i` of an int8 rows4 block's values.
fn q8_at(values: &[u8], r: usize, i: usize) -> i32 {
    values[rows4_value_at(r, i)] as i8 as i32
}

/// `out[r] = row r · x` for rows4 rows of `dtype` (`value` reads one
/// element, `dot` is the planar reference for the rows after the groups).
fn matvec_rows4(
    dtype: DType,
    value: fn(&[u8], usize, usize) -> i32,
    dot: fn(&[u8], &Activations<'_>) -> f32,
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let groups = out.len() / ROWS4;
    let group_bytes = ROWS4 * row_bytes;
    let block_bytes = rows4_block_bytes(dtype);
    let (grouped, rest) = out.split_at_mut(groups * ROWS4);
    for (outs, group) in grouped
        .chunks_exact_mut(ROWS4)
        .zip(w.chunks_exact(group_bytes))
    {
        for (r, o) in outs.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (b, (block, xq)) in group
                .chunks_exact(block_bytes)
                .zip(x.qs.chunks_exact(BLOCK_LEN))
                .take(x.scales.len())
                .enumerate()
            {
                let (scales, values) = block.split_at(2 * ROWS4);
                let sum: i32 = (0..BLOCK_LEN)
                    .map(|i| value(values, r, i) * xq[i] as i32)
                    .sum();
                acc += scale_at(scales, r) * x.scales[b] * sum as f32;
            }
            *o = acc;
        }
    }
    matvec(dot, &w[groups * group_bytes..], row_bytes, x, rest);
}

/// Scalar int4 rows4 matvec.
pub fn matvec_q4_rows4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec_rows4(DType::Q4, q4_at, dot_q4, w, row_bytes, x, out)
}

/// Scalar int8 rows4 matvec.
pub fn matvec_q8_rows4(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    matvec_rows4(DType::Q8, q8_at, dot_q8, w, row_bytes, x, out)
}

/// Scalar int4 rows4 batched product: the matvec once per token.
pub fn matmul_q4_rows4(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul_by_tokens(matvec_q4_rows4, DType::Q4, w, cols, rows, x, out)
}

/// Scalar int8 rows4 batched product: the matvec once per token.
pub fn matmul_q8_rows4(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    matmul_by_tokens(matvec_q8_rows4, DType::Q8, w, cols, rows, x, out)
}
