//! Compute kernels behind one table of function pointers.
//!
//! A kernel is one weight format's product with the activations: a matvec
//! for one token, a batched product for several. [`Kernels::scalar`] is the
//! reference and the `no_std` fallback. Each ISA folder (`x86`, `aarch64`,
//! `riscv`) holds one file per weight format and its feature checks, and
//! `table` alone installs its kernels, after those checks. Every fast kernel
//! has a scalar twin and is tested against it (`check`). The table is
//! chosen once per session. Setting `MOTE_KERNELS=scalar` (std builds)
//! forces the reference for A/B runs.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(test)]
pub(crate) mod check;
#[cfg(target_arch = "riscv64")]
mod riscv;
pub mod scalar;
mod table;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use table::Kernels;

use crate::format::tensor::{DType, Layout};

/// A weight matrix viewed in place: `rows` rows of `dtype.row_bytes(cols)`
/// bytes, in `layout`'s order.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// Element type.
    pub dtype: DType,
    /// How the rows sit in `data` (only [`Layout::Planar`] has whole rows).
    pub layout: Layout,
    /// Number of rows (outputs).
    pub rows: usize,
    /// Logical number of columns (inputs).
    pub cols: usize,
    /// The bytes, exactly `rows * dtype.row_bytes(cols)` long.
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Bytes of row `r` (planar matrices only: `Model::open` keeps the
    /// tensors read by rows planar).
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        debug_assert_eq!(self.layout, Layout::Planar);
        let n = self.dtype.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }

    /// Rows `range` as a matrix of their own; `range.start` is a multiple
    /// of the layout's row group.
    #[inline]
    pub fn rows(&self, range: core::ops::Range<usize>) -> Matrix<'a> {
        debug_assert!(range.start.is_multiple_of(self.layout.row_group()));
        let n = self.dtype.row_bytes(self.cols);
        Matrix {
            rows: range.len(),
            data: &self.data[range.start * n..range.end * n],
            ..*self
        }
    }
}

/// An activation vector in both forms the kernels read: f32 for float
/// weights, int8 blocks for quantized weights.
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    /// The f32 values (the matrix's `cols` of them).
    pub f32s: &'a [f32],
    /// int8 values, `32 * blocks` of them (zero padded).
    pub qs: &'a [i8],
    /// One scale per block (exactly the matrix's blocks).
    pub scales: &'a [f32],
    /// Per block, `scale * Σ qs` (see [`crate::quant::quantize_activations`]).
    pub sums: &'a [f32],
}

/// Activations of several tokens, each in the form of [`Activations`],
/// stored token after token with fixed strides.
#[derive(Debug, Clone, Copy)]
pub struct BatchActs<'a> {
    /// Tokens in the batch.
    pub tokens: usize,
    /// f32 values, token `t` at `t * f32_stride`.
    pub f32s: &'a [f32],
    /// Distance between tokens in `f32s`.
    pub f32_stride: usize,
    /// int8 values, token `t` at `t * 32 * block_stride`.
    pub qs: &'a [i8],
    /// Block scales, token `t` at `t * block_stride`.
    pub scales: &'a [f32],
    /// Block sums (see [`Activations::sums`]), token `t` at `t * block_stride`.
    pub sums: &'a [f32],
    /// Blocks reserved per token.
    pub block_stride: usize,
}

impl<'a> BatchActs<'a> {
    /// Token `t`'s activations for a matrix of `cols` columns.
    pub fn token(&self, t: usize, cols: usize) -> Activations<'a> {
        let blocks = cols.div_ceil(crate::quant::BLOCK_LEN);
        let b = t * self.block_stride;
        Activations {
            f32s: &self.f32s[t * self.f32_stride..][..cols],
            qs: &self.qs[b * crate::quant::BLOCK_LEN..][..blocks * crate::quant::BLOCK_LEN],
            scales: &self.scales[b..][..blocks],
            sums: &self.sums[b..][..blocks],
        }
    }

    /// Tokens `range` as a batch of their own.
    pub fn slice(&self, range: core::ops::Range<usize>) -> BatchActs<'a> {
        let b = range.start * self.block_stride;
        BatchActs {
            tokens: range.len(),
            f32s: &self.f32s[range.start * self.f32_stride..],
            qs: &self.qs[b * crate::quant::BLOCK_LEN..],
            scales: &self.scales[b..],
            sums: &self.sums[b..],
            ..*self
        }
    }
}

