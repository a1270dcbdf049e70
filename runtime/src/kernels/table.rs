//! The dispatch table, filled in one place: the [`Kernels`] struct, the
//! scalar reference table, and per ISA the entries replaced after that
//! ISA's feature checks. Adding a weight format is one file per ISA folder
//! plus lines here; no ISA module installs its own kernels.

use super::{scalar, Activations, AttendFn, BatchActs, MatmulFn, Matrix, MatvecFn, QuantizeActsFn};
use crate::format::tensor::{DType, Layout};

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
    /// int8 weights in the rows4 layout.
    pub matvec_q8_rows4: MatvecFn,
    /// int4 weights in the rows4 layout.
    pub matvec_q4_rows4: MatvecFn,
    /// int8 weights in the rows4 layout, several tokens.
    pub matmul_q8_rows4: MatmulFn,
    /// int4 weights in the rows4 layout, several tokens.
    pub matmul_q4_rows4: MatmulFn,
    /// One attention head over cached positions ([`scalar::attend`]).
    pub attend: AttendFn,
    /// `gate = silu(gate) · up` ([`scalar::silu_mul`]).
    pub silu_mul: fn(gate: &mut [f32], up: &[f32]),
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
            matvec_q8_rows4: scalar::matvec_q8_rows4,
            matvec_q4_rows4: scalar::matvec_q4_rows4,
            matmul_q8_rows4: scalar::matmul_q8_rows4,
            matmul_q4_rows4: scalar::matmul_q4_rows4,
            attend: scalar::attend,
            silu_mul: scalar::silu_mul,
        }
    }

    /// The best kernels for this CPU: the scalar table with entries
    /// replaced by each ISA module whose features are present. With `std`,
    /// `MOTE_KERNELS=scalar` forces the reference, and on x86-64
    /// `MOTE_KERNELS=x86-avx2` the AVX2 table on a CPU that has AVX-512 too
    /// (to measure what AVX2-only CPUs get).
    pub fn detect() -> Self {
        let table = Self::scalar();
        #[cfg(feature = "std")]
        if std::env::var_os("MOTE_KERNELS").is_some_and(|v| v == "scalar") {
            return table;
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::env::var_os("MOTE_KERNELS").is_some_and(|v| v == "x86-avx2") {
            return x86_avx2(table);
        }
        #[cfg(target_arch = "x86_64")]
        let table = x86(table);
        #[cfg(target_arch = "aarch64")]
        let table = aarch64(table);
        #[cfg(target_arch = "riscv64")]
        let table = riscv(table);
        table
    }

    /// The matvec for weights of `dtype` stored in `layout`.
    pub fn matvec_fn(&self, dtype: DType, layout: Layout) -> MatvecFn {
        match (dtype, layout) {
            (DType::Q8, Layout::Rows4) => self.matvec_q8_rows4,
            (DType::Q4, Layout::Rows4) => self.matvec_q4_rows4,
            (DType::Q8, _) => self.matvec_q8,
            (DType::Q4, _) => self.matvec_q4,
            (DType::Mxfp4, _) => self.matvec_mxfp4,
            (DType::F16, _) => self.matvec_f16,
            (DType::F32, _) => self.matvec_f32,
        }
    }

    /// The batched product for weights of `dtype` stored in `layout`.
    pub fn matmul_fn(&self, dtype: DType, layout: Layout) -> MatmulFn {
        match (dtype, layout) {
            (DType::Q8, Layout::Rows4) => self.matmul_q8_rows4,
            (DType::Q4, Layout::Rows4) => self.matmul_q4_rows4,
            (DType::Q8, _) => self.matmul_q8,
            (DType::Q4, _) => self.matmul_q4,
            (DType::Mxfp4, _) => self.matmul_mxfp4,
            (DType::F16, _) => self.matmul_f16,
            (DType::F32, _) => self.matmul_f32,
        }
    }

    /// `out[t * rows + r] = w.row(r) · token t` for every token, on the calling thread.
    pub fn matmul(&self, w: &Matrix<'_>, x: &BatchActs<'_>, out: &mut [f32]) {
        debug_assert!(out.len() >= x.tokens * w.rows);
        (self.matmul_fn(w.dtype, w.layout))(w.data, w.cols, w.rows, x, out)
    }

    /// `out = w · x` over all rows, on the calling thread.
    pub fn matvec(&self, w: &Matrix<'_>, x: &Activations<'_>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), w.rows);
        let x = x.for_cols(w.cols);
        (self.matvec_fn(w.dtype, w.layout))(w.data, w.dtype.row_bytes(w.cols), &x, out)
    }
}

/// The x86-64 entries this CPU can run faster: AVX2 first, then AVX-512
/// VNNI over it where present.
#[cfg(target_arch = "x86_64")]
pub(super) fn x86(k: Kernels) -> Kernels {
    x86_avx512(x86_avx2(k))
}

