//! int4 and int8 products four rows at a time with dotprod, from the
//! rows4 layout (`quant::rows4`) or from four planar rows transposed in
//! registers: the rows4 matvec and batched product, and the planar batched
//! product.
//!
//! A 16-byte load of a rows4 block holds the same four value positions of
//! four rows, so one `sdot` by element (`sdot acc.4s, w.16b, x.4b[lane]`)
//! adds four products to each of the four rows' lanes: a block's exact
//! integer sums for four rows come out of eight `sdot`s in one register,
//! with no zeroed accumulator and fold per row (the planar matvec's cost).
//! The rows' four scales are one 8-byte load and one `fcvtl`. Four planar
//! rows get the same operands from four loads and a 4 × 4 transpose of
//! 32-bit grains (8 `trn`), and their scales from four lane loads: dearer
//! per block than rows4, so worth it where the operands serve four tokens
//! (the batched product), not in the planar matvec.
//!
//! int4 nibbles are taken as two's-complement `q` (rows4 stores them XOR
//! `0x88`; planar ones are XORed after the load), so `shl #4` gives the low
//! ones and `and #0xf0` the high ones as `16 · q`, exact in i8; the factor
//! 16 leaves with one multiply per four rows at the end.
//!
//! The batched product decodes each block's operands once for up to four
//! tokens. A last group of fewer than four rows (and the planar rows after
//! a rows4 matrix's groups) repeats its last row (computed, never stored).

use core::arch::aarch64::*;
use core::arch::asm;

use super::f16x4;
use crate::format::tensor::ROWS4;
use crate::kernels::{check_batch, check_quantized, Activations, BatchActs};
use crate::quant::{
    rows4_block_bytes, BLOCK_LEN, Q4_BLOCK_BYTES, Q4_VALUE_BYTES, Q8_BLOCK_BYTES, Q8_VALUE_BYTES,
};
use crate::DType;

/// One weight format in the rows4 layout.
trait Rows4Format {
    /// The block format.
    const DTYPE: DType;
    /// Bytes of one planar block (a group's block is four of them).
    const BLOCK_BYTES: usize;
    /// What the integer sums are multiplied by (int4's operands are `16 · q`).
    const SUM_SCALE: f32;
    /// Value bytes of one planar block.
    const VALUE_BYTES: usize;
    /// The eight `sdot` operands of the rows4 block values at `v`: operand
    /// `m` meets activations `4m .. 4m + 4`.
    ///
    /// Safety: `4 · VALUE_BYTES` bytes at `v` are readable; the CPU has NEON.
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8];
    /// The same operands from four planar rows' values of one block at
    /// `v[r]`, put in rows4 order in registers (a 4 × 4 transpose of 32-bit
    /// grains per 16 bytes).
    ///
    /// Safety: `VALUE_BYTES` bytes at each `v[r]` are readable; NEON.
    unsafe fn transposed(v: [*const u8; ROWS4]) -> [int8x16_t; 8];
}

/// Lane `j` of result `k` = 32-bit lane `k` of `v[j]`.
#[inline(always)]
unsafe fn transpose4(v: [int8x16_t; 4]) -> [int8x16_t; 4] {
    let v = v.map(|v| vreinterpretq_s32_s8(v));
    let t0 = vreinterpretq_s64_s32(vtrn1q_s32(v[0], v[1]));
    let t1 = vreinterpretq_s64_s32(vtrn2q_s32(v[0], v[1]));
    let t2 = vreinterpretq_s64_s32(vtrn1q_s32(v[2], v[3]));
    let t3 = vreinterpretq_s64_s32(vtrn2q_s32(v[2], v[3]));
    [
        vreinterpretq_s8_s64(vtrn1q_s64(t0, t2)),
        vreinterpretq_s8_s64(vtrn1q_s64(t1, t3)),
        vreinterpretq_s8_s64(vtrn2q_s64(t0, t2)),
        vreinterpretq_s8_s64(vtrn2q_s64(t1, t3)),
    ]
}

