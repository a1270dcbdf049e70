//! f32 weights: the NEON matvec (and a batched product of it); and the
//! f32 work around the products in NEON: attention's scores and values
//! for `scalar::attend_with` (a head is only 32 to 128 wide, so per-call
//! overhead counts, and 32/64-wide queries and value sums stay in
//! registers across positions), `exp4` for softmax and SwiGLU.

use core::arch::aarch64::*;

use crate::kernels::{check_float, scalar, Activations};

/// `Σ a[i] · b[i]` over the shorter length, with four `float32x4` sums.
fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let main = n - n % 16;
    // SAFETY: register-only NEON (installed after `has_neon`).
    let mut acc = unsafe { [vdupq_n_f32(0.0); 4] };
    let mut i = 0;
    while i < main {
        // SAFETY: i + 16 <= n, so the 16 values at i are inside both slices;
        // NEON is part of every aarch64 target this crate builds for.
        unsafe {
            for (k, s) in acc.iter_mut().enumerate() {
                let (x, y) = (
                    vld1q_f32(a.as_ptr().add(i + 4 * k)),
                    vld1q_f32(b.as_ptr().add(i + 4 * k)),
                );
                *s = vfmaq_f32(*s, x, y);
            }
        }
        i += 16;
    }
    let tail: f32 = a[main..n].iter().zip(&b[main..n]).map(|(x, y)| x * y).sum();
    // SAFETY: register-only NEON.
    unsafe {
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        )) + tail
    }
}

/// `y[i] += a · x[i]` over the shorter length.
fn axpy_neon(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let main = n - n % 8;
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= n: the 8 values at i are inside both slices.
        unsafe {
            let (yp, xp) = (y.as_mut_ptr().add(i), x.as_ptr().add(i));
            vst1q_f32(yp, vfmaq_n_f32(vld1q_f32(yp), vld1q_f32(xp), a));
            vst1q_f32(
                yp.add(4),
                vfmaq_n_f32(vld1q_f32(yp.add(4)), vld1q_f32(xp.add(4)), a),
            );
        }
        i += 8;
    }
    y[main..n]
        .iter_mut()
        .zip(&x[main..n])
        .for_each(|(y, &x)| *y += a * x);
}

/// `Σ a[i] · b[i]` over exactly `D` values (a multiple of 16), unrolled.
#[inline(always)]
fn dot_n<const D: usize>(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (&a[..D], &b[..D]);
    // SAFETY: both slices hold D values, read in the 16-value steps below
    // (D is a multiple of 16); register-only NEON otherwise.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..D).step_by(16) {
            for (k, s) in acc.iter_mut().enumerate() {
                let (x, y) = (
                    vld1q_f32(a.as_ptr().add(i + 4 * k)),
                    vld1q_f32(b.as_ptr().add(i + 4 * k)),
                );
                *s = vfmaq_f32(*s, x, y);
            }
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    }
}

/// The scores of a head `4 · N` floats wide (`N` a multiple of 4, at most
/// 16): the query stays in `N` registers for every position.
#[inline(always)]
fn scores_n<const N: usize>(
    q: &[f32],
    cache: scalar::CacheView<'_>,
    scale: f32,
    scores: &mut [f32],
) {
    let q = &q[..4 * N];
    // SAFETY: `q` and every key slice hold 4·N floats, read 4 at a time;
    // register-only NEON otherwise.
    unsafe {
        let qv: [float32x4_t; N] = core::array::from_fn(|j| vld1q_f32(q.as_ptr().add(4 * j)));
        for (t, s) in scores.iter_mut().enumerate() {
            let at = cache.at(t);
            let k = &cache.k[at..at + 4 * N];
            let mut acc = [vdupq_n_f32(0.0); 4];
            for (j, qj) in qv.iter().enumerate() {
                acc[j % 4] = vfmaq_f32(acc[j % 4], *qj, vld1q_f32(k.as_ptr().add(4 * j)));
            }
            *s = vaddvq_f32(vaddq_f32(
                vaddq_f32(acc[0], acc[1]),
                vaddq_f32(acc[2], acc[3]),
            )) * scale;
        }
    }
}

/// `out[col .. col + 4·N] = Σ scores[t] v_t[col ..]` with the sums in `N`
/// registers (at most 16) across the positions.
#[inline(always)]
fn values_n<const N: usize>(
    scores: &[f32],
    cache: scalar::CacheView<'_>,
    out: &mut [f32],
    col: usize,
) {
    let out = &mut out[col..col + 4 * N];
    // SAFETY: `out` and every value slice hold 4·N floats, read and written
    // 4 at a time; register-only NEON otherwise.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); N];
        for (t, &p) in scores.iter().enumerate() {
            let at = cache.at(t) + col;
            let v = &cache.v[at..at + 4 * N];
            for (j, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_n_f32(*a, vld1q_f32(v.as_ptr().add(4 * j)), p);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * j), *a);
        }
    }
}

