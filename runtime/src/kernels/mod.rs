//! Compute kernels behind one table of function pointers.
//!
//! [`Kernels::scalar`] is the reference and the `no_std` fallback; ISA
//! modules override entries after feature checks, and each fast entry is
//! tested against its scalar twin. The table is chosen once per session.
//! Setting `MOTE_KERNELS=scalar` (std builds) forces the reference for A/B runs.

pub mod scalar;

use crate::format::tensor::DType;

/// A weight matrix viewed in place: `rows` rows of `dtype.row_bytes(cols)` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// Element type.
    pub dtype: DType,
    /// Number of rows (outputs).
    pub rows: usize,
    /// Logical number of columns (inputs).
    pub cols: usize,
    /// The bytes, exactly `rows * dtype.row_bytes(cols)` long.
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.dtype.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }
}

/// An activation vector in both forms the kernels read: f32 for float
/// weights, int8 blocks for quantized weights.
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    /// The f32 values.
    pub f32s: &'a [f32],
    /// int8 values, `32 * blocks` of them (zero padded).
    pub qs: &'a [i8],
    /// One scale per block.
    pub scales: &'a [f32],
}

/// int8 × int8 block dot product: `row` is int8 blocks, the activation int8 blocks.
pub type DotQ8Fn = fn(row: &[u8], qs: &[i8], scales: &[f32]) -> f32;
/// int4 × int8 block dot product.
pub type DotQ4Fn = fn(row: &[u8], qs: &[i8], scales: &[f32]) -> f32;
/// Float weights (f32 or f16 bytes) dotted with f32 activations.
pub type DotFloatFn = fn(row: &[u8], x: &[f32]) -> f32;
/// Activation quantizer: f32 → int8 blocks with f32 scales.
pub type QuantizeActsFn = fn(x: &[f32], qs: &mut [i8], scales: &mut [f32]);

/// The kernels a session uses, filled once.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// Which implementation was chosen, for `mote inspect` / `mote bench`.
    pub name: &'static str,
    /// int8 weights.
    pub dot_q8: DotQ8Fn,
    /// int4 weights.
    pub dot_q4: DotQ4Fn,
    /// f16 weights.
    pub dot_f16: DotFloatFn,
    /// f32 weights.
    pub dot_f32: DotFloatFn,
    /// Activation quantizer.
    pub quantize_activations: QuantizeActsFn,
}

impl Kernels {
    /// The portable reference kernels.
    pub fn scalar() -> Self {
        Kernels {
            name: "scalar",
            dot_q8: scalar::dot_q8,
            dot_q4: scalar::dot_q4,
            dot_f16: scalar::dot_f16,
            dot_f32: scalar::dot_f32,
            quantize_activations: crate::quant::quantize_activations,
        }
    }

    /// The best kernels for this CPU. Only the scalar table exists yet.
    pub fn detect() -> Self {
        Self::scalar()
    }

    /// `out[r] = dot(w.row(r), x)` for every row.
    pub fn matvec(&self, w: &Matrix<'_>, x: &Activations<'_>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), w.rows);
        let blocks = w.cols.div_ceil(crate::quant::BLOCK_LEN);
        let (qs, scales) = (
            &x.qs[..blocks * crate::quant::BLOCK_LEN],
            &x.scales[..blocks],
        );
        let xf = &x.f32s[..w.cols];
        match w.dtype {
            DType::Q8 => out
                .iter_mut()
                .enumerate()
                .for_each(|(r, o)| *o = (self.dot_q8)(w.row(r), qs, scales)),
            DType::Q4 => out
                .iter_mut()
                .enumerate()
                .for_each(|(r, o)| *o = (self.dot_q4)(w.row(r), qs, scales)),
            DType::F16 => out
                .iter_mut()
                .enumerate()
                .for_each(|(r, o)| *o = (self.dot_f16)(w.row(r), xf)),
            DType::F32 => out
                .iter_mut()
                .enumerate()
                .for_each(|(r, o)| *o = (self.dot_f32)(w.row(r), xf)),
        }
    }
}
