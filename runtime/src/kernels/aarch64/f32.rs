//! f32 weights: the NEON matvec.

use core::arch::aarch64::*;

use crate::kernels::{check_float, Activations};

pub(crate) fn matvec_f32_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 4);
    // SAFETY: as for `q4::matvec_q4_neon` (`check_float` for the sizes).
    unsafe { f32_neon(w, row_bytes, cols, x.f32s, out) }
}

#[target_feature(enable = "neon")]
unsafe fn f32_neon(w: &[u8], row_bytes: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    let main = cols - cols % 16;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < main {
            // SAFETY: elements i..i + 16 < cols: bytes 4i..4i + 64 of the
            // row (`check_float`: row_bytes = 4 · cols) and x[i..i + 16].
            // Weights load as bytes, so the row needs no alignment.
            unsafe {
                let wp = row.as_ptr().add(4 * i);
                let xp = x.as_ptr().add(i);
                for (k, a) in acc.iter_mut().enumerate() {
                    let wv = vreinterpretq_f32_u8(vld1q_u8(wp.add(16 * k)));
                    *a = vfmaq_f32(*a, wv, vld1q_f32(xp.add(4 * k)));
                }
            }
            i += 16;
        }
        let tail: f32 = row[4 * main..]
            .chunks_exact(4)
            .zip(&x[main..])
            .map(|(w, &x)| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * x)
            .sum();
        let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        *o = vaddvq_f32(sum) + tail;
    }
}
