//! The int8 copies of activations that quantized products read, with the
//! per-block scales and sums the kernels need. Carved from the arena once;
//! never allocates.

use crate::arena::Arena;
use crate::error::Error;
use crate::kernels::{BatchActs, Kernels};
use crate::quant::BLOCK_LEN;

/// int8 copies of a batch of activation vectors: values, and per block a
/// scale and a scaled sum; `stride` blocks per token.
pub(super) struct QuantBuf<'a> {
    qs: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [f32],
    stride: usize,
}

impl<'a> QuantBuf<'a> {
    pub(super) fn new(arena: &mut Arena<'a>, batch: usize, blocks: usize) -> Result<Self, Error> {
        Ok(QuantBuf {
            qs: arena.take(batch * blocks * BLOCK_LEN, 0i8)?,
            scales: arena.take(batch * blocks, 0.0f32)?,
            sums: arena.take(batch * blocks, 0.0f32)?,
            stride: blocks,
        })
    }

    /// Quantizes `n` rows of `cols` values, row `t` at `x[t * x_stride..]`.
    pub(super) fn quantize(
        &mut self,
        k: &Kernels,
        x: &[f32],
        x_stride: usize,
        cols: usize,
        n: usize,
    ) {
        let blocks = cols.div_ceil(BLOCK_LEN);
        for t in 0..n {
            let b = t * self.stride;
            (k.quantize_activations)(
                &x[t * x_stride..][..cols],
                &mut self.qs[b * BLOCK_LEN..][..blocks * BLOCK_LEN],
                &mut self.scales[b..][..blocks],
                &mut self.sums[b..][..blocks],
            );
        }
    }

    /// The batch view of `n` tokens whose f32 rows are `f32s` (stride `f32_stride`).
    pub(super) fn view<'s>(
        &'s self,
        f32s: &'s [f32],
        f32_stride: usize,
        n: usize,
    ) -> BatchActs<'s> {
        BatchActs {
            tokens: n,
            f32s,
            f32_stride,
            qs: self.qs,
            scales: self.scales,
            sums: self.sums,
            block_stride: self.stride,
        }
    }

    /// Copies token `from` of `src` into token `to` of `self`.
    pub(super) fn copy_token(&mut self, to: usize, src: &QuantBuf<'_>, from: usize) {
        let (a, b) = (to * self.stride, from * src.stride);
        let n = self.stride.min(src.stride);
        self.qs[a * BLOCK_LEN..][..n * BLOCK_LEN]
            .copy_from_slice(&src.qs[b * BLOCK_LEN..][..n * BLOCK_LEN]);
        self.scales[a..][..n].copy_from_slice(&src.scales[b..][..n]);
        self.sums[a..][..n].copy_from_slice(&src.sums[b..][..n]);
    }
}
