//! Activations as int8 blocks with an f32 scale and a scaled sum each, so
//! that the quantized kernels' dot products run on integers.

use super::{max_abs, padded_block, round_half_away, BLOCK_LEN};

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
