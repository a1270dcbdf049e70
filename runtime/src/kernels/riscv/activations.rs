//! The activation quantizer in RVV: the scalar one's arithmetic, op for
//! op, 32 values a vector, so its bytes are identical.

use core::arch::asm;

use crate::quant::BLOCK_LEN;

/// 1.5 · 2^23: adding it leaves integers in the mantissa (as in
/// `quant::round_half_away`).
const SHIFT: f32 = 12_582_912.0;

/// `max |x[i]|` over one block (NaNs ignored, as the scalar fold does).
///
/// Safety: the CPU has V; 32 f32 at `x`.
unsafe fn block_max_abs(x: *const f32) -> f32 {
    let amax: f32;
    // SAFETY: reads 32 f32 at x (vl = 32 at e32, m8 fits VLEN ≥ 128).
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetvli zero, {len}, e32, m8, ta, ma",
            "vle32.v v8, ({x})",
            "vfabs.v v8, v8",
            "vmv.s.x v16, zero", // seed +0.0
            "vfredmax.vs v16, v8, v16",
            "vfmv.f.s {amax}, v16",
            ".option pop",
            x = in(reg) x,
            len = in(reg) BLOCK_LEN,
            amax = lateout(freg) amax,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _,
            options(readonly, nostack),
        );
    }
    amax
}

/// Stores `round_half_away(x[i] · id)` of one block as i8 at `q` and
/// returns their sum: nearest by adding and subtracting `SHIFT`, one up
/// where that left at least 0.5, the integer read from the bits, the
/// sign put back, exactly as `quant::round_half_away`.
///
/// Safety: the CPU has V; 32 f32 at `x`, 32 bytes writable at `q`;
/// `|x[i] · id| ≤ 127` (id = 127 / max |x|).
unsafe fn block_round(x: *const f32, id: f32, q: *mut i8) -> i32 {
    let sum: i32;
    // SAFETY: reads 32 f32 at x and writes 32 bytes at q.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetvli zero, {len}, e32, m8, ta, mu",
            "vle32.v v8, ({x})",
            "vfmul.vf v8, v8, {id}",
            "vfabs.v v16, v8",
            "vfadd.vf v24, v16, {shift}",
            "vfsub.vf v24, v24, {shift}",
            "vfsub.vv v16, v16, v24",
            "vmfge.vf v0, v16, {half}",
            "vfadd.vf v24, v24, {one}, v0.t",
            "vfadd.vf v24, v24, {shift}",
            "vsub.vx v24, v24, {shift_bits}",
            "vmflt.vf v0, v8, {zero}",
            "vrsub.vi v24, v24, 0, v0.t",
            "vmv.s.x v16, zero",
            "vredsum.vs v16, v24, v16",
            "vmv.x.s {sum}, v16",
            "vsetvli zero, {len}, e16, m4, ta, ma",
            "vncvt.x.x.w v8, v24",
            "vsetvli zero, {len}, e8, m2, ta, ma",
            "vncvt.x.x.w v12, v8",
            "vse8.v v12, ({q})",
            ".option pop",
            x = in(reg) x,
            q = in(reg) q,
            len = in(reg) BLOCK_LEN,
            id = in(freg) id,
            shift = in(freg) SHIFT,
            half = in(freg) 0.5f32,
            one = in(freg) 1.0f32,
            zero = in(freg) 0.0f32,
            shift_bits = in(reg) SHIFT.to_bits() as usize,
            sum = lateout(reg) sum,
            out("v0") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
    sum
}

/// [`crate::quant::quantize_activations`], bit for bit.
pub(crate) fn quantize_activations_rvv(
    x: &[f32],
    qs: &mut [i8],
    scales: &mut [f32],
    sums: &mut [f32],
) {
    let blocks = crate::kernels::check_activations(x, qs, scales, sums);
    for (b, ((q, d), s)) in qs
        .chunks_exact_mut(BLOCK_LEN)
        .zip(scales.iter_mut())
        .zip(sums.iter_mut())
        .take(blocks)
        .enumerate()
    {
        let block = &x[b * BLOCK_LEN..x.len().min((b + 1) * BLOCK_LEN)];
        let mut padded = [0.0f32; BLOCK_LEN];
        let v: &[f32] = if block.len() == BLOCK_LEN {
            block
        } else {
            padded[..block.len()].copy_from_slice(block);
            &padded
        };
        // SAFETY: V is present (see `kernels::table`); `v` is 32 f32.
        let amax = unsafe { block_max_abs(v.as_ptr()) };
        *d = amax / 127.0;
        let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        // SAFETY: as above; `q` is one block of 32 bytes; |v · id| ≤ 127.
        let sum = unsafe { block_round(v.as_ptr(), id, q.as_mut_ptr()) };
        *s = *d * sum as f32;
    }
}
