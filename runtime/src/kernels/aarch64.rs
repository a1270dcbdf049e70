//! aarch64 kernels: NEON, and dotprod (`sdot`) where the CPU has it.
//!
//! Quantized rows are walked in groups of four blocks, four rows at a time
//! (the rows share the activation loads). Each group yields one `int32x4`
//! holding the four blocks' exact integer dot products, which converts to
//! f32 and meets the four scale products `d_w · d_x` in one multiply-add.
//! So per block the arithmetic is the scalar kernel's; only the order of
//! the float sums differs. A last group of fewer than four blocks is copied
//! into zero-padded stack buffers (zero scales and zero activations add
//! nothing), so no load ever leaves the row or the activations.
//!
//! - dotprod: `sdot` (four i8 products into each i32 lane). The intrinsic
//!   `vdotq_s32` is still unstable, so it is emitted with `asm!` inside
//!   functions compiled with `target_feature(enable = "dotprod")`. int4
//!   blocks use the stored unsigned nibbles (`q + 8`, 0..=15, valid as i8)
//!   and subtract `8 · Σx` per block as an integer: that term depends on the
//!   activations only, so it is computed once per group for all four rows.
//! - NEON: widening multiplies (`smull`) and pairwise widening adds; int4
//!   nibbles are made signed first (`q = nibble − 8`). Exact for every i8
//!   input, −128 included.
//!
//! MXFP4 rows (gpt-oss) decode their nibbles with one `tbl` per nibble set
//! into FP4 values doubled (signed, exact as i8), then take the same paths.
//!
//! Block scales are f16; four convert with one `fcvtl`, also via `asm!`
//! because `vcvt_f32_f16` became stable only in Rust 1.94 (the crate's MSRV
//! is older). f16 and f32 rows use four f32 accumulators, with a scalar tail.
//!
//! Every function here is reached only through [`upgrade`], which installs
//! it after checking the CPU's features; tests compare each with `scalar`.

use core::arch::aarch64::*;
use core::arch::asm;

use half::f16;

use super::{check_float, check_quantized, Activations, BatchActs, Kernels};
use crate::quant::{
    mxfp4_half_scale, BLOCK_LEN, FP4_TIMES_TWO, MXFP4_BLOCK_BYTES, Q4_BLOCK_BYTES, Q4_VALUE_BYTES,
    Q8_BLOCK_BYTES, Q8_VALUE_BYTES,
};

/// True when the CPU has Advanced SIMD (every aarch64 Linux CPU does).
fn has_neon() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_aarch64_feature_detected!("neon")
        } else {
            cfg!(target_feature = "neon")
        }
    }
}

/// True when the CPU has the dot product instructions (`sdot`, Armv8.2+).
fn has_dotprod() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_aarch64_feature_detected!("dotprod")
        } else {
            cfg!(target_feature = "dotprod")
        }
    }
}

/// Replaces the entries this CPU can run faster.
pub fn upgrade(mut k: Kernels) -> Kernels {
    if !has_neon() {
        return k;
    }
    k.name = "aarch64-neon";
    k.matvec_q4 = matvec_q4_neon;
    k.matvec_q8 = matvec_q8_neon;
    k.matvec_f16 = matvec_f16_neon;
    k.matvec_f32 = matvec_f32_neon;
    k.matvec_mxfp4 = matvec_mxfp4_neon;
    k.matmul_mxfp4 = matmul_mxfp4_neon;
    if has_dotprod() {
        k.name = "aarch64-neon-dotprod";
        k.matvec_q4 = matvec_q4_dotprod;
        k.matvec_q8 = matvec_q8_dotprod;
        k.matvec_mxfp4 = matvec_mxfp4_dotprod;
        k.matmul_mxfp4 = matmul_mxfp4_dotprod;
    }
    k
}

/// Rows computed together: they share the activation loads (and, for int4
/// with `sdot`, the `8 · Σx` correction).
const ROWS: usize = 4;
/// Blocks per step: their four integer sums fill one `int32x4`.
const GROUP: usize = 4;