/// Matrix product for a batch of tokens: `w` holds `rows` rows of a
/// `cols`-column matrix; `out[t * rows + r] = row r · token t`.
pub type MatmulFn = fn(w: &[u8], cols: usize, rows: usize, x: &BatchActs<'_>, out: &mut [f32]);

/// Matrix-vector product over a run of rows: `w` holds `out.len()` rows of
/// `row_bytes` bytes each; `out[r] = row r · x`.
pub type MatvecFn = fn(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]);
/// One attention head over cached positions (see [`scalar::attend`]).
pub type AttendFn = fn(
    q: &[f32],
    cache: scalar::KvView<'_>,
    scale: f32,
    sink: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
);
/// Activation quantizer: f32 → int8 blocks with f32 scales and scaled sums.
pub type QuantizeActsFn = fn(x: &[f32], qs: &mut [i8], scales: &mut [f32], sums: &mut [f32]);

/// A batched product as one `matvec` per token (each token's outputs are a
/// contiguous run of `rows`): for formats and ISAs whose matvec is fast but
/// that have no tile kernel of their own yet.
pub(crate) fn matmul_by_tokens(
    matvec: MatvecFn,
    dtype: DType,
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &mut [f32],
) {
    let row_bytes = dtype.row_bytes(cols);
    for (t, out) in out.chunks_exact_mut(rows).take(x.tokens).enumerate() {
        matvec(&w[..rows * row_bytes], row_bytes, &x.token(t, cols), out);
    }
}

/// Defines `pub(crate) fn $name`, a [`MatmulFn`] that runs the matvec
/// `$matvec` (weights of `$dtype`) once per token.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
macro_rules! matmul_per_token {
    ($name:ident, $matvec:ident, $dtype:ident) => {
        #[doc = concat!("Batched product: `", stringify!($matvec), "` once per token.")]
        pub(crate) fn $name(
            w: &[u8],
            cols: usize,
            rows: usize,
            x: &crate::kernels::BatchActs<'_>,
            out: &mut [f32],
        ) {
            crate::kernels::matmul_by_tokens($matvec, crate::DType::$dtype, w, cols, rows, x, out)
        }
    };
}
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
pub(crate) use matmul_per_token;

/// Checks the shapes every quantized fast kernel relies on for its pointer
/// arithmetic (one assert per call, not per row); returns the blocks per row.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
pub(crate) fn check_quantized(
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &[f32],
    block_bytes: usize,
) -> usize {
    let blocks = x.scales.len();
    assert!(
        row_bytes == blocks * block_bytes
            && x.qs.len() >= blocks * crate::quant::BLOCK_LEN
            && x.sums.len() >= blocks
            && w.len() >= out.len() * row_bytes,
        "matvec shapes disagree"
    );
    blocks
}

/// Checks the shapes every quantized batched kernel relies on for its
/// pointer arithmetic (one assert per call); returns the blocks per row.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn check_batch(
    w: &[u8],
    cols: usize,
    rows: usize,
    x: &BatchActs<'_>,
    out: &[f32],
    block_bytes: usize,
) -> usize {
    let blocks = cols.div_ceil(crate::quant::BLOCK_LEN);
    let last = x.tokens.saturating_sub(1);
    assert!(
        x.tokens > 0
            && w.len() >= rows * blocks * block_bytes
            && out.len() >= x.tokens * rows
            && x.block_stride >= blocks
            && x.qs.len() >= (last * x.block_stride + blocks) * crate::quant::BLOCK_LEN
            && x.scales.len() >= last * x.block_stride + blocks
            && x.sums.len() >= last * x.block_stride + blocks,
        "matmul shapes disagree"
    );
    blocks
}

/// Checks the buffers a fast activation quantizer writes (one assert per
/// call); returns the blocks.
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) fn check_activations(x: &[f32], qs: &[i8], scales: &[f32], sums: &[f32]) -> usize {
    let blocks = x.len().div_ceil(crate::quant::BLOCK_LEN);
    assert!(
        qs.len() >= blocks * crate::quant::BLOCK_LEN
            && scales.len() >= blocks
            && sums.len() >= blocks,
        "activation buffers too small"
    );
    blocks
}

/// Checks the shapes of a float fast kernel; returns the columns.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
pub(crate) fn check_float(
    w: &[u8],
    row_bytes: usize,
    x: &Activations<'_>,
    out: &[f32],
    elem: usize,
) -> usize {
    let cols = x.f32s.len();
    assert!(
        row_bytes == cols * elem && w.len() >= out.len() * row_bytes,
        "matvec shapes disagree"
    );
    cols
}

impl<'a> Activations<'a> {
    /// The prefix that a matrix of `cols` columns reads.
    pub fn for_cols(&self, cols: usize) -> Activations<'a> {
        let blocks = cols.div_ceil(crate::quant::BLOCK_LEN);
        Activations {
            f32s: &self.f32s[..cols],
            qs: &self.qs[..blocks * crate::quant::BLOCK_LEN],
            scales: &self.scales[..blocks],
            sums: &self.sums[..blocks],
        }
    }
}
