//! MXFP4 blocks (gpt-oss): an E8M0 scale byte and 16 bytes of FP4 (E2M1)
//! nibbles a block, elements `2j` and `2j + 1` in byte `j`.

use super::{BLOCK_LEN, Q4_VALUE_BYTES};

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

#[cfg(test)]
mod tests {
    #[test]
    fn mxfp4_decodes_as_the_ocp_table_and_quantizes_to_its_nearest_values() {
        // One block, scale byte 126 (2^-1): codes 0..16 in order, low nibble first.
        let mut row = [0u8; crate::quant::MXFP4_BLOCK_BYTES];
        row[0] = 126;
        for j in 0..16 {
            row[1 + j] = ((2 * j) % 16) as u8 | ((((2 * j + 1) % 16) as u8) << 4);
        }
        let mut out = [0.0f32; 32];
        crate::quant::dequantize_row_mxfp4(&row, &mut out);
        let table = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        for (i, &v) in out.iter().enumerate() {
            let code = i % 16;
            let magnitude = table[code % 8] * 0.5;
            let want = if code >= 8 { -magnitude } else { magnitude };
            assert_eq!(v, want, "element {i}");
        }
        // Values on the grid survive a round trip; the scale is the
        // smallest with max|x| <= 6·2^e.
        let mut again = [0u8; crate::quant::MXFP4_BLOCK_BYTES];
        crate::quant::quantize_row_mxfp4(&out, &mut again);
        assert_eq!(again[0], 126);
        let mut back = [0.0f32; 32];
        crate::quant::dequantize_row_mxfp4(&again, &mut back);
        assert_eq!(back, out);
        // Subnormal scales (bytes 0 and 1) decode as exact powers of two.
        assert_eq!(crate::quant::mxfp4_half_scale(0), libm::ldexpf(1.0, -128));
        assert_eq!(crate::quant::mxfp4_half_scale(1), libm::ldexpf(1.0, -127));
        assert_eq!(crate::quant::mxfp4_half_scale(127), 0.5);
    }
}