/// [`scalar::exp`] of four values: the same range reduction and
/// polynomial, with fused multiply-adds where the scalar code rounds twice
/// (results may differ from it in the last bits). Below ln 2^-126 it is 0,
/// above ln f32::MAX infinity.
#[inline(always)]
fn exp4(x: float32x4_t) -> float32x4_t {
    const SHIFT: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_84;
    // SAFETY: register-only NEON (installed after `has_neon`).
    unsafe {
        let xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(LO)), vdupq_n_f32(HI));
        let t = vfmaq_n_f32(vdupq_n_f32(SHIFT), xc, core::f32::consts::LOG2_E);
        let n = vsubq_f32(t, vdupq_n_f32(SHIFT));
        let r = vfmsq_n_f32(vfmsq_n_f32(xc, n, 0.693_359_4), n, -2.121_944_4e-4);
        let mut p = vfmaq_n_f32(vdupq_n_f32(1.398_2e-3), r, 1.987_569_2e-4);
        for c in [8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let e = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
        let ni = vsubq_s32(
            vreinterpretq_s32_f32(t),
            vdupq_n_s32(SHIFT.to_bits() as i32),
        );
        let half = vshrq_n_s32::<1>(ni);
        let pow2 =
            |k: int32x4_t| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))));
        let y = vmulq_f32(vmulq_f32(e, pow2(half)), pow2(vsubq_s32(ni, half)));
        let y = vbslq_f32(vcltq_f32(x, vdupq_n_f32(LO)), vdupq_n_f32(0.0), y);
        vbslq_f32(vcgtq_f32(x, vdupq_n_f32(HI)), vdupq_n_f32(f32::INFINITY), y)
    }
}

/// `x[i] = exp(x[i] − max)`, returning their sum ([`scalar::exp_shifted`]).
fn exp_shifted_neon(x: &mut [f32], max: f32) -> f32 {
    let main = x.len() - x.len() % 4;
    // SAFETY: register-only NEON.
    let mut sum = unsafe { vdupq_n_f32(0.0) };
    for chunk in x[..main].chunks_exact_mut(4) {
        // SAFETY: `chunk` holds 4 floats.
        unsafe {
            let e = exp4(vsubq_f32(vld1q_f32(chunk.as_ptr()), vdupq_n_f32(max)));
            vst1q_f32(chunk.as_mut_ptr(), e);
            sum = vaddq_f32(sum, e);
        }
    }
    // SAFETY: register-only NEON.
    let sum = unsafe { vaddvq_f32(sum) };
    sum + scalar::exp_shifted(&mut x[main..], max)
}

/// `gate = silu(gate) · up` ([`scalar::silu_mul`]) with [`exp4`].
pub(crate) fn silu_mul_neon(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let main = n - n % 4;
    for (g, u) in gate[..main].chunks_exact_mut(4).zip(up.chunks_exact(4)) {
        // SAFETY: both chunks hold 4 floats; register-only NEON otherwise.
        unsafe {
            let x = vld1q_f32(g.as_ptr());
            let sig = vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp4(vnegq_f32(x))));
            vst1q_f32(g.as_mut_ptr(), vmulq_f32(sig, vld1q_f32(u.as_ptr())));
        }
    }
    scalar::silu_mul(&mut gate[main..n], &up[main..n]);
}

/// [`scalar::attend`] with NEON scores and values; heads 32 and 64 wide
/// keep the query or the sums in registers, 128 wide in two column halves.
/// An f16 or int8 cache converts blocks of a row and uses NEON's dot and
/// `y += a·x` on them.
pub(crate) fn attend_neon(
    q: &[f32],
    cache: scalar::KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let Some(cache) = cache.f32() else {
        return scalar::attend_stored(
            dot_neon,
            axpy_neon,
            exp_shifted_neon,
            q,
            cache,
            scale,
            sink,
            scores,
            out,
        );
    };
    // One softmax (`scalar::attend_with`), the scores and values steps by head width.
    macro_rules! with {
        ($scores:expr, $values:expr) => {
            scalar::attend_with(
                $scores,
                exp_shifted_neon,
                $values,
                q,
                cache,
                scale,
                sink,
                scores,
                out,
            )
        };
    }
    match (q.len(), out.len()) {
        (32, 32) => with!(scores_n::<8>, |s, c, o| values_n::<8>(s, c, o, 0)),
        (64, 64) => with!(scores_n::<16>, |s, c, o| values_n::<16>(s, c, o, 0)),
        (128, 128) => with!(
            |q, c, scale, s| scalar::scores_by(dot_n::<128>, q, c, scale, s),
            |s, c, o| {
                values_n::<16>(s, c, o, 0);
                values_n::<16>(s, c, o, 64);
            }
        ),
        _ => with!(
            |q, c, scale, s| scalar::scores_by(dot_neon, q, c, scale, s),
            |s, c, o| scalar::values_by(axpy_neon, s, c, o)
        ),
    }
}

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

crate::kernels::matmul_per_token!(matmul_f32_neon, matvec_f32_neon, F32);