/// `acc + a · b` with four i8 products summed into each i32 lane.
///
/// Safety: the CPU has dotprod. (`target_feature` makes the assembler
/// accept `sdot`; the function inlines into the dotprod kernels.)
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the caller guarantees dotprod.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four little-endian f16 values at `p` (any alignment) as f32.
///
/// Safety: `p` points at 8 readable bytes.
#[inline(always)]
unsafe fn f16x4(p: *const u8) -> float32x4_t {
    let h = vld1_u8(p);
    let f: float32x4_t;
    // SAFETY: `fcvtl` (half to single, base Armv8 FP/SIMD) only reads and
    // writes registers.
    asm!(
        "fcvtl {f:v}.4s, {h:v}.4h",
        f = lateout(vreg) f,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    f
}

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

/// The exact integer dot products of one group of four blocks.
trait GroupDot {
    /// Value bytes of one block of this format.
    const VALUE_BYTES: usize;
    /// Lane `k` = Σ w·x over block `k`, for `GROUP` blocks of weight values
    /// at `w` and `GROUP * BLOCK_LEN` activations at `x`.
    ///
    /// Safety: both ranges are readable and the CPU has the features the
    /// implementation uses (it is inlined into a matching kernel).
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t;
}

/// Lane `k` of the result = the sum of all lanes of `v[k]`.
#[inline(always)]
unsafe fn fold4(v: [int32x4_t; GROUP]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// int8 rows with `sdot`.
struct Q8Sdot;

impl GroupDot for Q8Sdot {
    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let (w, x) = (w.add(k * Q8_VALUE_BYTES) as *const i8, x.add(k * BLOCK_LEN));
            let acc = sdot(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
            *dot = sdot(acc, vld1q_s8(w.add(16)), vld1q_s8(x.add(16)));
        }
        fold4(dots)
    }
}

/// int4 rows with `sdot` on the unsigned nibbles, then `− 8 · Σx`.
struct Q4Sdot;

impl GroupDot for Q4Sdot {
    const VALUE_BYTES: usize = Q4_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let low4 = vdupq_n_u8(0x0f);
        let eight = vdupq_n_s8(8);
        let mut dots = [vdupq_n_s32(0); GROUP];
        let mut corr = [vdupq_n_s32(0); GROUP];
        for k in 0..GROUP {
            let v = vld1q_u8(w.add(k * Q4_VALUE_BYTES));
            let lo = vreinterpretq_s8_u8(vandq_u8(v, low4));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            let (x0, x1) = (
                vld1q_s8(x.add(k * BLOCK_LEN)),
                vld1q_s8(x.add(k * BLOCK_LEN + 16)),
            );
            dots[k] = sdot(sdot(vdupq_n_s32(0), lo, x0), hi, x1);
            // Depends on the activations only: the compiler computes it
            // once for the `ROWS` rows (the asm is `pure, nomem`).
            corr[k] = sdot(sdot(vdupq_n_s32(0), eight, x0), eight, x1);
        }
        vsubq_s32(fold4(dots), fold4(corr))
    }
}

/// int8 rows with widening multiplies (no `sdot`).
struct Q8Neon;

impl GroupDot for Q8Neon {
    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let (w, x) = (w.add(k * Q8_VALUE_BYTES) as *const i8, x.add(k * BLOCK_LEN));
            let (w0, w1) = (vld1q_s8(w), vld1q_s8(w.add(16)));
            let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
            // Each i16 lane holds one product (|p| <= 128²): exact.
            let acc = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
            let acc = vpadalq_s16(acc, vmull_high_s8(w0, x0));
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
            *dot = vpadalq_s16(acc, vmull_high_s8(w1, x1));
        }
        fold4(dots)
    }
}

/// int4 rows with widening multiplies on signed nibbles (no `sdot`).
struct Q4Neon;

impl GroupDot for Q4Neon {
    const VALUE_BYTES: usize = Q4_VALUE_BYTES;

    #[inline(always)]
    unsafe fn group(w: *const u8, x: *const i8) -> int32x4_t {
        let low4 = vdupq_n_u8(0x0f);
        let eight = vdupq_n_s8(8);
        let mut dots = [vdupq_n_s32(0); GROUP];
        for (k, dot) in dots.iter_mut().enumerate() {
            let v = vld1q_u8(w.add(k * Q4_VALUE_BYTES));
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low4)), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
            let (x0, x1) = (
                vld1q_s8(x.add(k * BLOCK_LEN)),
                vld1q_s8(x.add(k * BLOCK_LEN + 16)),
            );
            // Four products per i16 lane, each |p| <= 8 · 128: exact.
            let p = vmull_s8(vget_low_s8(lo), vget_low_s8(x0));
            let p = vmlal_high_s8(p, lo, x0);
            let p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(x1));
            *dot = vpaddlq_s16(vmlal_high_s8(p, hi, x1));
        }
        fold4(dots)
    }
}

