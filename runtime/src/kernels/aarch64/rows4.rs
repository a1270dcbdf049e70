//! int4 and int8 matrices in the rows4 layout (`quant::rows4`), with
//! dotprod: the matvec and the batched product.
//!
//! A 16-byte load of a rows4 block holds the same four value positions of
//! four rows, so one `sdot` by element (`sdot acc.4s, w.16b, x.4b[lane]`)
//! adds four products to each of the four rows' lanes: a block's exact
//! integer sums for four rows come out of eight `sdot`s in one register,
//! with no zeroed accumulator and fold per row (the planar kernels' cost).
//! The rows' four scales are one 8-byte load and one `fcvtl`.
//!
//! int4 nibbles are stored as two's-complement `q` (XOR `0x88`), so `shl
//! #4` gives the low ones and `and #0xf0` the high ones as `16 · q`, exact
//! in i8; the factor 16 leaves with one multiply per four rows at the end.
//!
//! The batched product decodes each block's operands once for up to four
//! tokens. Rows after the last whole group are planar and take the planar
//! dotprod matvec.

use core::arch::aarch64::*;
use core::arch::asm;

use super::f16x4;
use super::q4::matvec_q4_dotprod;
use super::q8::matvec_q8_dotprod;
use crate::format::tensor::ROWS4;
use crate::kernels::{check_batch, check_quantized, Activations, BatchActs, MatvecFn};
use crate::quant::{rows4_block_bytes, BLOCK_LEN, Q4_BLOCK_BYTES, Q8_BLOCK_BYTES};
use crate::DType;

/// One weight format in the rows4 layout.
trait Rows4Format {
    /// The block format.
    const DTYPE: DType;
    /// Bytes of one planar block (a group's block is four of them).
    const BLOCK_BYTES: usize;
    /// What the integer sums are multiplied by (int4's operands are `16 · q`).
    const SUM_SCALE: f32;
    /// The planar matvec for the rows after the groups.
    const PLANAR: MatvecFn;
    /// The eight `sdot` operands of the block values at `v`: operand `m`
    /// meets activations `4m .. 4m + 4`.
    ///
    /// Safety: `4 · VALUE_BYTES` bytes at `v` are readable; the CPU has NEON.
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8];
}

struct Q4Rows4;

impl Rows4Format for Q4Rows4 {
    const DTYPE: DType = DType::Q4;
    const BLOCK_BYTES: usize = Q4_BLOCK_BYTES;
    const SUM_SCALE: f32 = 1.0 / 16.0;
    const PLANAR: MatvecFn = matvec_q4_dotprod;

    #[inline(always)]
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8] {
        let high = vdupq_n_s8(0xf0u8 as i8);
        // Grain j's low nibbles are elements 4j.., its high ones 16 + 4j..
        let g: [int8x16_t; 4] = core::array::from_fn(|j| vld1q_s8(v.add(16 * j) as *const i8));
        [
            vshlq_n_s8::<4>(g[0]),
            vshlq_n_s8::<4>(g[1]),
            vshlq_n_s8::<4>(g[2]),
            vshlq_n_s8::<4>(g[3]),
            vandq_s8(g[0], high),
            vandq_s8(g[1], high),
            vandq_s8(g[2], high),
            vandq_s8(g[3], high),
        ]
    }
}

struct Q8Rows4;

impl Rows4Format for Q8Rows4 {
    const DTYPE: DType = DType::Q8;
    const BLOCK_BYTES: usize = Q8_BLOCK_BYTES;
    const SUM_SCALE: f32 = 1.0;
    const PLANAR: MatvecFn = matvec_q8_dotprod;

    #[inline(always)]
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8] {
        core::array::from_fn(|m| vld1q_s8(v.add(16 * m) as *const i8))
    }
}

