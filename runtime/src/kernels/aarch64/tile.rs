//! The i8mm batched product of int8 rows: tiles of [`TILE_ROWS`] rows by
//! [`TILE_TOKENS`] tokens, so each weight block is loaded once for four
//! tokens and each token's activations once for four rows. Per block, four
//! 2 × 2 sub-tiles of rows × tokens are one `smmla` a chunk of 8 values
//! (lanes `[r0·t0, r0·t1, r1·t0, r1·t1]`), rows and tokens paired by 64-bit
//! zips ([`Smmla`]; the [`Engine`] trait is its interface to the tile
//! loop). int4, and int8 without i8mm, take `rows4.rs`'s `sdot` tiles,
//! which count fewer instructions (`docs/performance.md`).
//!
//! The block's scale products `d_w · d_x` meet the sums in one multiply and
//! one multiply-add, per output block after block as the scalar kernel
//! does, so only float rounding differs. Scales are read four blocks at a
//! time (one `fcvtl` per row); the last group of fewer than four blocks is
//! copied into zero-padded stack buffers, so no load leaves a row or a
//! token's activations. Tokens and rows past the end of the batch repeat
//! the last one (computed, never stored).

use core::arch::aarch64::*;
use core::arch::asm;

use super::{f16x4, GROUP};
use crate::kernels::BatchActs;
use crate::quant::BLOCK_LEN;

/// Rows of a tile: each token's activations are loaded once for them.
const TILE_ROWS: usize = 4;
/// Tokens of a tile: one block's sums for them fill an `int32x4`.
const TILE_TOKENS: usize = 4;
/// The most value bytes a block of any format has (int8).
const MAX_VALUE_BYTES: usize = BLOCK_LEN;

/// One block of a quantized weight row as signed bytes, for `sdot`.
pub(super) trait SignedBlock {
    /// Value bytes of one block (at most [`MAX_VALUE_BYTES`]).
    const VALUE_BYTES: usize;
    /// Elements 0..16 and 16..32 of the block whose values start at `w`.
    ///
    /// Safety: `VALUE_BYTES` bytes at `w` are readable; the CPU has NEON.
    unsafe fn halves(w: *const u8) -> (int8x16_t, int8x16_t);
}

/// How a tile's integer work is done, and the accumulator layout that goes
/// with it: four `float32x4` per tile of 4 rows × 4 tokens.
pub(super) trait Engine {
    /// Four blocks of a tile into `acc`: per row, the block values at
    /// `values[i]` and their four f16 scales at `scales[i]`; per token, the
    /// activations at `xq[j]` and their four scales at `xs[j]`.
    ///
    /// Safety: four blocks are readable at every pointer; the CPU has the
    /// engine's features (inlined into a kernel compiled with them).
    unsafe fn group<W: SignedBlock>(
        values: [*const u8; TILE_ROWS],
        scales: [*const u8; TILE_ROWS],
        xq: [*const i8; TILE_TOKENS],
        xs: [*const f32; TILE_TOKENS],
        acc: &mut [float32x4_t; 4],
    );
    /// The accumulators as `[row][token]`.
    fn results(acc: &[float32x4_t; 4]) -> [[f32; TILE_TOKENS]; TILE_ROWS];
}

/// `smmla` (i8mm): accumulator `2p + q` is rows `2p, 2p + 1` × tokens
/// `2q, 2q + 1`, lanes `[r0·t0, r0·t1, r1·t0, r1·t1]`. One `smmla` is a
/// 2 × 2 tile of 8-value dot products: half the instructions of `sdot`
/// per product, and no fold across lanes.
pub(super) struct Smmla;

impl Engine for Smmla {
    #[inline(always)]
    unsafe fn group<W: SignedBlock>(
        values: [*const u8; TILE_ROWS],
        scales: [*const u8; TILE_ROWS],
        xq: [*const i8; TILE_TOKENS],
        xs: [*const f32; TILE_TOKENS],
        acc: &mut [float32x4_t; 4],
    ) {
        let dw = scales.map(|s| f16x4(s));
        let dx = xs.map(|p| vld1q_f32(p));
        // Per row pair `[a0, b0, a1, b1]`, `[a2, b2, a3, b3]`; per token
        // pair `[c0, d0, c1, d1]`, `[c2, d2, c3, d3]`.
        let zr = [
            (vzip1q_f32(dw[0], dw[1]), vzip2q_f32(dw[0], dw[1])),
            (vzip1q_f32(dw[2], dw[3]), vzip2q_f32(dw[2], dw[3])),
        ];
        let zt = [
            (vzip1q_f32(dx[0], dx[1]), vzip2q_f32(dx[0], dx[1])),
            (vzip1q_f32(dx[2], dx[3]), vzip2q_f32(dx[2], dx[3])),
        ];
        block_mmla::<W, 0>(values, xq, &zr, &zt, acc);
        block_mmla::<W, 1>(values, xq, &zr, &zt, acc);
        block_mmla::<W, 2>(values, xq, &zr, &zt, acc);
        block_mmla::<W, 3>(values, xq, &zr, &zt, acc);
    }

