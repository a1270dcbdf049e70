//! The batched product of quantized rows with `sdot`, shared by the int8
//! and int4 formats: tiles of [`TILE_ROWS`] rows by [`TILE_TOKENS`]
//! tokens, so each weight block is loaded and decoded once for four tokens
//! and each token's activations once for four rows.
//!
//! Per block and row, the four tokens' exact integer sums fold into one
//! `int32x4` (lane = token), meet the four scale products `d_w · d_x` in
//! one multiply and one multiply-add, and accumulate per token as the
//! scalar kernel does (block after block). Scales are read four blocks at a
//! time (one `fcvtl` per row, one 4 × 4 transpose for the tokens); the last
//! group of fewer than four blocks is copied into zero-padded stack
//! buffers, so no load leaves a row or a token's activations. Tokens and
//! rows past the end of the batch repeat the last one (computed, never
//! stored).

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

/// `[a, b, c, d]` → lane `j` of result `k` = lane `k` of input `j`.
#[inline(always)]
unsafe fn transpose4(v: [float32x4_t; 4]) -> [float32x4_t; 4] {
    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(v[0], v[1]));
    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(v[0], v[1]));
    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(v[2], v[3]));
    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(v[2], v[3]));
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

/// Four blocks of a tile into `acc` (lane = token): per row, the block
/// values at `values[i]` and their four f16 scales at `scales[i]`; per
/// token, the activations at `xq[j]` and their four scales at `xs[j]`.
///
/// Safety: four blocks are readable at every pointer; the CPU has NEON and
/// dotprod (inlined into a dotprod kernel).
#[inline(always)]
unsafe fn group<W: SignedBlock>(
    values: [*const u8; TILE_ROWS],
    scales: [*const u8; TILE_ROWS],
    xq: [*const i8; TILE_TOKENS],
    xs: [*const f32; TILE_TOKENS],
    acc: &mut [float32x4_t; TILE_ROWS],
) {
    let dw = scales.map(|s| f16x4(s));
    let dx = transpose4(xs.map(|p| vld1q_f32(p)));
    // Unrolled by hand: the block index is each scale's lane, a constant.
    block::<W, 0>(values, xq, dx[0], &dw, acc);
    block::<W, 1>(values, xq, dx[1], &dw, acc);
    block::<W, 2>(values, xq, dx[2], &dw, acc);
    block::<W, 3>(values, xq, dx[3], &dw, acc);
}

/// Block `K` of a group: the tokens' scales of the block in `dx` (lane =
/// token), the rows' four block scales in `dw`.
///
/// Safety: as for [`group`].
#[inline(always)]
unsafe fn block<W: SignedBlock, const K: i32>(
    values: [*const u8; TILE_ROWS],
    xq: [*const i8; TILE_TOKENS],
    dx: float32x4_t,
    dw: &[float32x4_t; TILE_ROWS],
    acc: &mut [float32x4_t; TILE_ROWS],
) {
    let k = K as usize;
    let x0 = xq.map(|p| vld1q_s8(p.add(k * BLOCK_LEN)));
    let x1 = xq.map(|p| vld1q_s8(p.add(k * BLOCK_LEN + 16)));
    for i in 0..TILE_ROWS {
        let (h0, h1) = W::halves(values[i].add(k * W::VALUE_BYTES));
        let sums = dot4(h0, h1, x0, x1);
        let scale = vmulq_laneq_f32::<K>(dx, dw[i]);
        acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(sums), scale);
    }
}

/// One block of one row against four tokens: lane `j` = Σ w·x over the
/// block for token `j`. One `asm!` block, so the four accumulators are
/// zeroed and folded in registers the compiler need not keep (as separate
/// `sdot` calls, each wants a fresh zeroed register and the rest spill).
///
/// Safety: the CPU has dotprod. (`target_feature` makes the assembler
/// accept `sdot`; the function inlines into the dotprod kernels.)
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn dot4(
    h0: int8x16_t,
    h1: int8x16_t,
    x0: [int8x16_t; TILE_TOKENS],
    x1: [int8x16_t; TILE_TOKENS],
) -> int32x4_t {
    let sums: int32x4_t;
    // SAFETY: register-only instructions; the caller guarantees dotprod.
    asm!(
        "movi {a0:v}.4s, #0",
        "movi {a1:v}.4s, #0",
        "movi {a2:v}.4s, #0",
        "movi {a3:v}.4s, #0",
        "sdot {a0:v}.4s, {h0:v}.16b, {x00:v}.16b",
        "sdot {a1:v}.4s, {h0:v}.16b, {x01:v}.16b",
        "sdot {a2:v}.4s, {h0:v}.16b, {x02:v}.16b",
        "sdot {a3:v}.4s, {h0:v}.16b, {x03:v}.16b",
        "sdot {a0:v}.4s, {h1:v}.16b, {x10:v}.16b",
        "sdot {a1:v}.4s, {h1:v}.16b, {x11:v}.16b",
        "sdot {a2:v}.4s, {h1:v}.16b, {x12:v}.16b",
        "sdot {a3:v}.4s, {h1:v}.16b, {x13:v}.16b",
        "addp {a0:v}.4s, {a0:v}.4s, {a1:v}.4s",
        "addp {a2:v}.4s, {a2:v}.4s, {a3:v}.4s",
        "addp {a0:v}.4s, {a0:v}.4s, {a2:v}.4s",
        a0 = out(vreg) sums,
        a1 = out(vreg) _,
        a2 = out(vreg) _,
        a3 = out(vreg) _,
        h0 = in(vreg) h0,
        h1 = in(vreg) h1,
        x00 = in(vreg) x0[0],
        x01 = in(vreg) x0[1],
        x02 = in(vreg) x0[2],
        x03 = in(vreg) x0[3],
        x10 = in(vreg) x1[0],
        x11 = in(vreg) x1[1],
        x12 = in(vreg) x1[2],
        x13 = in(vreg) x1[3],
        options(pure, nomem, nostack, preserves_flags)
    );
    sums
}

/// `out[t * rows + r] = row r · token t` for quantized rows of `blocks`
/// blocks (f16 scales first, then `W::VALUE_BYTES` a block).
///
/// Safety: `check_batch` passed for this format's block size; the CPU has
/// NEON and dotprod (the caller's `target_feature` set, into which this
/// inlines).
#[inline(always)]
pub(super) unsafe fn matmul_sdot<W: SignedBlock>(
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
                group::<W>(
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
                group::<W>(
                    core::array::from_fn(|i| v_pad[i].as_ptr()),
                    core::array::from_fn(|i| s_pad[i].as_ptr()),
                    core::array::from_fn(|j| xq_pad[j].as_ptr()),
                    core::array::from_fn(|j| xs_pad[j].as_ptr()),
                    &mut acc,
                );
            }
            for (i, a) in acc.iter().enumerate().take(nr) {
                let mut lanes = [0.0f32; TILE_TOKENS];
                vst1q_f32(lanes.as_mut_ptr(), *a);
                for (j, &v) in lanes.iter().enumerate().take(nt) {
                    out[(t0 + j) * rows + r0 + i] = v;
                }
            }
        }
    }
}