/// The AVX2 + FMA + F16C table (no AVX-512): x86-64 CPUs since 2013.
#[cfg(target_arch = "x86_64")]
pub(super) fn x86_avx2(mut k: Kernels) -> Kernels {
    use super::x86::{attend, has_avx2, mxfp4, q4, q8};
    if has_avx2() {
        k.name = "x86-avx2";
        k.attend = attend::attend_avx2;
        k.matvec_q4 = q4::matvec_q4_avx2;
        k.matvec_q8 = q8::matvec_q8_avx2;
        k.matmul_q4 = q4::matmul_q4_avx2;
        k.matmul_q8 = q8::matmul_q8_avx2;
        k.matvec_mxfp4 = mxfp4::matvec_mxfp4_avx2;
        k.matmul_mxfp4 = mxfp4::matmul_mxfp4_avx2;
    }
    k
}

#[cfg(target_arch = "x86_64")]
fn x86_avx512(mut k: Kernels) -> Kernels {
    use super::x86::{f16, f32, has_avx512_vnni, q4, q8};
    if has_avx512_vnni() {
        k.name = "x86-avx512vnni";
        k.matvec_q4 = q4::matvec_q4_avx512;
        k.matvec_q8 = q8::matvec_q8_avx512;
        k.matvec_f16 = f16::matvec_f16_avx512;
        k.matvec_f32 = f32::matvec_f32_avx512;
        k.matmul_q4 = q4::matmul_q4_avx512;
        k.matmul_q8 = q8::matmul_q8_avx512;
    }
    k
}

/// The aarch64 entries this CPU can run faster: NEON, then dotprod over it
/// where present, then i8mm's batched products.
#[cfg(target_arch = "aarch64")]
pub(super) fn aarch64(mut k: Kernels) -> Kernels {
    use super::aarch64::{
        activations, f16, f32, has_dotprod, has_i8mm, has_neon, mxfp4, q4, q8, rows4,
    };
    if !has_neon() {
        return k;
    }
    k.name = "aarch64-neon";
    k.matvec_q4 = q4::matvec_q4_neon;
    k.matvec_q8 = q8::matvec_q8_neon;
    k.matmul_q4 = q4::matmul_q4_neon;
    k.matmul_q8 = q8::matmul_q8_neon;
    k.matvec_f16 = f16::matvec_f16_neon;
    k.matvec_f32 = f32::matvec_f32_neon;
    k.matmul_f16 = f16::matmul_f16_neon;
    k.matmul_f32 = f32::matmul_f32_neon;
    k.matvec_mxfp4 = mxfp4::matvec_mxfp4_neon;
    k.matmul_mxfp4 = mxfp4::matmul_mxfp4_neon;
    k.attend = f32::attend_neon;
    k.silu_mul = f32::silu_mul_neon;
    k.quantize_activations = activations::quantize_activations_neon;
    if has_dotprod() {
        k.name = "aarch64-neon-dotprod";
        k.matvec_q4 = rows4::matvec_q4_planar4_dotprod;
        k.matvec_q8 = q8::matvec_q8_dotprod;
        k.matmul_q4 = rows4::matmul_q4_planar4_dotprod;
        k.matmul_q8 = rows4::matmul_q8_planar4_dotprod;
        k.matvec_mxfp4 = mxfp4::matvec_mxfp4_dotprod;
        k.matmul_mxfp4 = mxfp4::matmul_mxfp4_dotprod;
        k.matvec_q4_rows4 = rows4::matvec_q4_rows4_dotprod;
        k.matvec_q8_rows4 = rows4::matvec_q8_rows4_dotprod;
        k.matmul_q4_rows4 = rows4::matmul_q4_rows4_dotprod;
        k.matmul_q8_rows4 = rows4::matmul_q8_rows4_dotprod;
        if has_i8mm() {
            k.name = "aarch64-neon-i8mm";
            k.matmul_q8 = q8::matmul_q8_i8mm;
        }
    }
    k
}

/// The riscv64 entries this CPU can run faster: RVV 1.0 where present.
#[cfg(target_arch = "riscv64")]
pub(super) fn riscv(mut k: Kernels) -> Kernels {
    use super::riscv::{activations, f16, f32, has_v, mxfp4, q4, q8};
    if has_v() {
        k.name = "riscv64-rvv";
        k.quantize_activations = activations::quantize_activations_rvv;
        k.matvec_mxfp4 = mxfp4::matvec_mxfp4_rvv;
        k.matmul_mxfp4 = mxfp4::matmul_mxfp4_rvv;
        k.matvec_q4 = q4::matvec_q4_rvv;
        k.matvec_q8 = q8::matvec_q8_rvv;
        k.matmul_q4 = q4::matmul_q4_rvv;
        k.matmul_q8 = q8::matmul_q8_rvv;
        k.matvec_f16 = f16::matvec_f16_rvv;
        k.matvec_f32 = f32::matvec_f32_rvv;
        k.matmul_f16 = f16::matmul_f16_rvv;
        k.matmul_f32 = f32::matmul_f32_rvv;
        k.attend = f32::attend_rvv;
        k.silu_mul = f32::silu_mul_rvv;
    }
    k
}