/// Lane `r` = Σ over one block of operand bytes of row `r` × the 32
/// activations at `x`: eight `sdot`s by element.
///
/// Safety: 32 bytes at `x` are readable; the CPU has dotprod (inlined into
/// a kernel compiled with it).
#[inline(always)]
unsafe fn block_sums(w: &[int8x16_t; 8], x: *const i8) -> int32x4_t {
    let acc: int32x4_t;
    // SAFETY: reads the 32 bytes at `x` (the caller's guarantee); the rest
    // is register-only.
    asm!(
        "ldp {x0:q}, {x1:q}, [{x}]",
        "movi {acc:v}.4s, #0",
        "sdot {acc:v}.4s, {w0:v}.16b, {x0:v}.4b[0]",
        "sdot {acc:v}.4s, {w1:v}.16b, {x0:v}.4b[1]",
        "sdot {acc:v}.4s, {w2:v}.16b, {x0:v}.4b[2]",
        "sdot {acc:v}.4s, {w3:v}.16b, {x0:v}.4b[3]",
        "sdot {acc:v}.4s, {w4:v}.16b, {x1:v}.4b[0]",
        "sdot {acc:v}.4s, {w5:v}.16b, {x1:v}.4b[1]",
        "sdot {acc:v}.4s, {w6:v}.16b, {x1:v}.4b[2]",
        "sdot {acc:v}.4s, {w7:v}.16b, {x1:v}.4b[3]",
        x = in(reg) x,
        x0 = out(vreg) _,
        x1 = out(vreg) _,
        acc = out(vreg) acc,
        w0 = in(vreg) w[0],
        w1 = in(vreg) w[1],
        w2 = in(vreg) w[2],
        w3 = in(vreg) w[3],
        w4 = in(vreg) w[4],
        w5 = in(vreg) w[5],
        w6 = in(vreg) w[6],
        w7 = in(vreg) w[7],
        options(pure, readonly, nostack, preserves_flags)
    );
    acc
}

/// `out[r] = row r · x` for `F`'s rows4 matrix `w`.
///
/// Safety: `check_quantized` passed for `F::BLOCK_BYTES`; the CPU has dotprod.
#[inline(always)]
unsafe fn matvec<F: Rows4Format>(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let groups = out.len() / ROWS4;
    let block_bytes = rows4_block_bytes(F::DTYPE);
    let (grouped, rest) = out.split_at_mut(groups * ROWS4);
    for (g, outs) in grouped.chunks_exact_mut(ROWS4).enumerate() {
        // Group g's blocks are inside `w` (w holds out.len() rows of row_bytes).
        let group = w.as_ptr().add(g * ROWS4 * row_bytes);
        let mut acc = vdupq_n_f32(0.0);
        for b in 0..blocks {
            let block = group.add(b * block_bytes);
            let dw = f16x4(block);
            let sums = block_sums(
                &F::operands(block.add(2 * ROWS4)),
                x.qs.as_ptr().add(b * BLOCK_LEN),
            );
            acc = vfmaq_f32(
                acc,
                vcvtq_f32_s32(sums),
                vmulq_n_f32(dw, *x.scales.get_unchecked(b)),
            );
        }
        vst1q_f32(outs.as_mut_ptr(), vmulq_n_f32(acc, F::SUM_SCALE));
    }
    if !rest.is_empty() {
        (F::PLANAR)(&w[groups * ROWS4 * row_bytes..], row_bytes, x, rest);
    }
}

