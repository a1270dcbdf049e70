//! The numbers: block-quantized weight formats and how f32 values become them.
//!
//! Weights are quantized row by row in blocks of [`BLOCK_LEN`] consecutive
//! values; a row whose length is not a multiple of the block is padded with
//! zeros in its last block. Both formats are symmetric with one f16 scale a
//! block. A row stores all its scales first, then all its blocks' values
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

use half::f16;

/// Values per quantization block.
pub const BLOCK_LEN: usize = 32;
/// Bytes of one int8 block: f16 scale + 32 × i8.
pub const Q8_BLOCK_BYTES: usize = 2 + Q8_VALUE_BYTES;
/// Bytes of one int4 block: f16 scale + 16 bytes of nibbles.
pub const Q4_BLOCK_BYTES: usize = 2 + Q4_VALUE_BYTES;
/// Value bytes of one int8 block.
pub const Q8_VALUE_BYTES: usize = BLOCK_LEN;
/// Value bytes of one int4 block.
pub const Q4_VALUE_BYTES: usize = BLOCK_LEN / 2;
/// Bytes of one MXFP4 block: E8M0 scale + 16 bytes of FP4 nibbles.
pub const MXFP4_BLOCK_BYTES: usize = 1 + Q4_VALUE_BYTES;
/// FP4 (E2M1) codes times two, so that they are integers: codes 0-7 are
/// 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.
pub const FP4_TIMES_TWO: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of an MXFP4 block's E8M0 scale, `2^(e - 128)`: it multiplies
/// [`FP4_TIMES_TWO`] values. (E8M0 255 is NaN; the quantizer refuses it.)
#[inline]
pub fn mxfp4_half_scale(e: u8) -> f32 {
    match e {
        // 2^(e-128) is a normal f32 from e = 2 on: its bits are the exponent.
        2..=255 => f32::from_bits(((e as u32) - 1) << 23),
        // 2^-128 and 2^-127 are subnormal.
        _ => f32::from_bits(1 << (21 + e as u32)),
    }
}

/// Dequantizes one MXFP4 row (`out.len()` logical values): all block
/// scales first, then 16 bytes a block, element `2j` in byte `j`'s low
/// nibble and `2j + 1` in its high nibble (the layout of gpt-oss's
/// `*_blocks` / `*_scales` tensors).
pub fn dequantize_row_mxfp4(row: &[u8], out: &mut [f32]) {
    let blocks = out.len().div_ceil(BLOCK_LEN);
    let (scales, values) = row.split_at(blocks);
    for ((block, dst), &e) in values
        .chunks_exact(Q4_VALUE_BYTES)
        .zip(out.chunks_mut(BLOCK_LEN))
        .zip(scales)
    {
        let d = mxfp4_half_scale(e);
        for (i, o) in dst.iter_mut().enumerate() {
            let byte = block[i / 2];
            let code = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            *o = d * FP4_TIMES_TWO[code as usize] as f32;
        }
    }
}

/// Quantizes one row to MXFP4 as OCP's reference does: per block the
/// smallest power-of-two scale with `max|x| ≤ 6·2^e`, each value to the
/// nearest FP4 value (ties to the even code). Used for tests and
/// benchmarks; converted checkpoints keep their own MXFP4 bytes.
pub fn quantize_row_mxfp4(row: &[f32], out: &mut [u8]) {
    let blocks = row.len().div_ceil(BLOCK_LEN);
    let (scales, values) = out.split_at_mut(blocks);
    values.fill(0);
    for (b, block) in row.chunks(BLOCK_LEN).enumerate() {
        let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut e: i32 = -127;
        while e < 127 && libm::ldexpf(6.0, e) < max {
            e += 1;
        }
        scales[b] = (e + 127) as u8;
        let unit = libm::ldexpf(1.0, e);
        for (i, &v) in block.iter().enumerate() {
            let x = (v / unit).abs();
            // Nearest of the eight magnitudes, ties to the even code.
            let mut code = 0u8;
            for c in 1..8u8 {
                let (best, cand) = (
                    (FP4_TIMES_TWO[code as usize] as f32 / 2.0 - x).abs(),
                    (FP4_TIMES_TWO[c as usize] as f32 / 2.0 - x).abs(),
                );
                if cand < best || (cand == best && c % 2 == 0) {
                    code = c;
                }
            }
            if v < 0.0 && code != 0 {
                code |= 8;
            }
            values[b * Q4_VALUE_BYTES + i / 2] |= if i % 2 == 0 { code } else { code << 4 };
        }
    }
}

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
                *q = round_half_away(crate::kernels::scalar::clamp(v / d, -127.0, 127.0)) as u8;
            }
        }
        dst.copy_from_slice(&q);
    }
}

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
                *q = (round_half_away(crate::kernels::scalar::clamp(v / d, -8.0, 7.0)) + 8) as u8;
            }
        }
        for j in 0..Q4_VALUE_BYTES {
            dst[j] = q[j] | (q[j + Q4_VALUE_BYTES] << 4);
        }
    }
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

/// Quantizes activations to int8 blocks with an f32 scale each:
/// `d = max|x| / 127`, `q = round(x * 127 / max|x|)`. `qs` holds
/// `blocks * 32` values (the tail of the last block is zeroed), `scales` one
/// per block, and `sums` one per block: `d * Σq`, which lets int4 kernels
/// work on the stored unsigned nibbles and subtract `8 * d_w * sums[b]` once.
pub fn quantize_activations(x: &[f32], qs: &mut [i8], scales: &mut [f32], sums: &mut [f32]) {
    let blocks = x.len().div_ceil(BLOCK_LEN);
    debug_assert!(qs.len() >= blocks * BLOCK_LEN && scales.len() >= blocks && sums.len() >= blocks);
    for (((block, q), d), s) in x
        .chunks(BLOCK_LEN)
        .zip(qs.chunks_exact_mut(BLOCK_LEN))
        .zip(scales)
        .zip(sums)
    {
        let v = padded_block(block);
        let amax = max_abs(&v);
        *d = amax / 127.0;
        let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(&v) {
            let r = round_half_away(v * id);
            *q = r as i8;
            sum += r;
        }
        *s = *d * sum as f32;
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

    #[test]
    fn activations_saturate_at_127() {
        let x: [f32; 35] = core::array::from_fn(|i| i as f32 - 20.0);
        let mut qs = [0i8; 64];
        let (mut d, mut sums) = ([0.0f32; 2], [0.0f32; 2]);
        quantize_activations(&x, &mut qs, &mut d, &mut sums);
        let q_sum: i32 = qs[..32].iter().map(|&q| q as i32).sum();
        assert_eq!(sums[0], d[0] * q_sum as f32);
        assert_eq!(qs[0], -127);
        assert_eq!(qs[34], 127);
        assert!(qs[35..].iter().all(|&q| q == 0));
    }
}
