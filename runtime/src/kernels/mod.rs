//! Compute kernels behind one table of function pointers.
//!
//! [`Kernels::scalar`] is the reference and the `no_std` fallback; ISA
//! modules override entries after feature checks, and each fast entry is
//! tested against its scalar twin. The table is chosen once per session.
//! Setting `MOTE_KERNELS=scalar` (std builds) forces the reference for A/B runs.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "riscv64")]
pub mod riscv;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

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
/// Activation quantizer: f32 → int8 blocks with f32 scales and scaled sums.
pub type QuantizeActsFn = fn(x: &[f32], qs: &mut [i8], scales: &mut [f32], sums: &mut [f32]);

/// The kernels a session uses, filled once.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// Which implementation was chosen, for `mote inspect` / `mote bench`.
    pub name: &'static str,
    /// int8 weights.
    pub matvec_q8: MatvecFn,
    /// int4 weights.
    pub matvec_q4: MatvecFn,
    /// MXFP4 weights.
    pub matvec_mxfp4: MatvecFn,
    /// f16 weights.
    pub matvec_f16: MatvecFn,
    /// f32 weights.
    pub matvec_f32: MatvecFn,
    /// Activation quantizer.
    pub quantize_activations: QuantizeActsFn,
    /// int8 weights, several tokens.
    pub matmul_q8: MatmulFn,
    /// int4 weights, several tokens.
    pub matmul_q4: MatmulFn,
    /// MXFP4 weights, several tokens.
    pub matmul_mxfp4: MatmulFn,
    /// f16 weights, several tokens.
    pub matmul_f16: MatmulFn,
    /// f32 weights, several tokens.
    pub matmul_f32: MatmulFn,
}

impl Kernels {
    /// The portable reference kernels.
    pub fn scalar() -> Self {
        Kernels {
            name: "scalar",
            matvec_q8: scalar::matvec_q8,
            matvec_q4: scalar::matvec_q4,
            matvec_mxfp4: scalar::matvec_mxfp4,
            matvec_f16: scalar::matvec_f16,
            matvec_f32: scalar::matvec_f32,
            quantize_activations: crate::quant::quantize_activations,
            matmul_q8: scalar::matmul_q8,
            matmul_q4: scalar::matmul_q4,
            matmul_mxfp4: scalar::matmul_mxfp4,
            matmul_f16: scalar::matmul_f16,
            matmul_f32: scalar::matmul_f32,
        }
    }

    /// The best kernels for this CPU: the scalar table with entries
    /// replaced by each ISA module whose features are present. With `std`,
    /// `MOTE_KERNELS=scalar` forces the reference.
    pub fn detect() -> Self {
        let table = Self::scalar();
        #[cfg(feature = "std")]
        if std::env::var_os("MOTE_KERNELS").is_some_and(|v| v == "scalar") {
            return table;
        }
        #[cfg(target_arch = "x86_64")]
        let table = x86::upgrade(table);
        #[cfg(target_arch = "aarch64")]
        let table = aarch64::upgrade(table);
        #[cfg(target_arch = "riscv64")]
        let table = riscv::upgrade(table);
        table
    }

    /// The matvec for weights of `dtype`.
    pub fn matvec_fn(&self, dtype: DType) -> MatvecFn {
        match dtype {
            DType::Q8 => self.matvec_q8,
            DType::Q4 => self.matvec_q4,
            DType::Mxfp4 => self.matvec_mxfp4,
            DType::F16 => self.matvec_f16,
            DType::F32 => self.matvec_f32,
        }
    }

    /// The batched product for weights of `dtype`.
    pub fn matmul_fn(&self, dtype: DType) -> MatmulFn {
        match dtype {
            DType::Q8 => self.matmul_q8,
            DType::Q4 => self.matmul_q4,
            DType::Mxfp4 => self.matmul_mxfp4,
            DType::F16 => self.matmul_f16,
            DType::F32 => self.matmul_f32,
        }
    }

    /// `out[t * rows + r] = w.row(r) · token t` for every token, on the calling thread.
    pub fn matmul(&self, w: &Matrix<'_>, x: &BatchActs<'_>, out: &mut [f32]) {
        debug_assert!(out.len() >= x.tokens * w.rows);
        (self.matmul_fn(w.dtype))(w.data, w.cols, w.rows, x, out)
    }

