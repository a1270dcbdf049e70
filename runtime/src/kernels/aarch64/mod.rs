//! aarch64 kernels: NEON, and dotprod (`sdot`) and i8mm where the CPU has them.
//!
//! Two ways of walking quantized rows:
//!
//! - four rows a block (`rows4.rs`, dotprod): one register holds the same
//!   four value positions of four rows, so `sdot` by element gives a block's
//!   sums for four rows at once. Rows4 files are stored so; planar rows are
//!   transposed into it in registers. The int4 matvec, the int4 and int8
//!   batched products (and int8's on i8mm: `smmla` in `tile.rs`).
//! - one row a group of four blocks (this module's `matvec_blocks`), four
//!   rows at a time sharing the activation loads: each group yields one
//!   `int32x4` of the four blocks' exact sums, which converts to f32 and
//!   meets the four scale products `d_w · d_x` in one multiply-add. The
//!   int8 and MXFP4 matvecs with dotprod (a planar int8 block needs no
//!   unpacking, so the transposes would cost more than the folds), and
//!   every NEON-only matvec (widening multiplies, `smull`; int4 nibbles made
//!   signed first). A last group of fewer than four blocks is copied into
//!   zero-padded stack buffers (zero scales and zero activations add
//!   nothing), so no load ever leaves the row or the activations.
//!
//! Per block the integer arithmetic is the scalar kernel's, exact for every
//! i8 input (−128 included); only the order of the float sums differs.
//! `vdotq_s32` is still unstable, so `sdot` is emitted with `asm!` inside
//! functions compiled with `target_feature(enable = "dotprod")`.
//!
//! MXFP4 rows (gpt-oss) decode their nibbles with one `tbl` per nibble set
//! into FP4 values doubled (signed, exact as i8), then take the same paths.
//!
//! Block scales are f16; four convert with one `fcvtl`, also via `asm!`
//! because `vcvt_f32_f16` became stable only in Rust 1.94 (the crate's MSRV
//! is older). f16 and f32 rows use four f32 accumulators, with a scalar tail;
//! `f32.rs` also holds attention's scores and values, SwiGLU and exp, and
//! `activations.rs` the activation quantizer, in NEON.
//!
//! One file per weight format holds that format's kernels for every
//! feature level (`rows4.rs` the four-row kernels int4 and int8 share);
//! this module holds the feature checks and the helpers several formats
//! share. Nothing here is ever reached except through `kernels::table`,
//! which installs each kernel after its feature check; tests compare each
//! with `scalar`.

pub(super) mod activations;
pub(super) mod f16;
pub(super) mod f32;
pub(super) mod mxfp4;
pub(super) mod q4;
pub(super) mod q8;
pub(super) mod rows4;
mod tile;

use core::arch::aarch64::*;
use core::arch::asm;

use crate::kernels::Activations;
use crate::quant::{BLOCK_LEN, Q8_VALUE_BYTES};

/// True when the CPU has Advanced SIMD (every aarch64 Linux CPU does).
pub(super) fn has_neon() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_aarch64_feature_detected!("neon")
        } else {
            cfg!(target_feature = "neon")
        }
    }
}

/// True when the CPU has the dot product instructions (`sdot`, Armv8.2+).
pub(super) fn has_dotprod() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_aarch64_feature_detected!("dotprod")
        } else {
            cfg!(target_feature = "dotprod")
        }
    }
}

/// True when the CPU has the int8 matrix multiply (`smmla`, Armv8.6+).
pub(super) fn has_i8mm() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_aarch64_feature_detected!("i8mm")
        } else {
            cfg!(target_feature = "i8mm")
        }
    }
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

/// `out[r] = row r · x` for quantized rows of `blocks` blocks, with the
/// integer work of format/engine `G`.
///
/// Safety: the caller has run `check_quantized` for `G`'s block size, and the CPU
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
        // (`check_quantized`: w holds out.len() rows of row_bytes).
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

