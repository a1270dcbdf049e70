//! f16 weights: the NEON matvec.

use core::arch::aarch64::*;
use core::arch::asm;

use half::f16;

use crate::kernels::{check_float, Activations};

/// Eight little-endian f16 values at `p` (any alignment) as two f32 vectors.
///
/// Safety: `p` points at 16 readable bytes.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u8(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: `fcvtl`/`fcvtl2` only read and write registers.
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        lo = out(vreg) lo,
        hi = lateout(vreg) hi,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

pub(crate) fn matvec_f16_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    // SAFETY: as for `q4::matvec_q4_neon` (`check_float` for the sizes).
    unsafe { f16_neon(w, row_bytes, cols, x.f32s, out) }
}

#[target_feature(enable = "neon")]
unsafe fn f16_neon(w: &[u8], row_bytes: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    let main = cols - cols % 16;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < main {
            // SAFETY: elements i..i + 16 < cols: bytes 2i..2i + 32 of the
            // row (`check_float`: row_bytes = 2 · cols) and x[i..i + 16].
            unsafe {
                let (a, b) = f16x8(row.as_ptr().add(2 * i));
                let (c, d) = f16x8(row.as_ptr().add(2 * i + 16));
                let xp = x.as_ptr().add(i);
                acc[0] = vfmaq_f32(acc[0], a, vld1q_f32(xp));
                acc[1] = vfmaq_f32(acc[1], b, vld1q_f32(xp.add(4)));
                acc[2] = vfmaq_f32(acc[2], c, vld1q_f32(xp.add(8)));
                acc[3] = vfmaq_f32(acc[3], d, vld1q_f32(xp.add(12)));
            }
            i += 16;
        }
        let tail: f32 = row[2 * main..]
            .chunks_exact(2)
            .zip(&x[main..])
            .map(|(w, &x)| f16::from_bits(u16::from_le_bytes([w[0], w[1]])).to_f32() * x)
            .sum();
        let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        *o = vaddvq_f32(sum) + tail;
    }
}
crate::kernels::matmul_per_token!(matmul_f16_neon, matvec_f16_neon, F16);