    #[inline(always)]
    fn results(acc: &[float32x4_t; 4]) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
        let l = acc.map(lanes);
        core::array::from_fn(|i| {
            core::array::from_fn(|j| l[2 * (i / 2) + j / 2][2 * (i % 2) + j % 2])
        })
    }
}

/// The four lanes of `v`.
#[inline(always)]
fn lanes(v: float32x4_t) -> [f32; 4] {
    let mut out = [0.0f32; 4];
    // SAFETY: `out` holds four f32 (NEON is baseline on aarch64).
    unsafe { vst1q_f32(out.as_mut_ptr(), v) };
    out
}

/// Block `K` of a group with `smmla`: `zr`/`zt` are the row-pair and
/// token-pair scale zips of the group (see [`Smmla::group`]).
///
/// Safety: as for [`Engine::group`], with i8mm.
#[inline(always)]
unsafe fn block_mmla<W: SignedBlock, const K: i32>(
    values: [*const u8; TILE_ROWS],
    xq: [*const i8; TILE_TOKENS],
    zr: &[(float32x4_t, float32x4_t); 2],
    zt: &[(float32x4_t, float32x4_t); 2],
    acc: &mut [float32x4_t; 4],
) {
    let k = K as usize;
    // 8-value chunks of two vectors side by side: `[a[8c..8c + 8], b[8c..8c + 8]]`.
    let pairs = |a: int8x16_t, b: int8x16_t| {
        let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
        (
            vreinterpretq_s8_s64(vzip1q_s64(a, b)),
            vreinterpretq_s8_s64(vzip2q_s64(a, b)),
        )
    };
    let h: [(int8x16_t, int8x16_t); TILE_ROWS] =
        core::array::from_fn(|i| W::halves(values[i].add(k * W::VALUE_BYTES)));
    let x0 = xq.map(|p| vld1q_s8(p.add(k * BLOCK_LEN)));
    let x1 = xq.map(|p| vld1q_s8(p.add(k * BLOCK_LEN + 16)));
    let operands = |h0: [int8x16_t; 4], h1: [int8x16_t; 4], m: usize| {
        let (c0, c1) = pairs(h0[2 * m], h0[2 * m + 1]);
        let (c2, c3) = pairs(h1[2 * m], h1[2 * m + 1]);
        [c0, c1, c2, c3]
    };
    let (h0, h1) = (h.map(|v| v.0), h.map(|v| v.1));
    let a = [operands(h0, h1, 0), operands(h0, h1, 1)];
    let b = [operands(x0, x1, 0), operands(x0, x1, 1)];
    for p in 0..2 {
        // Block K's row scales `[a, a, b, b]`.
        let z = if K < 2 { zr[p].0 } else { zr[p].1 };
        let dw = if K % 2 == 0 {
            vzip1q_f32(z, z)
        } else {
            vzip2q_f32(z, z)
        };
        for q in 0..2 {
            // Block K's token scales `[c, d, c, d]`.
            let z = vreinterpretq_f64_f32(if K < 2 { zt[q].0 } else { zt[q].1 });
            let dx = vreinterpretq_f32_f64(if K % 2 == 0 {
                vdupq_laneq_f64::<0>(z)
            } else {
                vdupq_laneq_f64::<1>(z)
            });
            let sums = mmla4(a[p], b[q]);
            acc[2 * p + q] = vfmaq_f32(acc[2 * p + q], vcvtq_f32_s32(sums), vmulq_f32(dw, dx));
        }
    }
}

/// `Σ_c smmla(a[c], b[c])` from zero: the 2 × 2 integer dot products of
/// two rows and two tokens over one block (four chunks of 8 values).
///
/// Safety: the CPU has i8mm. (`target_feature` makes the assembler accept
/// `smmla`; the function inlines into the i8mm kernels.)
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn mmla4(a: [int8x16_t; 4], b: [int8x16_t; 4]) -> int32x4_t {
    let sums: int32x4_t;
    // SAFETY: register-only instructions; the caller guarantees i8mm.
    asm!(
        "movi {s:v}.4s, #0",
        "smmla {s:v}.4s, {a0:v}.16b, {b0:v}.16b",
        "smmla {s:v}.4s, {a1:v}.16b, {b1:v}.16b",
        "smmla {s:v}.4s, {a2:v}.16b, {b2:v}.16b",
        "smmla {s:v}.4s, {a3:v}.16b, {b3:v}.16b",
        s = out(vreg) sums,
        a0 = in(vreg) a[0],
        a1 = in(vreg) a[1],
        a2 = in(vreg) a[2],
        a3 = in(vreg) a[3],
        b0 = in(vreg) b[0],
        b1 = in(vreg) b[1],
        b2 = in(vreg) b[2],
        b3 = in(vreg) b[3],
        options(pure, nomem, nostack, preserves_flags)
    );
    sums
}