/// int4 operands from four grains of two's-complement nibbles: `shl #4`
/// (low nibbles, elements 4j..) and `and #0xf0` (high, 16 + 4j..), `16 · q`.
#[inline(always)]
unsafe fn q4_operands(g: [int8x16_t; 4]) -> [int8x16_t; 8] {
    let high = vdupq_n_s8(0xf0u8 as i8);
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

struct Q4Rows4;

impl Rows4Format for Q4Rows4 {
    const DTYPE: DType = DType::Q4;
    const BLOCK_BYTES: usize = Q4_BLOCK_BYTES;
    const SUM_SCALE: f32 = 1.0 / 16.0;

    const VALUE_BYTES: usize = Q4_VALUE_BYTES;

    #[inline(always)]
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8] {
        q4_operands(core::array::from_fn(|j| {
            vld1q_s8(v.add(16 * j) as *const i8)
        }))
    }

    #[inline(always)]
    unsafe fn transposed(v: [*const u8; ROWS4]) -> [int8x16_t; 8] {
        // Planar nibbles are q + 8; XOR 8 makes them two's-complement q.
        let flip = vdupq_n_s8(0x88u8 as i8);
        q4_operands(transpose4(
            v.map(|p| veorq_s8(vld1q_s8(p as *const i8), flip)),
        ))
    }
}

struct Q8Rows4;

impl Rows4Format for Q8Rows4 {
    const DTYPE: DType = DType::Q8;
    const BLOCK_BYTES: usize = Q8_BLOCK_BYTES;
    const SUM_SCALE: f32 = 1.0;

    const VALUE_BYTES: usize = Q8_VALUE_BYTES;

    #[inline(always)]
    unsafe fn operands(v: *const u8) -> [int8x16_t; 8] {
        core::array::from_fn(|m| vld1q_s8(v.add(16 * m) as *const i8))
    }