/// `out[t · rows + r] = row r · token t` for `F`'s rows4 matrix `w`, tiles
/// of four rows by `T` tokens starting at token `t0`.
///
/// Safety: `check_batch` passed for `F::BLOCK_BYTES`, `t0 + T <= x.tokens`;
/// the CPU has dotprod.
#[inline(always)]
unsafe fn tile<F: Rows4Format, const T: usize>(
    w: &[u8],
    blocks: usize,
    groups: usize,
    rows: usize,
    x: &BatchActs<'_>,
    t0: usize,
    out: &mut [f32],
) {
    let row_bytes = blocks * F::BLOCK_BYTES;
    let block_bytes = rows4_block_bytes(F::DTYPE);
    let xq: [*const i8; T] =
        core::array::from_fn(|t| x.qs.as_ptr().add((t0 + t) * x.block_stride * BLOCK_LEN));
    let xs: [*const f32; T] =
        core::array::from_fn(|t| x.scales.as_ptr().add((t0 + t) * x.block_stride));
    for g in 0..groups {
        let group = w.as_ptr().add(g * ROWS4 * row_bytes);
        let mut acc = [vdupq_n_f32(0.0); T];
        for b in 0..blocks {
            let block = group.add(b * block_bytes);
            let dw = f16x4(block);
            let ops = F::operands(block.add(2 * ROWS4));
            for t in 0..T {
                let sums = block_sums(&ops, xq[t].add(b * BLOCK_LEN));
                acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(sums), vmulq_n_f32(dw, *xs[t].add(b)));
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            // Rows 4g .. 4g + 4 of token t0 + t are inside `out` (check_batch).
            let o = out.as_mut_ptr().add((t0 + t) * rows + g * ROWS4);
            vst1q_f32(o, vmulq_n_f32(*acc, F::SUM_SCALE));
        }
    }
}

/// The batched product: tiles of four rows by four tokens, then one to
/// three tokens, then the planar rows a token at a time.
///
/// Safety: the CPU has dotprod.
#[inline(always)]
unsafe fn matmul<F: Rows4Format>(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let blocks = check_batch(w, cols, rows, x, out, F::BLOCK_BYTES);
    let groups = rows / ROWS4;
    let full = x.tokens / 4 * 4;
    for t0 in (0..full).step_by(4) {
        tile::<F, 4>(w, blocks, groups, rows, x, t0, out);
    }
    match x.tokens - full {
        1 => tile::<F, 1>(w, blocks, groups, rows, x, full, out),
        2 => tile::<F, 2>(w, blocks, groups, rows, x, full, out),
        3 => tile::<F, 3>(w, blocks, groups, rows, x, full, out),
        _ => {}
    }
    if rows > groups * ROWS4 {
        let row_bytes = blocks * F::BLOCK_BYTES;
        let planar = &w[groups * ROWS4 * row_bytes..rows * row_bytes];
        for t in 0..x.tokens {
            let outs = &mut out[t * rows + groups * ROWS4..(t + 1) * rows];
            (F::PLANAR)(planar, row_bytes, &x.token(t, cols), outs);
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_matvec(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    unsafe { matvec::<Q4Rows4>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_matvec(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (checked shapes, dotprod present).
    unsafe { matvec::<Q8Rows4>(w, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_matmul(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (dotprod present); `matmul` checks the shapes.
    unsafe { matmul::<Q4Rows4>(w, cols, rows, x, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_matmul(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (dotprod present); `matmul` checks the shapes.
    unsafe { matmul::<Q8Rows4>(w, cols, rows, x, out) }
}

pub(crate) fn matvec_q4_rows4_dotprod(
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has dotprod;
    // `check_quantized` proved the buffer sizes the loads use.
    unsafe { q4_matvec(w, row_bytes, blocks, x, out) }
}

pub(crate) fn matvec_q8_rows4_dotprod(
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    // SAFETY: installed by `kernels::table` only when the CPU has dotprod;
    // `check_quantized` proved the buffer sizes the loads use.
    unsafe { q8_matvec(w, row_bytes, blocks, x, out) }
}

pub(crate) fn matmul_q4_rows4_dotprod(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    // SAFETY: installed by `kernels::table` only when the CPU has dotprod.
    unsafe { q4_matmul(w, cols, rows, x, out) }
}

pub(crate) fn matmul_q8_rows4_dotprod(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    // SAFETY: installed by `kernels::table` only when the CPU has dotprod.
    unsafe { q8_matmul(w, cols, rows, x, out) }
}
