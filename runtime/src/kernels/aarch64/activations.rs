//! The NEON activation quantizer: bit for bit `quant::quantize_activations`
//! (the same `max|x|`, the same `x · (127 / max|x|)` in f32, and `fcvtas`,
//! which rounds half away from zero as `round_half_away` does).

use core::arch::aarch64::*;

use crate::quant::BLOCK_LEN;

/// [`crate::quant::quantize_activations`] with NEON.
pub(crate) fn quantize_activations_neon(
    x: &[f32],
    qs: &mut [i8],
    scales: &mut [f32],
    sums: &mut [f32],
) {
    crate::kernels::check_activations(x, qs, scales, sums);
    for (b, block) in x.chunks(BLOCK_LEN).enumerate() {
        let mut padded = [0.0f32; BLOCK_LEN];
        let v: &[f32; BLOCK_LEN] = match block.try_into() {
            Ok(full) => full,
            Err(_) => {
                padded[..block.len()].copy_from_slice(block);
                &padded
            }
        };
        let q: &mut [i8; BLOCK_LEN] = (&mut qs[b * BLOCK_LEN..(b + 1) * BLOCK_LEN])
            .try_into()
            .unwrap();
        // SAFETY: `v` and `q` are 32 elements each; NEON is present
        // (installed by `kernels::table` after `has_neon`).
        let (d, sum) = unsafe { block_neon(v, q) };
        scales[b] = d;
        sums[b] = d * sum as f32;
    }
}

/// One block: its int8 values into `q`; returns `(d, Σq)`.
#[inline(always)]
unsafe fn block_neon(v: &[f32; BLOCK_LEN], q: &mut [i8; BLOCK_LEN]) -> (f32, i32) {
    let x: [float32x4_t; 8] = core::array::from_fn(|i| vld1q_f32(v.as_ptr().add(4 * i)));
    let m = x.map(|x| vabsq_f32(x));
    let m = vmaxq_f32(
        vmaxq_f32(vmaxq_f32(m[0], m[1]), vmaxq_f32(m[2], m[3])),
        vmaxq_f32(vmaxq_f32(m[4], m[5]), vmaxq_f32(m[6], m[7])),
    );
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    let r = x.map(|x| vcvtaq_s32_f32(vmulq_n_f32(x, id)));
    let sum = vaddvq_s32(vaddq_s32(
        vaddq_s32(vaddq_s32(r[0], r[1]), vaddq_s32(r[2], r[3])),
        vaddq_s32(vaddq_s32(r[4], r[5]), vaddq_s32(r[6], r[7])),
    ));
    // |r| <= 127: the narrowing is exact.
    let h: [int16x8_t; 4] =
        core::array::from_fn(|i| vcombine_s16(vmovn_s32(r[2 * i]), vmovn_s32(r[2 * i + 1])));
    let lo = vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1]));
    let hi = vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3]));
    vst1q_s8(q.as_mut_ptr(), lo);
    vst1q_s8(q.as_mut_ptr().add(16), hi);
    (d, sum)
}
