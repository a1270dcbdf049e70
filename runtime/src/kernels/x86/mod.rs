//! x86-64 kernels: AVX2 with FMA and F16C, and AVX-512 (F, BW, VL, VNNI).
//!
//! int4 rows: the 16 nibble bytes of a block hold elements 0..16 (low
//! nibbles) and 16..32 (high). Four blocks load as one 64-byte vector; the
//! activation halves are permuted to match, and `vpdpbusd` multiplies the
//! unsigned nibbles (stored `q + 8`) with the signed activations. The `+ 8`
//! is removed once per row with the per-block activation sums. int8 rows
//! use `vpdpbusd` on |w| and the activations negated where w < 0. Scales are
//! planar in the row, so 16 of them convert with one `vcvtph2ps`. AVX2
//! has no `vpdpbusd`: `vpmaddubsw` (unsigned × signed byte pairs, i16)
//! then `vpmaddwd` by ones give the same exact block sums, two blocks a
//! 256-bit step; int8 and MXFP4 rows go through it as |w| against the
//! activations with w's sign (`vpsignb`).
//!
//! The batched products (prompt tokens) work in tiles of `TILE_ROWS` rows
//! × `TILE_TOKENS` tokens, so a weight block is loaded and unpacked once
//! for four tokens, not once per token: AVX-512 for int4 and int8, AVX2
//! for int4 (AVX2's int8 runs its matvec a token; see `q8`).
//!
//! One file per weight format holds that format's kernels for every
//! feature level; this module holds the feature checks and the helpers
//! several formats share. Nothing here is ever reached except through
//! `kernels::table`, which installs each kernel after its feature check;
//! tests compare each with `scalar`.

pub(super) mod attend;
pub(super) mod f16;
pub(super) mod f32;
pub(super) mod mxfp4;
pub(super) mod q4;
pub(super) mod q8;

use core::arch::x86_64::*;

use crate::kernels::Activations;

/// True when the CPU has everything the AVX-512 kernels use.
pub(super) fn has_avx512_vnni() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("fma")
        } else {
            cfg!(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vl",
                target_feature = "avx512vnni",
                target_feature = "f16c",
                target_feature = "fma"
            ))
        }
    }
}

/// True when the CPU has everything the AVX2 kernels use.
pub(super) fn has_avx2() -> bool {
    cfg_if::cfg_if! {
        if #[cfg(feature = "std")] {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        } else {
            cfg!(all(target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))
        }
    }
}

/// Mask of the first `n` of 64 byte lanes.
#[inline(always)]
fn byte_mask(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// Mask of the first `n` of 16 lanes.
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Eight blocks' combined scales `d_w · d_x` and `d_w · sums` from block
/// `g` on (fewer at the row's end: the rest are zero).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales8(
    row: *const u8,
    blocks: usize,
    g: usize,
    x: &Activations<'_>,
) -> (__m256, __m256) {
    let n = (blocks - g).min(8);
    // SAFETY: blocks g..g + n exist in the row and in the activations.
    let (dw, dx, sx) = unsafe {
        (
            f16x8(row.add(2 * g), n),
            f32x8(x.scales.as_ptr().add(g), n),
            f32x8(x.sums.as_ptr().add(g), n),
        )
    };
    (_mm256_mul_ps(dw, dx), _mm256_mul_ps(dw, sx))
}

/// `n ≤ 8` f16 values at `p` (unaligned) as f32 lanes, zeros after them.
///
/// Safety: `2n` bytes at `p` are readable.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16x8(p: *const u8, n: usize) -> __m256 {
    if n == 8 {
        // SAFETY: 16 bytes at p (the caller's contract).
        return _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) });
    }
    let mut h = [0u8; 16];
    // SAFETY: 2n ≤ 16 bytes at p, into the local buffer.
    unsafe { core::ptr::copy_nonoverlapping(p, h.as_mut_ptr(), 2 * n) };
    // SAFETY: h is 16 bytes.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr() as *const __m128i) })
}

/// `n ≤ 8` f32 values at `p` as lanes, zeros after them.
///
/// Safety: `n` f32 at `p` are readable.
#[target_feature(enable = "avx2")]
unsafe fn f32x8(p: *const f32, n: usize) -> __m256 {
    if n == 8 {
        // SAFETY: 8 f32 at p (the caller's contract).
        return unsafe { _mm256_loadu_ps(p) };
    }
    let mut v = [0.0f32; 8];
    // SAFETY: n ≤ 8 f32 at p, into the local buffer.
    unsafe { core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n) };
    // SAFETY: v is 8 f32.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2")]
unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Row and token tile of the batched products: R × T accumulators stay in
/// registers while each weight chunk is unpacked once for T tokens.
const TILE_ROWS: usize = 2;
const TILE_TOKENS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{
        compare_matmul_with_scalar, compare_misaligned_with_scalar, compare_with_scalar,
    };
    use crate::kernels::{table, Kernels};

    #[test]
    fn avx2_kernels_match_scalar() {
        if !has_avx2() {
            let want = std::env::var("MOTE_EXPECT_KERNELS").unwrap_or_default();
            assert!(
                !want.starts_with("x86-"),
                "this CPU was expected to have AVX2"
            );
            std::println!("no AVX2 on this CPU: only the scalar table runs");
            return;
        }
        let k = table::x86_avx2(Kernels::scalar());
        assert_eq!(k.name, "x86-avx2");
        compare_with_scalar(&k);
        compare_misaligned_with_scalar(&k);
        compare_matmul_with_scalar(&k);
    }

    #[test]
    fn avx512_kernels_match_scalar() {
        if !has_avx512_vnni() {
            // CI names the table its CPU must get; elsewhere this CPU simply
            // lacks the features and the scalar table is what runs.
            let want = std::env::var("MOTE_EXPECT_KERNELS").unwrap_or_default();
            assert_ne!(
                want, "x86-avx512vnni",
                "this CPU was expected to have AVX-512 VNNI"
            );
            std::println!("no AVX-512 VNNI on this CPU: only the scalar table runs");
            return;
        }
        assert_eq!(table::x86(Kernels::scalar()).name, "x86-avx512vnni");
        compare_with_scalar(&table::x86(Kernels::scalar()));
        compare_matmul_with_scalar(&table::x86(Kernels::scalar()));
    }
}
