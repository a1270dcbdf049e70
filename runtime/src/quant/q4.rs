//! int4 blocks (`Q4`): an f16 scale and 16 bytes of nibbles (`q + 8`) a block.

use half::f16;

use super::{max_abs, padded_block, round_half_away, scale_at, split_row, BLOCK_LEN};

/// Bytes of one int4 block: f16 scale + 16 bytes of nibbles.
pub const Q4_BLOCK_BYTES: usize = 2 + Q4_VALUE_BYTES;
/// Value bytes of one int4 block.
pub const Q4_VALUE_BYTES: usize = BLOCK_LEN / 2;

/// Quantizes one row to int4 blocks. `out` must be `DType::Q4.row_bytes(row.len())` long.
pub fn quantize_row_q4(row: &[f32], out: &mut [u8]) {
    let blocks = row.len().div_ceil(BLOCK_LEN);
    debug_assert_eq!(out.len(), blocks * Q4_BLOCK_BYTES);
    let (scales, values) = out.split_at_mut(2 * blocks);
    for ((block, d_out), dst) in row
        .chunks(BLOCK_LEN)
        .zip(scales.chunks_exact_mut(2))
        .zip(values.chunks_exact_mut(Q4_VALUE_BYTES))
    {
        let x = padded_block(block);
        let amax = max_abs(&x);
        // The value of largest magnitude, sign kept (first on ties).
        let m = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        let d16 = f16::from_f32(m / -8.0);
        let d = d16.to_f32();
        d_out.copy_from_slice(&d16.to_bits().to_le_bytes());
        let mut q = [8u8; BLOCK_LEN]; // zero scales store 0 as 8
        if d != 0.0 {
            for (q, &v) in q.iter_mut().zip(&x) {
                *q = (round_half_away(crate::math::clamp(v / d, -8.0, 7.0)) + 8) as u8;
            }
        }
        for j in 0..Q4_VALUE_BYTES {
            dst[j] = q[j] | (q[j + Q4_VALUE_BYTES] << 4);
        }
    }
}

/// Dequantizes one int4 row (`out.len()` logical values).
pub fn dequantize_row_q4(row: &[u8], out: &mut [f32]) {
    let blocks = out.len().div_ceil(BLOCK_LEN);
    let (scales, values) = split_row(row, blocks);
    for (b, (block, dst)) in values
        .chunks_exact(Q4_VALUE_BYTES)
        .zip(out.chunks_mut(BLOCK_LEN))
        .enumerate()
    {
        let d = scale_at(scales, b);
        for (i, o) in dst.iter_mut().enumerate() {
            let byte = block[i % Q4_VALUE_BYTES];
            let nibble = if i < Q4_VALUE_BYTES {
                byte & 0x0f
            } else {
                byte >> 4
            };
            *o = d * (nibble as i32 - 8) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_keeps_the_extreme_exactly_and_packs_nibbles() {
        let mut row = [0.0f32; 32];
        row[0] = -4.0; // largest magnitude: d = 0.5, q = -8
        row[16] = 3.5; // q = 7 in the high nibble of byte 0
        row[5] = 0.25; // exactly half a step: rounds away from zero to q = 1
        let mut bytes = [0u8; Q4_BLOCK_BYTES];
        quantize_row_q4(&row, &mut bytes);
        assert_eq!(scale_at(&bytes, 0), 0.5);
        assert_eq!(bytes[2], 15 << 4); // q[0] + 8 = 0 low, q[16] + 8 = 15 high
        assert_eq!(bytes[2 + 5] & 0x0f, 9);
        let mut back = [0.0f32; 32];
        dequantize_row_q4(&bytes, &mut back);
        assert_eq!((back[0], back[16], back[5], back[1]), (-4.0, 3.5, 0.5, 0.0));
    }
}