#[cfg(test)]
mod tests {
    use super::f16::matvec_f16_neon;
    use super::f32::matvec_f32_neon;
    use super::mxfp4::{matmul_mxfp4_neon, matvec_mxfp4_neon};
    use super::q4::matvec_q4_neon;
    use super::q8::{matvec_q8_dotprod, matvec_q8_neon};
    use super::*;
    use crate::format::tensor::Layout;
    use crate::kernels::check::compare_with_scalar;
    use crate::kernels::{scalar, table, BatchActs, Kernels, MatvecFn};
    use crate::quant::{Q4_BLOCK_BYTES, Q8_BLOCK_BYTES};
    use crate::DType;

    /// The table must follow the CPU: `MOTE_EXPECT_KERNELS` names it when
    /// set (`targets/cross-test.sh` sets it for each qemu CPU); unset, any
    /// fast table will do (every aarch64 CPU has NEON).
    #[test]
    fn detected_kernels_are_the_expected_ones_and_match_scalar() {
        let fast = table::aarch64(Kernels::scalar());
        let want = std::env::var("MOTE_EXPECT_KERNELS");
        std::println!("kernels: {} (expected: {want:?})", fast.name);
        match want {
            Ok(want) => assert_eq!(fast.name, want),
            Err(_) => assert_ne!(fast.name, "scalar"),
        }
        compare_with_scalar(&fast);
        crate::kernels::check::compare_matmul_with_scalar(&fast);
    }

