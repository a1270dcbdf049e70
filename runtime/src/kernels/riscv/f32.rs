//! f32 weights: the RVV matvec (and batched product, one matvec a token);
//! attention's dot products, `y += a·x` and exp; SwiGLU.

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

crate::kernels::matmul_per_token!(matmul_f32_rvv, matvec_f32_rvv, F32);

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

/// [`scalar::attend`] with the RVV dot product, `y += a·x` and exp.
pub(crate) fn attend_rvv(
    q: &[f32],
    cache: scalar::KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let Some(cache) = cache.f32() else {
        return scalar::attend_stored(
            dot_rvv,
            axpy_rvv,
            exp_shifted_rvv,
            q,
            cache,
            scale,
            sink,
            scores,
            out,
        );
    };
    scalar::attend_with(
        |q, cache, scale, scores| scalar::scores_by(dot_rvv, q, cache, scale, scores),
        exp_shifted_rvv,
        |scores, cache, out| scalar::values_by(axpy_rvv, scores, cache, out),
        q,
        cache,
        scale,
        sink,
        scores,
        out,
    )
}

/// An `asm!` block that runs `$init`, then a strip-mined loop (`1:`) of
/// `$pre` (which leaves exp's argument in `v6`), `scalar::exp` of `v6` into `v14` (its
/// range reduction and polynomial as vector ops, at e32, m2, with fused
/// multiply-adds where the scalar code rounds twice, so results may differ
/// from it in the last bits) and `$post`, then `$fini`. Clobbers v0 and
/// v6..v21; `$post` must advance the pointers and `{n}` by `{t}` elements.
macro_rules! exp_loop {
    ([$($init:literal),*], [$($pre:literal),*], [$($post:literal),*], [$($fini:literal),*],
     $($operands:tt)*) => {
        asm!(
            ".option push",
            ".option arch, +v",
            $($init,)*
            "beqz {n}, 2f",
            "1:",
            "vsetvli {t}, {n}, e32, m2, ta, mu",
            $($pre,)*
            "vfmax.vf v8, v6, {lo}",
            "vfmin.vf v8, v8, {hi}",
            "vfmv.v.f v10, {shift}",
            "vfmacc.vf v10, {log2e}, v8", // t: x / ln 2 rounded into the mantissa
            "vfsub.vf v12, v10, {shift}", // n
            "vfnmsac.vf v8, {ln2hi}, v12", // r = x − n ln 2
            "vfnmsac.vf v8, {ln2lo}, v12",
            "vfmv.v.f v14, {c1}",
            "vfmacc.vf v14, {c0}, v8",
            "vfmul.vv v14, v14, v8",
            "vfadd.vf v14, v14, {c2}",
            "vfmul.vv v14, v14, v8",
            "vfadd.vf v14, v14, {c3}",
            "vfmul.vv v14, v14, v8",
            "vfadd.vf v14, v14, {c4}",
            "vfmul.vv v14, v14, v8",
            "vfadd.vf v14, v14, {half}",
            "vfmul.vv v16, v8, v8",
            "vfmul.vv v14, v14, v16",
            "vfadd.vv v14, v14, v8",
            "vfadd.vf v14, v14, {one}", // e^r
            // 2^n as two factors (n is −126..=128).
            "vsub.vx v18, v10, {shift_bits}",
            "vsra.vi v20, v18, 1",
            "vsub.vv v18, v18, v20",
            "vadd.vx v20, v20, {bias}",
            "vsll.vi v20, v20, 23",
            "vadd.vx v18, v18, {bias}",
            "vsll.vi v18, v18, 23",
            "vfmul.vv v14, v14, v20",
            "vfmul.vv v14, v14, v18",
            "vmflt.vf v0, v6, {lo}",
            "vfmerge.vfm v14, v14, {zero}, v0",
            "vmfgt.vf v0, v6, {hi}",
            "vfmerge.vfm v14, v14, {inf}, v0",
            $($post,)*
            "bnez {n}, 1b",
            "2:",
            $($fini,)*
            ".option pop",
            $($operands)*
            t = out(reg) _,
            lo = in(freg) -87.336_55f32,
            hi = in(freg) 88.722_84f32,
            shift = in(freg) 12_582_912.0f32,
            log2e = in(freg) core::f32::consts::LOG2_E,
            ln2hi = in(freg) 0.693_359_4f32,
            ln2lo = in(freg) -2.121_944_4e-4f32,
            c0 = in(freg) 1.987_569_2e-4f32,
            c1 = in(freg) 1.398_2e-3f32,
            c2 = in(freg) 8.333_452e-3f32,
            c3 = in(freg) 4.166_579_6e-2f32,
            c4 = in(freg) 0.166_666_65f32,
            half = in(freg) 0.5f32,
            one = in(freg) 1.0f32,
            zero = in(freg) 0.0f32,
            inf = in(freg) f32::INFINITY,
            shift_bits = in(reg) 12_582_912.0f32.to_bits() as usize,
            bias = in(reg) 127usize,
            out("v0") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
            out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _,
            out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            options(nostack),
        )
    };
}