    /// `out = w · x` over all rows, on the calling thread.
    pub fn matvec(&self, w: &Matrix<'_>, x: &Activations<'_>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), w.rows);
        let x = x.for_cols(w.cols);
        (self.matvec_fn(w.dtype))(w.data, w.dtype.row_bytes(w.cols), &x, out)
    }
}

/// A batched product as one `matvec` per token (each token's outputs are a
/// contiguous run of `rows`): for compute-bound formats whose matvec is
/// fast but that have no batched kernel of their own.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
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

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use std::vec;

    use super::*;
    use crate::quant::{encode_row, quantize_activations, BLOCK_LEN};

    /// xorshift64*: deterministic, dependency-free test randomness.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in [-1, 1).
        pub(crate) fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// `rows × cols` values encoded as `dtype`, starting `offset` bytes into the buffer.
    pub(crate) fn encode(
        dtype: DType,
        w: &[f32],
        rows: usize,
        cols: usize,
        offset: usize,
    ) -> vec::Vec<u8> {
        let rb = dtype.row_bytes(cols);
        let mut bytes = vec![0u8; offset + rows * rb];
        for r in 0..rows {
            encode_row(
                dtype,
                &w[r * cols..(r + 1) * cols],
                &mut bytes[offset + r * rb..][..rb],
            );
        }
        bytes
    }

    /// Weights at an odd address (never so in model files) still give the
    /// scalar result.
    pub(crate) fn compare_misaligned_with_scalar(fast: &Kernels) {
        let (rows, cols) = (3usize, 161usize);
        let mut rng = Rng(7);
        let w: vec::Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
        let x: vec::Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
        let blocks = cols.div_ceil(BLOCK_LEN);
        let mut qs = vec![0i8; blocks * BLOCK_LEN];
        let (mut sc, mut sums) = (vec![0.0f32; blocks], vec![0.0f32; blocks]);
        quantize_activations(&x, &mut qs, &mut sc, &mut sums);
        let acts = Activations {
            f32s: &x,
            qs: &qs,
            scales: &sc,
            sums: &sums,
        };
        for dtype in [DType::Q4, DType::Q8, DType::Mxfp4, DType::F16, DType::F32] {
            let buf = encode(dtype, &w, rows, cols, 1);
            let m = Matrix {
                dtype,
                rows,
                cols,
                data: &buf[1..],
            };
            let (mut want, mut got) = ([0.0f32; 3], [0.0f32; 3]);
            Kernels::scalar().matvec(&m, &acts, &mut want);
            fast.matvec(&m, &acts, &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{} {dtype}: {a} vs {b}",
                    fast.name
                );
            }
        }
    }

    /// Row patterns that stress the kernels: random, all-zero, one huge
    /// value, all at the positive or negative extreme, tiny.
    fn fill(rng: &mut Rng, pattern: usize, out: &mut [f32]) {
        let scale = [1.0, 0.0, 1.0, 1.0, 1.0, 1e-6][pattern % 6];
        let middle = out.len() / 2;
        for (i, v) in out.iter_mut().enumerate() {
            *v = match pattern % 6 {
                2 if i == middle => 1000.0,
                3 => 7.5,
                4 => -7.5,
                _ => rng.unit() * scale * 3.0,
            };
        }
    }

    /// Runs every matvec of `fast` against the scalar table on awkward
    /// shapes; integer sums must agree, so only float summation order may
    /// differ: within 1e-5 of Σ|w·x|.
    pub(crate) fn compare_with_scalar(fast: &Kernels) {
        let scalar = Kernels::scalar();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let sizes = [
            1usize, 5, 31, 32, 33, 63, 64, 65, 96, 100, 127, 128, 129, 255, 500, 512, 513, 1024,
            1040, 2816, 4099,
        ];
        for &cols in &sizes {
            for pattern in 0..6 {
                let rows = 1 + (cols + pattern) % 4;
                let blocks = cols.div_ceil(BLOCK_LEN);
                let mut w = vec![0.0f32; rows * cols];
                for r in 0..rows {
                    fill(&mut rng, pattern + r, &mut w[r * cols..(r + 1) * cols]);
                }
                let mut x = vec![0.0f32; cols];
                fill(&mut rng, (pattern * 7 + 1) % 6, &mut x);
                let mut qs = vec![0i8; blocks * BLOCK_LEN];
                let (mut sc, mut sums) = (vec![0.0f32; blocks], vec![0.0f32; blocks]);
                (fast.quantize_activations)(&x, &mut qs, &mut sc, &mut sums);
                let (mut qs2, mut sc2, mut sums2) = (qs.clone(), sc.clone(), sums.clone());
                quantize_activations(&x, &mut qs2, &mut sc2, &mut sums2);
                assert_eq!(
                    (&qs, &sc, &sums),
                    (&qs2, &sc2, &sums2),
                    "activation quantizer, cols {cols}"
                );
                let acts = Activations {
                    f32s: &x,
                    qs: &qs,
                    scales: &sc,
                    sums: &sums,
                };
                for dtype in [DType::Q4, DType::Q8, DType::Mxfp4, DType::F16, DType::F32] {
                    let bytes = encode(dtype, &w, rows, cols, 0);
                    let m = Matrix {
                        dtype,
                        rows,
                        cols,
                        data: &bytes,
                    };
                    let (mut want, mut got) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                    scalar.matvec(&m, &acts, &mut want);
                    fast.matvec(&m, &acts, &mut got);
                    for r in 0..rows {
                        let row = &w[r * cols..(r + 1) * cols];
                        let magnitude: f32 = row.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                        let tol = 2e-5 * magnitude + 1e-20;
                        assert!(
                            (want[r] - got[r]).abs() <= tol,
                            "{} {dtype} cols {cols} pattern {pattern} row {r}: scalar {} vs {} (tol {tol})",
                            fast.name, want[r], got[r]
                        );
                    }
                }
            }
        }
    }

    /// Runs every batched product of `fast` against the scalar table:
    /// 1 to 7 tokens, awkward strides, the same shapes as above.
    pub(crate) fn compare_matmul_with_scalar(fast: &Kernels) {
        let scalar = Kernels::scalar();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for &cols in &[1usize, 31, 32, 33, 64, 100, 129, 513, 1040, 2816] {
            for tokens in 1..=7 {
                let rows = 1 + (cols + tokens) % 5;
                let blocks = cols.div_ceil(BLOCK_LEN);
                let stride = blocks + tokens % 2; // tokens need not be packed
                let mut w = vec![0.0f32; rows * cols];
                for r in 0..rows {
                    fill(&mut rng, r + tokens, &mut w[r * cols..(r + 1) * cols]);
                }
                let f_stride = cols + 3;
                let mut xf = vec![0.0f32; tokens * f_stride];
                let mut qs = vec![0i8; tokens * stride * BLOCK_LEN];
                let (mut sc, mut sums) =
                    (vec![0.0f32; tokens * stride], vec![0.0f32; tokens * stride]);
                for t in 0..tokens {
                    fill(
                        &mut rng,
                        t * 5 + 1,
                        &mut xf[t * f_stride..t * f_stride + cols],
                    );
                    let b = t * stride;
                    quantize_activations(
                        &xf[t * f_stride..t * f_stride + cols],
                        &mut qs[b * BLOCK_LEN..(b + blocks) * BLOCK_LEN],
                        &mut sc[b..b + blocks],
                        &mut sums[b..b + blocks],
                    );
                }
                let x = BatchActs {
                    tokens,
                    f32s: &xf,
                    f32_stride: f_stride,
                    qs: &qs,
                    scales: &sc,
                    sums: &sums,
                    block_stride: stride,
                };
                for dtype in [DType::Q4, DType::Q8, DType::Mxfp4, DType::F16, DType::F32] {
                    let bytes = encode(dtype, &w, rows, cols, 0);
                    let m = Matrix {
                        dtype,
                        rows,
                        cols,
                        data: &bytes,
                    };
                    let (mut want, mut got) =
                        (vec![0.0f32; tokens * rows], vec![0.0f32; tokens * rows]);
                    scalar.matmul(&m, &x, &mut want);
                    fast.matmul(&m, &x, &mut got);
                    for t in 0..tokens {
                        for r in 0..rows {
                            let row = &w[r * cols..(r + 1) * cols];
                            let xt = &xf[t * f_stride..t * f_stride + cols];
                            let magnitude: f32 =
                                row.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                            let tol = 2e-5 * magnitude + 1e-20;
                            let (a, b) = (want[t * rows + r], got[t * rows + r]);
                            assert!(
                                (a - b).abs() <= tol,
                                "{} matmul {dtype} cols {cols} tokens {tokens} token {t} row {r}: scalar {a} vs {b}",
                                fast.name
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn detected_kernels_match_scalar() {
        compare_with_scalar(&Kernels::detect());
        compare_matmul_with_scalar(&Kernels::detect());
    }
}
