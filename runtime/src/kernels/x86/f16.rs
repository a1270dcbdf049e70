//! f16 weights: the AVX-512 matvec.

use core::arch::x86_64::*;

use super::lane_mask;
use crate::kernels::{check_float, Activations};

pub(crate) fn matvec_f16_avx512(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    // SAFETY: as for `q4::matvec_q4_avx512`.
    unsafe { f16_avx512(w, row_bytes, cols, x.f32s, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
unsafe fn f16_avx512(w: &[u8], row_bytes: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: loads are masked to `cols` elements of this row and of x.
        let row = w.as_ptr().add(r * row_bytes) as *const i16;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < cols {
            let m = lane_mask(cols - i);
            let wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row.add(i)));
            acc = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)), acc);
            i += 16;
        }
        *o = _mm512_reduce_add_ps(acc);
    }
}
