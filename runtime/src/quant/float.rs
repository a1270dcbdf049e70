//! Float rows: little-endian f16 and f32, no blocks.

use half::f16;

/// Converts one row to little-endian f16. `out` must be `2 * row.len()` long.
pub fn quantize_row_f16(row: &[f32], out: &mut [u8]) {
    for (v, dst) in row.iter().zip(out.chunks_exact_mut(2)) {
        dst.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

/// Writes one row as little-endian f32. `out` must be `4 * row.len()` long.
pub fn encode_row_f32(row: &[f32], out: &mut [u8]) {
    for (v, dst) in row.iter().zip(out.chunks_exact_mut(4)) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}
