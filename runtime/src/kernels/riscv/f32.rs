//! f32 weights: the RVV matvec; the dot products and `y += a·x` of
//! attention.

use core::arch::asm;

use crate::kernels::{check_float, scalar, Activations};

pub(crate) fn matvec_f32_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 4);
    if !(w.as_ptr() as usize).is_multiple_of(4) {
        return scalar::matvec_f32(w, row_bytes, x, out);
    }
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        // SAFETY: the row holds `cols` f32s (4-byte aligned: `w` is and
        // row_bytes = 4 · cols), as x does.
        let row = unsafe { core::slice::from_raw_parts(row.as_ptr() as *const f32, cols) };
        *o = dot_rvv(row, x.f32s);
    }
}

/// f32 dot product: a strip-mined `vfmacc` at LMUL 4, one `vfredusum`.
fn dot_rvv(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let sum: f32;
    // SAFETY: V is present (see `kernels::table`); the loop reads `n` f32s
    // from each slice (`vle32` of f32 slices: element aligned), `vl` at a
    // time, advancing by exactly what it read.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetvli {t}, zero, e32, m4, ta, ma",
            "vmv.v.i v8, 0",
            "vmv.v.i v4, 0",
            "beqz {n}, 2f",
            "1:",
            // Tail-undisturbed: lanes past a short last `vl` keep their sums.
            "vsetvli {t}, {n}, e32, m4, tu, ma",
            "vle32.v v16, ({a})",
            "vle32.v v20, ({b})",
            "vfmacc.vv v8, v16, v20",
            "slli {u}, {t}, 2",
            "add {a}, {a}, {u}",
            "add {b}, {b}, {u}",
            "sub {n}, {n}, {t}",
            "bnez {n}, 1b",
            "2:",
            "vsetvli {t}, zero, e32, m4, ta, ma",
            "vfredusum.vs v4, v8, v4",
            "vfmv.f.s {sum}, v4",
            ".option pop",
            a = inout(reg) a.as_ptr() => _,
            b = inout(reg) b.as_ptr() => _,
            n = inout(reg) n => _,
            t = out(reg) _,
            u = out(reg) _,
            sum = lateout(freg) sum,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// `y += a · x`, strip-mined at LMUL 4.
fn axpy_rvv(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    // SAFETY: V is present (see `kernels::table`); the loop reads `n` f32s
    // of x and reads and writes `n` of y, `vl` at a time, advancing by
    // exactly what it touched.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "beqz {n}, 2f",
            "1:",
            "vsetvli {t}, {n}, e32, m4, ta, ma",
            "vle32.v v8, ({y})",
            "vle32.v v16, ({x})",
            "vfmacc.vf v8, {a}, v16",
            "vse32.v v8, ({y})",
            "slli {u}, {t}, 2",
            "add {y}, {y}, {u}",
            "add {x}, {x}, {u}",
            "sub {n}, {n}, {t}",
            "bnez {n}, 1b",
            "2:",
            ".option pop",
            y = inout(reg) y.as_mut_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            n = inout(reg) n => _,
            a = in(freg) a,
            t = out(reg) _,
            u = out(reg) _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            options(nostack),
        );
    }
}

/// [`scalar::attend`] with the RVV dot product and `y += a·x`.
pub(crate) fn attend_rvv(
    q: &[f32],
    cache: scalar::CacheView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    scalar::attend_with(dot_rvv, axpy_rvv, q, cache, scale, sink, scores, out)
}