/// `out[r] = row r · x` for quantized rows of `blocks` blocks, with the
/// integer work of format/engine `G`.
///
/// Safety: the caller has run [`check`] for `G`'s block size, and the CPU
/// has every feature `G` uses (the caller's `target_feature` set, into
/// which this is inlined).
#[inline(always)]
unsafe fn matvec_blocks<G: GroupDot>(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let full = blocks / GROUP;
    let tail = blocks % GROUP;
    let tail_start = full * GROUP;
    // The last, partial group of activations, zero padded once for all rows.
    let mut x_pad = [0i8; GROUP * BLOCK_LEN];
    let mut dx_pad = [0.0f32; GROUP];
    x_pad[..tail * BLOCK_LEN].copy_from_slice(&x.qs[tail_start * BLOCK_LEN..blocks * BLOCK_LEN]);
    dx_pad[..tail].copy_from_slice(&x.scales[tail_start..blocks]);
    let xq = x.qs.as_ptr();
    for (chunk, outs) in out.chunks_mut(ROWS).enumerate() {
        let nrows = outs.len();
        // Rows past `nrows` repeat the chunk's last row (computed, never
        // stored), so every pointer is the start of a row inside `w`
        // (`check`: w holds out.len() rows of row_bytes).
        let rows: [*const u8; ROWS] = core::array::from_fn(|i| {
            w.as_ptr()
                .add((chunk * ROWS + i.min(nrows - 1)) * row_bytes)
        });
        let mut acc = [vdupq_n_f32(0.0); ROWS];
        for g in 0..full {
            let b = g * GROUP;
            // Blocks b..b + 4 are inside the row and the activations.
            let dx = vld1q_f32(x.scales.as_ptr().add(b));
            let xg = xq.add(b * BLOCK_LEN);
            for i in 0..ROWS {
                let dw = f16x4(rows[i].add(2 * b));
                let sums = G::group(rows[i].add(2 * blocks + b * G::VALUE_BYTES), xg);
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(sums), vmulq_f32(dw, dx));
            }
        }
        if tail > 0 {
            let dx = vld1q_f32(dx_pad.as_ptr());
            for i in 0..ROWS {
                // This row's last `tail` blocks, zero padded to a group.
                let mut w_pad = [0u8; GROUP * Q8_VALUE_BYTES];
                let mut dw_pad = [0u8; 2 * GROUP];
                let n = tail * G::VALUE_BYTES;
                let values = rows[i].add(2 * blocks + tail_start * G::VALUE_BYTES);
                w_pad[..n].copy_from_slice(core::slice::from_raw_parts(values, n));
                let scales = rows[i].add(2 * tail_start);
                dw_pad[..2 * tail].copy_from_slice(core::slice::from_raw_parts(scales, 2 * tail));
                let dw = f16x4(dw_pad.as_ptr());
                let sums = G::group(w_pad.as_ptr(), x_pad.as_ptr());
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(sums), vmulq_f32(dw, dx));
            }
        }
        for (o, a) in outs.iter_mut().zip(acc) {
            *o = vaddvq_f32(a);
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_dotprod(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    unsafe { matvec_blocks::<Q4Sdot>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_dotprod(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    unsafe { matvec_blocks::<Q8Sdot>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn q4_neon(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    unsafe { matvec_blocks::<Q4Neon>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn q8_neon(w: &[u8], row_bytes: usize, blocks: usize, x: &Activations<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    unsafe { matvec_blocks::<Q8Neon>(w, row_bytes, blocks, x, out) }
}

fn matvec_q4_dotprod(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `upgrade` only when the CPU has NEON and dotprod;
    // `check` proved the buffer sizes the loads use.
    unsafe { q4_dotprod(w, row_bytes, blocks, x, out) }
}

fn matvec_q8_dotprod(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_dotprod`.
    unsafe { q8_dotprod(w, row_bytes, blocks, x, out) }
}

fn matvec_q4_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `upgrade` only when the CPU has NEON; `check`
    // proved the buffer sizes the loads use.
    unsafe { q4_neon(w, row_bytes, blocks, x, out) }
}

fn matvec_q8_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_neon`.
    unsafe { q8_neon(w, row_bytes, blocks, x, out) }
}

fn matvec_mxfp4_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_neon`.
    unsafe { mxfp4_neon(w, row_bytes, blocks, x, out) }
}

fn matmul_mxfp4_neon(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    super::matmul_by_tokens(
        matvec_mxfp4_neon,
        crate::DType::Mxfp4,
        w,
        cols,
        rows,
        x,
        out,
    )
}

fn matmul_mxfp4_dotprod(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    super::matmul_by_tokens(
        matvec_mxfp4_dotprod,
        crate::DType::Mxfp4,
        w,
        cols,
        rows,
        x,
        out,
    )
}

fn matvec_mxfp4_dotprod(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, MXFP4_BLOCK_BYTES);
    // SAFETY: as for `matvec_q4_dotprod`.
    unsafe { mxfp4_dotprod(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn mxfp4_neon(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, NEON present).
    mxfp4_rows::<false>(w, row_bytes, blocks, x, out)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn mxfp4_dotprod(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    mxfp4_rows::<true>(w, row_bytes, blocks, x, out)
}

/// MXFP4 rows: one table lookup (`tbl`) turns each nibble into its FP4
/// value doubled (−12..=12, exact as i8) and `zip` puts the low (even) and
/// high (odd) elements back in order. Blocks go four at a time like the
/// int4 kernels: their integer dots with the int8 activations (`sdot`, or
/// widening multiplies: four products of at most 12 · 128 per i16 lane)
/// fold into one `int32x4` that meets the four scale products in one
/// multiply-add; a last partial group goes block by block.
///
/// Safety: the caller has run `check_quantized` for MXFP4 blocks and the
/// CPU has NEON (and dotprod when `DOTPROD`); inlined into a function with
/// those features.
#[inline(always)]
unsafe fn mxfp4_rows<const DOTPROD: bool>(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let table = vld1q_s8(FP4_TIMES_TWO.as_ptr());
    let low4 = vdupq_n_u8(0x0f);
    let xq = x.qs.as_ptr();
    // Block `b`'s integer dot: 16 value bytes at `v`, 32 activations at `xb`.
    let dot = |v: *const u8, xb: *const i8| -> int32x4_t {
        let v = vld1q_u8(v);
        let lo = vqtbl1q_s8(table, vandq_u8(v, low4));
        let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(v));
        let (w0, w1) = (vzip1q_s8(lo, hi), vzip2q_s8(lo, hi));
        let (x0, x1) = (vld1q_s8(xb), vld1q_s8(xb.add(16)));
        if DOTPROD {
            sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1)
        } else {
            let p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
            let p = vmlal_high_s8(p, w0, x0);
            let p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(x1));
            vpaddlq_s16(vmlal_high_s8(p, w1, x1))
        }
    };
    let full = blocks / GROUP * GROUP;
    for (r, o) in out.iter_mut().enumerate() {
        // Row r: `blocks` scale bytes, then 16 bytes a block (inside `w`).
        let row = w.as_ptr().add(r * row_bytes);
        let values = row.add(blocks);
        let mut acc = vdupq_n_f32(0.0);
        for b in (0..full).step_by(GROUP) {
            let dots: [int32x4_t; GROUP] = core::array::from_fn(|k| {
                dot(
                    values.add((b + k) * Q4_VALUE_BYTES),
                    xq.add((b + k) * BLOCK_LEN),
                )
            });
            let dw: [f32; GROUP] = core::array::from_fn(|k| mxfp4_half_scale(*row.add(b + k)));
            let scale = vmulq_f32(vld1q_f32(dw.as_ptr()), vld1q_f32(x.scales.as_ptr().add(b)));
            acc = vfmaq_f32(acc, vcvtq_f32_s32(fold4(dots)), scale);
        }
        let mut tail = vaddvq_f32(acc);
        for b in full..blocks {
            let sum = vaddvq_s32(dot(values.add(b * Q4_VALUE_BYTES), xq.add(b * BLOCK_LEN)));
            tail += mxfp4_half_scale(*row.add(b)) * x.scales[b] * sum as f32;
        }
        *o = tail;
    }
}

fn matvec_f16_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 2);
    // SAFETY: as for `matvec_q4_neon` (`check_float` for the sizes).
    unsafe { f16_neon(w, row_bytes, cols, x.f32s, out) }
}

fn matvec_f32_neon(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let cols = check_float(w, row_bytes, x, out, 4);
    // SAFETY: as for `matvec_q4_neon` (`check_float` for the sizes).
    unsafe { f32_neon(w, row_bytes, cols, x.f32s, out) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::compare_with_scalar;
    use crate::kernels::{scalar, MatvecFn};

    /// The table must follow the CPU: `MOTE_EXPECT_KERNELS` names it when
    /// set (`targets/cross-test.sh` sets it for each qemu CPU); unset, any
    /// fast table will do (every aarch64 CPU has NEON).
    #[test]
    fn detected_kernels_are_the_expected_ones_and_match_scalar() {
        let fast = upgrade(Kernels::scalar());
        let want = std::env::var("MOTE_EXPECT_KERNELS");
        std::println!("kernels: {} (expected: {want:?})", fast.name);
        match want {
            Ok(want) => assert_eq!(fast.name, want),
            Err(_) => assert_ne!(fast.name, "scalar"),
        }
        compare_with_scalar(&fast);
        crate::kernels::tests::compare_matmul_with_scalar(&fast);
    }

    /// The NEON fallback is checked even on CPUs that have dotprod.
    #[test]
    fn neon_fallback_matches_scalar() {
        let mut k = Kernels::scalar();
        k.name = "aarch64-neon (forced)";
        k.matvec_q4 = matvec_q4_neon;
        k.matvec_q8 = matvec_q8_neon;
        k.matvec_f16 = matvec_f16_neon;
        k.matvec_f32 = matvec_f32_neon;
        k.matvec_mxfp4 = matvec_mxfp4_neon;
        k.matmul_mxfp4 = matmul_mxfp4_neon;
        compare_with_scalar(&k);
        crate::kernels::tests::compare_matmul_with_scalar(&k);
    }

    /// Integer sums must be exact at the i8 extremes (−128 · −128 included),
    /// which the quantizers never produce. All values equal, so every float
    /// step is exact too and the results must be identical.
    #[test]
    fn extreme_int8_values_are_exact() {
        let blocks = 7;
        let qs = std::vec![-128i8; blocks * BLOCK_LEN];
        let ones = std::vec![1.0f32; blocks];
        let x = Activations {
            f32s: &[],
            qs: &qs,
            scales: &ones,
            sums: &ones, // unused by these kernels
        };
        let mut q8: std::vec::Vec<(&str, MatvecFn)> = std::vec![("neon", matvec_q8_neon)];
        let mut q4: std::vec::Vec<(&str, MatvecFn)> = std::vec![("neon", matvec_q4_neon)];
        if has_dotprod() {
            q8.push(("dotprod", matvec_q8_dotprod));
            q4.push(("dotprod", matvec_q4_dotprod));
        }
        // int8 −128 and 127; int4 nibbles 0 and 15 (q = −8 and 7).
        for (b8, b4) in [(0x80u8, 0x00u8), (0x7f, 0xff)] {
            for (byte, block_bytes, reference, fast) in [
                (b8, Q8_BLOCK_BYTES, scalar::matvec_q8 as MatvecFn, &q8),
                (b4, Q4_BLOCK_BYTES, scalar::matvec_q4, &q4),
            ] {
                let mut row = std::vec![byte; blocks * block_bytes];
                for b in 0..blocks {
                    row[2 * b..2 * b + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                    // f16 1.0
                }
                let mut want = [0.0f32];
                reference(&row, row.len(), &x, &mut want);
                for (name, f) in fast {
                    let mut got = [0.0f32];
                    f(&row, row.len(), &x, &mut got);
                    assert_eq!(got, want, "{name}, byte {byte:#x}");
                }
            }
        }
    }

    /// Weights at an odd address (never so in model files) still give the
    /// scalar result.
    #[test]
    fn misaligned_weights_match_scalar() {
        crate::kernels::tests::compare_misaligned_with_scalar(&upgrade(Kernels::scalar()));
    }
}
