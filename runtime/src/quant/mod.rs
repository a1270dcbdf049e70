//! The numbers: block-quantized weight formats and how f32 values become them.
//!
//! Weights are quantized row by row in blocks of [`BLOCK_LEN`] consecutive
//! values; a row whose length is not a multiple of the block is padded with
//! zeros in its last block. int8 and int4 are symmetric with one f16 scale a
//! block (MXFP4: one E8M0 scale a block, `mxfp4.rs`). A row stores all its scales first, then all its blocks' values
//! (planar: SIMD kernels load 16 scales with one instruction):
//!
//! ```text
//! row = [d_0 .. d_{n-1}: n × f16 LE][values of block 0][values of block 1] ...
//! ```
//!
//! - int8 (`Q8`, 2 + 32 bytes a block): `d = max|x| / 127`, `q = round(x / d)`
//!   in −127..=127, one i8 each.
//! - int4 (`Q4`, 2 + 16 bytes a block): `d = m / −8` where `m` is the value of
//!   largest magnitude (sign kept), `q = round(x / d)` clamped to −8..=7,
//!   stored as `q + 8`; byte `j` of a block holds element `j` in its low
//!   nibble and element `j + 16` in its high nibble.
//!
//! `round` is half away from zero, and `x / d` divides by the f16-rounded
//! scale, so dequantizing gives exactly `f16(d) * q`. Activations are
//! quantized to int8 blocks with an f32 scale ([`quantize_activations`]) so
//! that dot products run on integers.
//!
//! One file per block format (`q8`, `q4`, `mxfp4`, `float` rows), one for
//! the activations' blocks and one for the rows4 byte order (`rows4`); this module holds what they share and the
//! dtype dispatchers, and re-exports their items. Formats are data: this
//! module never imports `kernels` (kernels read formats, never the reverse).

mod activations;
mod float;
mod mxfp4;
mod q4;
mod q8;
mod rows4;

pub use activations::quantize_activations;
pub use float::{encode_row_f32, quantize_row_f16};
pub use mxfp4::{
    dequantize_row_mxfp4, mxfp4_half_scale, quantize_row_mxfp4, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES,
};
pub use q4::{dequantize_row_q4, quantize_row_q4, Q4_BLOCK_BYTES, Q4_VALUE_BYTES};
pub use q8::{dequantize_row_q8, quantize_row_q8, Q8_BLOCK_BYTES, Q8_VALUE_BYTES};
pub use rows4::{planar_from_rows4, rows4_block_bytes, rows4_from_planar, rows4_value_at};

use half::f16;

/// Values per quantization block.
pub const BLOCK_LEN: usize = 32;

/// Splits a quantized row of `blocks` blocks into its scales and values.
#[inline]
pub fn split_row(row: &[u8], blocks: usize) -> (&[u8], &[u8]) {
    row.split_at(2 * blocks)
}

/// Scale `b` of a row's scale section.
#[inline]
pub fn scale_at(scales: &[u8], b: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([scales[2 * b], scales[2 * b + 1]])).to_f32()
}

/// Rounds half away from zero (the rule the reference simulation uses too)
/// to an integer, for |x| < 2^22. Built from adds, compares and bit moves
/// so that it vectorizes (a saturating `as i32` cast does not).
#[inline(always)]
pub fn round_half_away(x: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it leaves integers in the mantissa
    let a = x.abs();
    let r = (a + SHIFT) - SHIFT; // nearest, ties to even
    let r = if a - r >= 0.5 { r + 1.0 } else { r }; // ties away from zero
    let i = (r + SHIFT).to_bits() as i32 - SHIFT.to_bits() as i32;
    if x < 0.0 {
        -i
    } else {
        i
    }
}

/// One block's values, zero-padded to a whole block (fixed size, so the
/// loops below unroll and vectorize).
#[inline]
fn padded_block(block: &[f32]) -> [f32; BLOCK_LEN] {
    let mut x = [0.0f32; BLOCK_LEN];
    x[..block.len()].copy_from_slice(block);
    x
}

#[inline]
fn max_abs(x: &[f32; BLOCK_LEN]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// Encodes one row of f32 values as `dtype` (`out` is `dtype.row_bytes(row.len())` long).
pub fn encode_row(dtype: crate::DType, row: &[f32], out: &mut [u8]) {
    match dtype {
        crate::DType::F32 => encode_row_f32(row, out),
        crate::DType::F16 => quantize_row_f16(row, out),
        crate::DType::Q8 => quantize_row_q8(row, out),
        crate::DType::Q4 => quantize_row_q4(row, out),
        crate::DType::Mxfp4 => quantize_row_mxfp4(row, out),
    }
}

/// Decodes one row of any weight type into `out.len()` f32 values.
pub fn dequantize_row(dtype: crate::DType, row: &[u8], out: &mut [f32]) {
    match dtype {
        crate::DType::F32 => out
            .iter_mut()
            .zip(row.chunks_exact(4))
            .for_each(|(x, b)| *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        crate::DType::F16 => out.iter_mut().zip(row.chunks_exact(2)).for_each(|(x, b)| {
            *x = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
        }),
        crate::DType::Q8 => dequantize_row_q8(row, out),
        crate::DType::Q4 => dequantize_row_q4(row, out),
        crate::DType::Mxfp4 => dequantize_row_mxfp4(row, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        for (x, want) in [
            (0.5, 1),
            (-0.5, -1),
            (0.49999997, 0),
            (1.5, 2),
            (-2.5, -3),
            (126.6, 127),
            (-0.0, 0),
        ] {
            assert_eq!(round_half_away(x), want, "{x}");
        }
        // Agrees with libm on a dense sweep, halves included.
        let mut x = -200.0f32;
        while x < 200.0 {
            assert_eq!(round_half_away(x), libm::roundf(x) as i32, "{x}");
            x += 0.03125 * 0.999;
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let row = [0.0f32; 33];
        let mut b8 = [0xffu8; 2 * Q8_BLOCK_BYTES];
        quantize_row_q8(&row, &mut b8);
        assert!(b8.iter().all(|&b| b == 0));
        let mut b4 = [0u8; 2 * Q4_BLOCK_BYTES];
        quantize_row_q4(&row, &mut b4);
        let mut back = [1.0f32; 33];
        dequantize_row_q4(&b4, &mut back);
        assert!(back.iter().all(|&v| v == 0.0));
    }
}