/// [`scalar::silu_mul`] in RVV: `gate = gate / (1 + exp(−gate)) · up`.
pub(crate) fn silu_mul_rvv(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    // SAFETY: V is present (see `kernels::table`); the loop reads `n` f32s
    // of up and reads and writes `n` of gate, `vl` at a time, advancing by
    // exactly what it touched.
    unsafe {
        exp_loop!(
            [],
            ["vle32.v v2, ({g})", "vle32.v v4, ({u})", "vfneg.v v6, v2"],
            [
                "vfadd.vf v14, v14, {one}",
                "vfdiv.vv v14, v2, v14",
                "vfmul.vv v14, v14, v4",
                "vse32.v v14, ({g})",
                "slli {s}, {t}, 2",
                "add {g}, {g}, {s}",
                "add {u}, {u}, {s}",
                "sub {n}, {n}, {t}"
            ],
            [],
            g = inout(reg) gate.as_mut_ptr() => _,
            u = inout(reg) up.as_ptr() => _,
            n = inout(reg) n => _,
            s = out(reg) _,
            out("v2") _, out("v3") _, out("v4") _, out("v5") _,
        );
    }
}

/// [`scalar::exp_shifted`] in RVV: `x[i] = exp(x[i] − max)`, returning Σ.
fn exp_shifted_rvv(x: &mut [f32], max: f32) -> f32 {
    let n = x.len();
    let sum: f32;
    // SAFETY: V is present (see `kernels::table`); the loop reads and
    // writes the `n` f32s of x, `vl` at a time, advancing by exactly what
    // it touched.
    unsafe {
        exp_loop!(
            ["vsetvli {t}, zero, e32, m2, ta, ma", "vmv.v.i v24, 0"],
            ["vle32.v v2, ({x})", "vfsub.vf v6, v2, {max}"],
            [
                "vse32.v v14, ({x})",
                // Tail-undisturbed: lanes past a short last `vl` keep their sums.
                "vsetvli zero, {t}, e32, m2, tu, mu",
                "vfadd.vv v24, v24, v14",
                "slli {s}, {t}, 2",
                "add {x}, {x}, {s}",
                "sub {n}, {n}, {t}"
            ],
            [
                "vsetvli {t}, zero, e32, m2, ta, ma",
                "vmv.s.x v26, zero",
                "vfredusum.vs v26, v24, v26",
                "vfmv.f.s {sum}, v26"
            ],
            x = inout(reg) x.as_mut_ptr() => _,
            n = inout(reg) n => _,
            max = in(freg) max,
            sum = lateout(freg) sum,
            s = out(reg) _,
            out("v2") _, out("v3") _, out("v24") _, out("v25") _, out("v26") _,
        );
    }
    sum
}