    /// The dotprod tiles are checked even on CPUs that have i8mm.
    #[test]
    fn dotprod_tiles_match_scalar() {
        if !has_dotprod() {
            return;
        }
        let mut k = table::aarch64(Kernels::scalar());
        k.name = "aarch64-neon-dotprod (forced)";
        k.matmul_q4 = rows4::matmul_q4_planar4_dotprod;
        k.matmul_q8 = rows4::matmul_q8_planar4_dotprod;
        crate::kernels::check::compare_matmul_with_scalar(&k);
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
        crate::kernels::check::compare_matmul_with_scalar(&k);
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
            q4.push(("dotprod", rows4::matvec_q4_planar4_dotprod));
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

    /// `tokens` tokens of `blocks` blocks of −128 with scale 1.
    fn minus_128(
        tokens: usize,
        blocks: usize,
    ) -> (std::vec::Vec<i8>, std::vec::Vec<f32>, std::vec::Vec<f32>) {
        let qs = std::vec![-128i8; tokens * blocks * BLOCK_LEN];
        let f32s = std::vec![0.0f32; tokens * blocks * BLOCK_LEN]; // read by nothing here
        (qs, std::vec![1.0f32; tokens * blocks], f32s)
    }

    /// [`minus_128`]'s buffers as a batch.
    fn batch<'a>(
        tokens: usize,
        blocks: usize,
        qs: &'a [i8],
        ones: &'a [f32],
        f32s: &'a [f32],
    ) -> BatchActs<'a> {
        BatchActs {
            tokens,
            f32s,
            f32_stride: blocks * BLOCK_LEN,
            qs,
            scales: ones,
            sums: ones,
            block_stride: blocks,
        }
    }

    /// The planar batched tiles (dotprod's four-row `sdot` tiles, and the
    /// int8 i8mm one where present) are exact at the i8 extremes too: three
    /// tokens of −128 against rows of −128 / 127 (int8) and nibbles 0 / 15
    /// (int4), 7 blocks (a full group and a padded one), 5 rows (a full
    /// tile and a partial one).
    #[test]
    fn extreme_int8_values_are_exact_in_batches() {
        if !has_dotprod() {
            return;
        }
        let (blocks, tokens, rows) = (7, 3, 5);
        let (qs, ones, f32s) = minus_128(tokens, blocks);
        let x = batch(tokens, blocks, &qs, &ones, &f32s);
        type Matmul = crate::kernels::MatmulFn;
        let mut kernels: std::vec::Vec<(Matmul, Matmul)> = std::vec![(
            rows4::matmul_q8_planar4_dotprod,
            rows4::matmul_q4_planar4_dotprod,
        )];
        if has_i8mm() {
            kernels.push((q8::matmul_q8_i8mm, rows4::matmul_q4_planar4_dotprod));
        }
        let cases = kernels.iter().flat_map(|&(f8, f4)| {
            [(0x80u8, 0x00u8), (0x7f, 0xff)].map(|(b8, b4)| {
                [
                    (b8, Q8_BLOCK_BYTES, scalar::matmul_q8 as Matmul, f8),
                    (b4, Q4_BLOCK_BYTES, scalar::matmul_q4 as Matmul, f4),
                ]
            })
        });
        for (byte, block_bytes, reference, fast) in cases.flatten() {
            let mut w = std::vec![byte; rows * blocks * block_bytes];
            for row in w.chunks_exact_mut(blocks * block_bytes) {
                for b in 0..blocks {
                    row[2 * b..2 * b + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                }
            }
            let cols = blocks * BLOCK_LEN;
            let (mut want, mut got) = ([0.0f32; 15], [0.0f32; 15]);
            reference(&w, cols, rows, &x, &mut want);
            fast(&w, cols, rows, &x, &mut got);
            assert_eq!(got, want, "byte {byte:#x}");
        }
    }

    /// The rows4 kernels are exact at the i8 extremes: int4's `16 · q`
    /// operands reach −128 too. 5 rows (a group and a planar row), 7
    /// blocks, three tokens of −128, against the planar scalar kernels.
    #[test]
    fn extreme_int8_values_are_exact_in_rows4() {
        if !has_dotprod() {
            return;
        }
        let (blocks, tokens, rows) = (7, 3, 5);
        let (qs, ones, f32s) = minus_128(tokens, blocks);
        let x = batch(tokens, blocks, &qs, &ones, &f32s);
        let cols = blocks * BLOCK_LEN;
        for (b8, b4) in [(0x80u8, 0x00u8), (0x7f, 0xff)] {
            for (dtype, byte) in [(DType::Q8, b8), (DType::Q4, b4)] {
                let row_bytes = dtype.row_bytes(cols);
                let mut w = std::vec![byte; rows * row_bytes];
                for row in w.chunks_exact_mut(row_bytes) {
                    for b in 0..blocks {
                        row[2 * b..2 * b + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                    }
                }
                let mut packed = std::vec![0u8; w.len()];
                crate::quant::rows4_from_planar(dtype, cols, &w, &mut packed);
                let scalar = Kernels::scalar();
                let fast = table::aarch64(Kernels::scalar());
                let (mut want, mut got) = ([0.0f32; 15], [0.0f32; 15]);
                (scalar.matmul_fn(dtype, Layout::Planar))(&w, cols, rows, &x, &mut want);
                (fast.matmul_fn(dtype, Layout::Rows4))(&packed, cols, rows, &x, &mut got);
                assert_eq!(got, want, "{dtype} byte {byte:#x}");
                let mut one = [0.0f32; 5];
                (fast.matvec_fn(dtype, Layout::Rows4))(
                    &packed,
                    row_bytes,
                    &x.token(0, cols),
                    &mut one,
                );
                assert_eq!(one, want[..5], "{dtype} matvec byte {byte:#x}");
            }
        }
    }

    /// Rounding ties go away from zero exactly as the scalar quantizer's.
    #[test]
    fn neon_activation_rounding_matches_scalar_at_ties() {
        crate::kernels::check::compare_rounding_ties_with_scalar(
            super::activations::quantize_activations_neon,
        );
    }

    /// Weights at an odd address (never so in model files) still give the
    /// scalar result.
    #[test]
    fn misaligned_weights_match_scalar() {
        crate::kernels::check::compare_misaligned_with_scalar(&table::aarch64(Kernels::scalar()));
    }
}