/// `out[t * rows + r] = row r · token t` for quantized rows of `blocks`
/// blocks (f16 scales first, then `W::VALUE_BYTES` a block), the integer
/// work done by engine `E`.
///
/// Safety: `check_batch` passed for this format's block size; the CPU has
/// NEON and `E`'s features (the caller's `target_feature` set, into which
/// this inlines).
#[inline(always)]
pub(super) unsafe fn matmul_tiles<W: SignedBlock, E: Engine>(
    w: &[u8],
    blocks: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let row_bytes = blocks * (2 + W::VALUE_BYTES);
    let full = blocks / GROUP * GROUP;
    let tail = blocks - full;
    for t0 in (0..x.tokens).step_by(TILE_TOKENS) {
        let nt = (x.tokens - t0).min(TILE_TOKENS);
        let tok: [usize; TILE_TOKENS] = core::array::from_fn(|j| t0 + j.min(nt - 1));
        // Token `t`'s `blocks` blocks are inside the activations (`check_batch`).
        let xq = tok.map(|t| x.qs.as_ptr().add(t * x.block_stride * BLOCK_LEN));
        let xs = tok.map(|t| x.scales.as_ptr().add(t * x.block_stride));
        // Each token's last, partial group, zero padded once for all rows.
        let mut xq_pad = [[0i8; GROUP * BLOCK_LEN]; TILE_TOKENS];
        let mut xs_pad = [[0.0f32; GROUP]; TILE_TOKENS];
        for j in 0..TILE_TOKENS {
            let (q, s) = (xq[j].add(full * BLOCK_LEN), xs[j].add(full));
            core::ptr::copy_nonoverlapping(q, xq_pad[j].as_mut_ptr(), tail * BLOCK_LEN);
            core::ptr::copy_nonoverlapping(s, xs_pad[j].as_mut_ptr(), tail);
        }
        for r0 in (0..rows).step_by(TILE_ROWS) {
            let nr = (rows - r0).min(TILE_ROWS);
            // Row starts inside `w` (`check_batch`: it holds `rows` rows).
            let wr: [*const u8; TILE_ROWS] =
                core::array::from_fn(|i| w.as_ptr().add((r0 + i.min(nr - 1)) * row_bytes));
            let mut acc = [vdupq_n_f32(0.0); TILE_ROWS];
            for b in (0..full).step_by(GROUP) {
                E::group::<W>(
                    wr.map(|r| r.add(2 * blocks + b * W::VALUE_BYTES)),
                    wr.map(|r| r.add(2 * b)),
                    xq.map(|p| p.add(b * BLOCK_LEN)),
                    xs.map(|p| p.add(b)),
                    &mut acc,
                );
            }
            if tail > 0 {
                let mut v_pad = [[0u8; GROUP * MAX_VALUE_BYTES]; TILE_ROWS];
                let mut s_pad = [[0u8; 2 * GROUP]; TILE_ROWS];
                for i in 0..TILE_ROWS {
                    let values = wr[i].add(2 * blocks + full * W::VALUE_BYTES);
                    let n = tail * W::VALUE_BYTES;
                    core::ptr::copy_nonoverlapping(values, v_pad[i].as_mut_ptr(), n);
                    core::ptr::copy_nonoverlapping(
                        wr[i].add(2 * full),
                        s_pad[i].as_mut_ptr(),
                        2 * tail,
                    );
                }
                E::group::<W>(
                    core::array::from_fn(|i| v_pad[i].as_ptr()),
                    core::array::from_fn(|i| s_pad[i].as_ptr()),
                    core::array::from_fn(|j| xq_pad[j].as_ptr()),
                    core::array::from_fn(|j| xs_pad[j].as_ptr()),
                    &mut acc,
                );
            }
            for (i, row) in E::results(&acc).iter().enumerate().take(nr) {
                for (j, &v) in row.iter().enumerate().take(nt) {
                    out[(t0 + j) * rows + r0 + i] = v;
                }
            }
        }
    }
}

/// Defines `pub(crate) fn $name`, a [`MatmulFn`](crate::kernels::MatmulFn)
/// over [`matmul_tiles`] for blocks `$block` (`$block_bytes` a block) with
/// engine `$engine`, compiled with `$features` (the features `kernels::table`
/// checks before installing it).
macro_rules! tile_kernel {
    ($name:ident, $block:ty, $block_bytes:expr, $engine:ty, $features:literal) => {
        pub(crate) fn $name(
            w: &[u8],
            cols: usize,
            rows: usize,
            x: &crate::kernels::BatchActs<'_>,
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn tiles(
                w: &[u8],
                blocks: usize,
                rows: usize,
                x: &crate::kernels::BatchActs<'_>,
                out: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller (checked shapes, features present).
                unsafe { super::tile::matmul_tiles::<$block, $engine>(w, blocks, rows, x, out) }
            }
            let blocks = crate::kernels::check_batch(w, cols, rows, x, out, $block_bytes);
            // SAFETY: installed by `kernels::table` only when the CPU has
            // `$features`; `check_batch` proved the ranges the loads use.
            unsafe { tiles(w, blocks, rows, x, out) }
        }
    };
}
pub(super) use tile_kernel;