    #[inline(always)]
    unsafe fn transposed(v: [*const u8; ROWS4]) -> [int8x16_t; 8] {
        let lo = transpose4(v.map(|p| vld1q_s8(p as *const i8)));
        let hi = transpose4(v.map(|p| vld1q_s8(p.add(16) as *const i8)));
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
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

/// `acc + Σ(block) · dw · dx`: one block's sums for four rows (operands
/// `ops`, activations at `x`) met with the rows' scales `dw` and the
/// activations' scale `dx`.
///
/// Safety: as for [`block_sums`].
#[inline(always)]
unsafe fn add_block(
    acc: float32x4_t,
    ops: &[int8x16_t; 8],
    x: *const i8,
    dw: float32x4_t,
    dx: f32,
) -> float32x4_t {
    vfmaq_f32(acc, vcvtq_f32_s32(block_sums(ops, x)), vmulq_n_f32(dw, dx))
}

/// Four rows of a matrix as the kernels read them, block by block.
trait Group: Copy {
    /// Block `b`'s four scales (as f32) and its eight `sdot` operands.
    ///
    /// Safety: `b` is one of the rows' blocks; the CPU has NEON.
    unsafe fn block<F: Rows4Format>(self, b: usize) -> (float32x4_t, [int8x16_t; 8]);
}

/// A group of a rows4 matrix, from its first byte.
#[derive(Clone, Copy)]
struct Packed(*const u8);

impl Group for Packed {
    #[inline(always)]
    unsafe fn block<F: Rows4Format>(self, b: usize) -> (float32x4_t, [int8x16_t; 8]) {
        let block = self.0.add(b * rows4_block_bytes(F::DTYPE));
        (f16x4(block), F::operands(block.add(2 * ROWS4)))
    }
}

/// Four planar rows (their first bytes) of `blocks` blocks, transposed in
/// registers: 4 loads and 8 `trn` a block for four rows, where the
/// one-row-at-a-time kernels spent a zeroed accumulator and a fold per row.
#[derive(Clone, Copy)]
struct Planar {
    rows: [*const u8; ROWS4],
    blocks: usize,
}

impl Group for Planar {
    #[inline(always)]
    unsafe fn block<F: Rows4Format>(self, b: usize) -> (float32x4_t, [int8x16_t; 8]) {
        let dw = f16_lanes(self.rows.map(|r| r.add(2 * b)));
        let values = self
            .rows
            .map(|r| r.add(2 * self.blocks + b * F::VALUE_BYTES));
        (dw, F::transposed(values))
    }
}

/// The f16 values at four addresses (any alignment) as one `float32x4`.
///
/// Safety: 2 bytes are readable at each address.
#[inline(always)]
unsafe fn f16_lanes(p: [*const u8; 4]) -> float32x4_t {
    let f: float32x4_t;
    // SAFETY: reads 2 bytes at each address (the caller's guarantee); `ld1`
    // of one lane and `fcvtl` are base Armv8 SIMD.
    asm!(
        "ld1 {{{h:v}.h}}[0], [{p0}]",
        "ld1 {{{h:v}.h}}[1], [{p1}]",
        "ld1 {{{h:v}.h}}[2], [{p2}]",
        "ld1 {{{h:v}.h}}[3], [{p3}]",
        "fcvtl {f:v}.4s, {h:v}.4h",
        p0 = in(reg) p[0],
        p1 = in(reg) p[1],
        p2 = in(reg) p[2],
        p3 = in(reg) p[3],
        h = out(vreg) _,
        f = lateout(vreg) f,
        options(pure, readonly, nostack, preserves_flags)
    );
    f
}

/// The four rows' products with one token's activations.
///
/// Safety: `blocks` blocks of the group and of `x` are readable; dotprod.
#[inline(always)]
unsafe fn group_dot<F: Rows4Format, G: Group>(
    group: G,
    blocks: usize,
    x: &Activations<'_>,
) -> float32x4_t {
    let mut acc = vdupq_n_f32(0.0);
    for b in 0..blocks {
        let (dw, ops) = group.block::<F>(b);
        acc = add_block(
            acc,
            &ops,
            x.qs.as_ptr().add(b * BLOCK_LEN),
            dw,
            *x.scales.get_unchecked(b),
        );
    }
    vmulq_n_f32(acc, F::SUM_SCALE)
}

/// [`group_dot`] for four whole planar rows from `first`, `row_bytes`
/// apart: their scales four blocks at a time (four 8-byte loads, `fcvtl`s
/// and one transpose, where lane loads cost a load and an address a
/// block and row), their values at fixed offsets from one pointer.
///
/// Safety: the four rows are inside the matrix; `blocks` blocks of `x`;
/// dotprod.
#[inline(always)]
unsafe fn planar_dot<F: Rows4Format>(
    first: *const u8,
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
) -> float32x4_t {
    let mut acc = vdupq_n_f32(0.0);
    let values = first.add(2 * blocks);
    // Block c's operands (NEON only: a closure may hold them).
    let ops = |c: usize| {
        F::transposed(core::array::from_fn(|r| {
            values.add(r * row_bytes + c * F::VALUE_BYTES)
        }))
    };
    let mut b = 0;
    while b + 4 <= blocks {
        let rows: [int8x16_t; 4] =
            core::array::from_fn(|r| vreinterpretq_s8_f32(f16x4(first.add(r * row_bytes + 2 * b))));
        let dws = transpose4(rows);
        for (k, dw) in dws.iter().enumerate() {
            let c = b + k;
            let dw = vreinterpretq_f32_s8(*dw);
            acc = add_block(
                acc,
                &ops(c),
                x.qs.as_ptr().add(c * BLOCK_LEN),
                dw,
                *x.scales.get_unchecked(c),
            );
        }
        b += 4;
    }
    for c in b..blocks {
        let dw = f16_lanes(core::array::from_fn(|r| first.add(r * row_bytes + 2 * c)));
        acc = add_block(
            acc,
            &ops(c),
            x.qs.as_ptr().add(c * BLOCK_LEN),
            dw,
            *x.scales.get_unchecked(c),
        );
    }
    vmulq_n_f32(acc, F::SUM_SCALE)
}

/// The four rows' products with `T` tokens (activations at `xq[t]`, their
/// block scales at `xs[t]`): each block's operands decoded once.
///
/// Safety: `blocks` blocks of the group and of every token are readable; dotprod.
#[inline(always)]
unsafe fn group_tile<F: Rows4Format, G: Group, const T: usize>(
    group: G,
    blocks: usize,
    xq: [*const i8; T],
    xs: [*const f32; T],
) -> [float32x4_t; T] {
    let mut acc = [vdupq_n_f32(0.0); T];
    for b in 0..blocks {
        let (dw, ops) = group.block::<F>(b);
        for t in 0..T {
            // `add_block` written out: through it the compiler allocated
            // the planar int8 tile's registers worse (+4.5% instructions a
            // prompt token, cross_side_by_side dotprod).
            let sums = block_sums(&ops, xq[t].add(b * BLOCK_LEN));
            acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(sums), vmulq_n_f32(dw, *xs[t].add(b)));
        }
    }
    acc.map(|a| vmulq_n_f32(a, F::SUM_SCALE))
}

/// Rows `4g .. 4g + n` (n ≤ 4) of planar rows, the last repeated past `n`
/// (computed, never stored; in a rows4 matrix the rows after the groups
/// are planar).
///
/// Safety: `w` holds the matrix's rows of `row_bytes`; row `4g + n − 1` is one of them.
#[inline(always)]
unsafe fn planar_rows(w: &[u8], row_bytes: usize, blocks: usize, g: usize, n: usize) -> Planar {
    let first = w.as_ptr().add(g * ROWS4 * row_bytes);
    let rows = core::array::from_fn(|i| first.add(i.min(n - 1) * row_bytes));
    Planar { rows, blocks }
}

/// Stores the first `n` lanes of `v` at `o`.
///
/// Safety: `n` floats are writable at `o`.
#[inline(always)]
unsafe fn store(o: *mut f32, v: float32x4_t, n: usize) {
    if n == ROWS4 {
        vst1q_f32(o, v);
    } else {
        let mut lanes = [0.0f32; ROWS4];
        vst1q_f32(lanes.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(lanes.as_ptr(), o, n);
    }
}

/// `out[r] = row r · x`, four rows at a time: rows4 groups (`packed`) or
/// planar rows.
///
/// Safety: `check_quantized` passed for `F::BLOCK_BYTES`; the CPU has dotprod.
#[inline(always)]
unsafe fn matvec<F: Rows4Format>(
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
    packed: bool,
) {
    // Whole rows4 groups first (their count known, so no per-group test),
    // then planar rows four at a time.
    let groups = if packed { out.len() / ROWS4 } else { 0 };
    let (grouped, rest) = out.split_at_mut(groups * ROWS4);
    for (g, outs) in grouped.chunks_exact_mut(ROWS4).enumerate() {
        let sums = group_dot::<F, _>(Packed(w.as_ptr().add(g * ROWS4 * row_bytes)), blocks, x);
        vst1q_f32(outs.as_mut_ptr(), sums);
    }
    for (i, outs) in rest.chunks_mut(ROWS4).enumerate() {
        let g = groups + i;
        let sums = if outs.len() == ROWS4 {
            planar_dot::<F>(w.as_ptr().add(g * ROWS4 * row_bytes), row_bytes, blocks, x)
        } else {
            group_dot::<F, _>(planar_rows(w, row_bytes, blocks, g, outs.len()), blocks, x)
        };
        store(outs.as_mut_ptr(), sums, outs.len());
    }
}

/// `out[t · rows + r] = row r · token t` for tokens `t0 .. t0 + T`.
///
/// Safety: `check_batch` passed for `F::BLOCK_BYTES`, `t0 + T <= x.tokens`;
/// the CPU has dotprod.
#[inline(always)]
unsafe fn tile<F: Rows4Format, const T: usize>(
    w: &[u8],
    blocks: usize,
    rows: usize,
    x: &BatchActs<'_>,
    t0: usize,
    out: &mut [f32],
    packed: bool,
) {
    let row_bytes = blocks * F::BLOCK_BYTES;
    let xq: [*const i8; T] =
        core::array::from_fn(|t| x.qs.as_ptr().add((t0 + t) * x.block_stride * BLOCK_LEN));
    let xs: [*const f32; T] =
        core::array::from_fn(|t| x.scales.as_ptr().add((t0 + t) * x.block_stride));
    let groups = if packed { rows / ROWS4 } else { 0 };
    for g in 0..groups {
        let sums = group_tile::<F, _, T>(
            Packed(w.as_ptr().add(g * ROWS4 * row_bytes)),
            blocks,
            xq,
            xs,
        );
        for (t, sums) in sums.iter().enumerate() {
            // Rows 4g .. 4g + 4 of token t0 + t are inside `out` (check_batch).
            vst1q_f32(out.as_mut_ptr().add((t0 + t) * rows + g * ROWS4), *sums);
        }
    }
    for g in groups..rows.div_ceil(ROWS4) {
        let n = (rows - g * ROWS4).min(ROWS4);
        let sums = group_tile::<F, _, T>(planar_rows(w, row_bytes, blocks, g, n), blocks, xq, xs);
        for (t, sums) in sums.iter().enumerate() {
            // Rows 4g .. 4g + n of token t0 + t are inside `out` (check_batch).
            store(out.as_mut_ptr().add((t0 + t) * rows + g * ROWS4), *sums, n);
        }
    }
}

/// The batched product: tiles of four rows by four tokens, then one to
/// three tokens.
///
/// Safety: the CPU has dotprod.
#[inline(always)]
unsafe fn matmul<F: Rows4Format>(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
    packed: bool,
) {
    let blocks = check_batch(w, cols, rows, x, out, F::BLOCK_BYTES);
    let full = x.tokens / 4 * 4;
    for t0 in (0..full).step_by(4) {
        tile::<F, 4>(w, blocks, rows, x, t0, out, packed);
    }
    match x.tokens - full {
        1 => tile::<F, 1>(w, blocks, rows, x, full, out, packed),
        2 => tile::<F, 2>(w, blocks, rows, x, full, out, packed),
        3 => tile::<F, 3>(w, blocks, rows, x, full, out, packed),
        _ => {}
    }
}

/// Defines the matvec `$name` of format `$format` (`$block_bytes` a planar
/// block) on rows4 groups when `$packed`, else on planar rows.
macro_rules! matvec_entry {
    ($name:ident, $format:ty, $block_bytes:expr, $packed:expr) => {
        pub(crate) fn $name(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn run(
                w: &[u8],
                row_bytes: usize,
                blocks: usize,
                x: &Activations<'_>,
                out: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller (checked shapes, dotprod present).
                unsafe { matvec::<$format>(w, row_bytes, blocks, x, out, $packed) }
            }
            let blocks = check_quantized(w, row_bytes, x, out, $block_bytes);
            // SAFETY: installed by `kernels::table` only when the CPU has
            // dotprod; `check_quantized` proved the buffer sizes the loads use.
            unsafe { run(w, row_bytes, blocks, x, out) }
        }
    };
}

/// Defines the batched product `$name` of format `$format` on rows4
/// groups when `$packed`, else on planar rows, four at a time.
macro_rules! matmul_entry {
    ($name:ident, $format:ty, $packed:expr) => {
        pub(crate) fn $name(
            w: &[u8],
            cols: usize,
            rows: usize,
            x: &BatchActs<'_>,
            out: &mut [f32],
        ) {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn run(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]) {
                // SAFETY: forwarded from the caller (dotprod present); `matmul` checks the shapes.
                unsafe { matmul::<$format>(w, cols, rows, x, out, $packed) }
            }
            // SAFETY: installed by `kernels::table` only when the CPU has dotprod.
            unsafe { run(w, cols, rows, x, out) }
        }
    };
}

matvec_entry!(matvec_q4_rows4_dotprod, Q4Rows4, Q4_BLOCK_BYTES, true);
matvec_entry!(matvec_q8_rows4_dotprod, Q8Rows4, Q8_BLOCK_BYTES, true);
matvec_entry!(matvec_q4_planar4_dotprod, Q4Rows4, Q4_BLOCK_BYTES, false);
matmul_entry!(matmul_q4_rows4_dotprod, Q4Rows4, true);
matmul_entry!(matmul_q8_rows4_dotprod, Q8Rows4, true);
matmul_entry!(matmul_q4_planar4_dotprod, Q4Rows4, false);
matmul_entry!(matmul_q8_planar4_dotprod, Q8Rows4, false);
