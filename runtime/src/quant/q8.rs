//! int8 blocks (`Q8`): an f16 scale and 32 × i8 a block.

use half::f16;

use super::{max_abs, padded_block, round_half_away, scale_at, split_row, BLOCK_LEN};

/// Bytes of one int8 block: f16 scale + 32 × i8.
pub const Q8_BLOCK_BYTES: usize = 2 + Q8_VALUE_BYTES;
/// Value bytes of one int8 block.
pub const Q8_VALUE_BYTES: usize = BLOCK_LEN;

/// Quantizes one row to int8 blocks. `out` must be `DType::Q8.row_bytes(row.len())` long.
pub fn quantize_row_q8(row: &[f32], out: &mut [u8]) {
    let blocks = row.len().div_ceil(BLOCK_LEN);
    debug_assert_eq!(out.len(), blocks * Q8_BLOCK_BYTES);
    let (scales, values) = out.split_at_mut(2 * blocks);
    for ((block, d_out), dst) in row
        .chunks(BLOCK_LEN)
        .zip(scales.chunks_exact_mut(2))
        .zip(values.chunks_exact_mut(Q8_VALUE_BYTES))
    {
        let x = padded_block(block);
        let d16 = f16::from_f32(max_abs(&x) / 127.0);
        let d = d16.to_f32();
        d_out.copy_from_slice(&d16.to_bits().to_le_bytes());
        let mut q = [0u8; BLOCK_LEN];
        if d != 0.0 {
            for (q, &v) in q.iter_mut().zip(&x) {
                *q = round_half_away(crate::math::clamp(v / d, -127.0, 127.0)) as u8;
            }
        }
        dst.copy_from_slice(&q);
    }
}

/// Dequantizes one int8 row (`out.len()` logical values).
pub fn dequantize_row_q8(row: &[u8], out: &mut [f32]) {
    let blocks = out.len().div_ceil(BLOCK_LEN);
    let (scales, values) = split_row(row, blocks);
    for (b, (block, dst)) in values
        .chunks_exact(Q8_VALUE_BYTES)
        .zip(out.chunks_mut(BLOCK_LEN))
        .enumerate()
    {
        let d = scale_at(scales, b);
        for (o, &q) in dst.iter_mut().zip(block) {
            *o = d * (q as i8) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_round_trip_is_within_half_a_step() {
        let row: [f32; 40] = core::array::from_fn(|i| (i as f32 - 17.0) * 0.37);
        let mut bytes = [0u8; 2 * Q8_BLOCK_BYTES];
        quantize_row_q8(&row, &mut bytes);
        let mut back = [0.0f32; 40];
        dequantize_row_q8(&bytes, &mut back);
        for (block, (a, b)) in row.chunks(32).zip(back.chunks(32)).enumerate() {
            let step = scale_at(&bytes, block);
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= step * 0.5 + 1e-6, "{x} vs {y}");
            }
        }
    }
}
