//! riscv64 kernels: RVV 1.0.
//!
//! Stable Rust has neither RVV intrinsics nor `target_feature(enable =
//! "v")`, so each kernel's inner loop is one `asm!` block wrapped in
//! `.option push / .option arch, +v / .option pop`: the binary is built for
//! plain rv64gc, holds both these and the scalar kernels, and `kernels::table`
//! picks at run time. Each asm block sets `vl`/`vtype` itself before its
//! first vector instruction and declares every vector register it touches
//! as clobbered (vl/vtype are not preserved across calls in the RISC-V ABI;
//! in the default build no compiled code uses them). The code is
//! vector-length agnostic: it needs VLEN ≥ 128, which the V extension
//! guarantees, and never assumes more.
//!
//! Quantized rows of an even number of blocks (`lanes_fit`: their values
//! are then 4-byte aligned, as in most model widths) run the lanes
//! kernels: one row a 32-bit lane, a tile of VLEN / 8 int4 rows (VLEN / 16
//! int8 rows) per vector op, so a wider vector unit computes more rows per
//! instruction. A block's bytes come in 4-byte chunks with strided loads
//! (stride = row bytes) and the activations with stride-0 loads (a
//! broadcast); the per-row sums are folded with narrowing shifts
//! (`q4::q4_lanes` says how).
//!
//! Other quantized rows go in groups of four blocks. Per block, `vwmul` (int8)
//! or `vwmul` + `vwmacc` on signed nibbles (int4) give i16 products, and
//! `vwredsum` sums them exactly into an i32 (seeded from a register zeroed
//! at e32: the seed is read at 2·SEW, so an e16 write would leave its upper
//! half stale). Four `vwredsum`s land in element 0 of four registers; three
//! `vslideup`s at e16 gather them into one register (each slide overwrites
//! the previous slide's junk), so the group's sums meet their four f16
//! weight scales and activation scales in e32 vector ops and one `vfmacc`.
//! Per block the arithmetic is the scalar kernel's; only the float
//! summation order differs. A last group of fewer than four blocks is
//! copied into zero-padded buffers. The instruction count per block of
//! these does not shrink with a wider VLEN (a block is 32 values, VLEN ≥
//! 128 holds it).
//!
//! MXFP4 rows run one block per step: a `vrgather` through the doubled
//! FP4 table for each nibble half and a two-field segment load that splits
//! the activations into the matching even and odd elements
//! (`mxfp4::mxfp4_blocks`).
//!
//! f16 values convert to f32 with integer ops (no Zvfhmin needed): the
//! 15 magnitude bits shifted into f32 position and multiplied by 2^112
//! give the exact value of normal and subnormal halves; inf/NaN get the
//! all-ones exponent; the sign is or-ed in. f16 and f32 rows run a
//! strip-mined `vfmacc` loop at LMUL 4.
//!
//! Vector loads of misaligned f16/f32 elements may trap (the spec leaves it
//! to the implementation), so a weight slice that is not element aligned
//! (never the case for model files, whose tensors are 64-byte aligned)
//! takes the scalar kernel.
//!
//! One file per weight format holds that format's kernels for every
//! feature level; this module holds the feature checks and the helpers
//! several formats share. Nothing here is ever reached except through
//! `kernels::table`, which installs each kernel after its feature check;
//! tests compare each with `scalar`.

use core::arch::asm;

use crate::kernels::Activations;
use crate::quant::{BLOCK_LEN, Q8_VALUE_BYTES};

/// True when the CPU (and the kernel, which must save vector state) has
/// RVV 1.0 with VLEN ≥ 128.
pub(super) fn has_v() -> bool {
    let v = {
        cfg_if::cfg_if! {
            if #[cfg(all(feature = "std", target_os = "linux"))] {
                extern "C" {
                    fn getauxval(t: u64) -> u64;
                }
                const AT_HWCAP: u64 = 16;
                // SAFETY: `getauxval` is part of every Linux libc (glibc
                // 2.16+, musl) and only reads the process's auxiliary vector.
                let hwcap = unsafe { getauxval(AT_HWCAP) };
                hwcap & (1 << (b'V' - b'A')) != 0
            } else {
                cfg!(target_feature = "v")
            }
        }
    };
    v && vlen_bytes() >= 16
}

/// VLEN / 8, read from the `vlenb` CSR. Only call with V present.
fn vlen_bytes() -> usize {
    let vlenb: usize;
    // SAFETY: reading `vlenb` has no side effects; callers checked that the
    // CPU has V (otherwise the CSR does not exist).
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "csrr {0}, vlenb",
            ".option pop",
            out(reg) vlenb,
            options(nomem, nostack, preserves_flags)
        );
    }
    vlenb
}

/// Blocks per asm loop iteration.
const GROUP: usize = 4;
/// 2^112 as f32: scales f16 bits shifted into f32 position to their value.
const F16_MAGIC: f32 = f32::from_bits((127 + 112) << 23);

/// asm lines converting the f16 bit patterns zero-extended in `$h` (e32
/// lanes) to f32 in `$out`, under the current vtype (which must be e32 with
/// mask-undisturbed policy). Clobbers `v0` and `$h`. Needs operands
/// `m7fff`, `m7bff`, `m8000`, `exp` (integers) and `magic` (`F16_MAGIC`).
macro_rules! f16_bits_to_f32 {
    ($out:literal, $h:literal) => {
        concat!(
            "vand.vx ",
            $out,
            ", ",
            $h,
            ", {m7fff}\n",
            "vmsgtu.vx v0, ",
            $out,
            ", {m7bff}\n",
            "vsll.vi ",
            $out,
            ", ",
            $out,
            ", 13\n",
            "vfmul.vf ",
            $out,
            ", ",
            $out,
            ", {magic}\n",
            "vor.vx ",
            $out,
            ", ",
            $out,
            ", {exp}, v0.t\n",
            "vand.vx ",
            $h,
            ", ",
            $h,
            ", {m8000}\n",
            "vsll.vi ",
            $h,
            ", ",
            $h,
            ", 16\n",
            "vor.vv ",
            $out,
            ", ",
            $out,
            ", ",
            $h,
            "\n",
        )
    };
}

/// asm lines for the end of a group: `v2 += f32(i32 sums in the first four
/// e32 lanes of $sums) · f32(f16 scales at {s}) · (f32 scales at {dx})`,
/// then the pointers move on by one group. Leaves vtype at e32, m1, vl 4.
macro_rules! scale_group {
    ($sums:literal) => {
        concat!(
            "vsetivli zero, 4, e32, m1, ta, mu\n",
            "vfcvt.f.x.v v28, ",
            $sums,
            "\n",
            "vle32.v v29, ({dx})\n",
            "vle16.v v30, ({s})\n",
            "vzext.vf2 v31, v30\n",
            f16_bits_to_f32!("v3", "v31"),
            "vfmul.vv v29, v29, v3\n",
            "vfmacc.vv v2, v28, v29\n",
            "addi {dx}, {dx}, 16\n",
            "addi {s}, {s}, 8\n",
        )
    };
}

/// asm lines for the end of a lanes block (vtype e16 with vl = the tile's
/// rows): each row's f16 scale (a strided load) converted to f32 in `$f`,
/// times the block's activation scale, times the rows' i32 sums in `$sums`
/// (converted in place), added to the f32 sums in `v24`; then the pointers
/// move on by one block (`$w` value bytes) and the loop repeats. Uses
/// `v28..v31` and `v0`, and the operands of `f16_bits_to_f32!` plus `d`.
macro_rules! lanes_scale {
    ($lmul:literal, $f:literal, $sums:literal, $w:literal) => {
        concat!(
            "vlse16.v v30, ({s}), {stride}\n",
            "vsetvli zero, {n}, e32, ",
            $lmul,
            ", ta, mu\n",
            "vzext.vf2 v28, v30\n",
            f16_bits_to_f32!($f, "v28"),
            "flw {d}, 0({dx})\n",
            "vfmul.vf ",
            $f,
            ", ",
            $f,
            ", {d}\n",
            "vfcvt.f.x.v ",
            $sums,
            ", ",
            $sums,
            "\n",
            "vfmacc.vv v24, ",
            $sums,
            ", ",
            $f,
            "\n",
            "addi {w}, {w}, ",
            $w,
            "\n",
            "addi {s}, {s}, 2\n",
            "addi {x}, {x}, 32\n",
            "addi {dx}, {dx}, 4\n",
            "addi {b}, {b}, -1\n",
            "bnez {b}, 1b\n",
        )
    };
}

// Declared after the macros above, which the format files use.
pub(super) mod activations;
pub(super) mod f16;
pub(super) mod f32;
pub(super) mod mxfp4;
pub(super) mod q4;
pub(super) mod q8;

/// One of the group kernels (`q8::q8_groups`, `q4::q4_groups`).
type GroupsFn = unsafe fn(*const u8, *const u8, *const i8, *const f32, usize) -> f32;

/// `out[r] = row r · x` for quantized rows of `blocks` blocks of
/// `value_bytes` value bytes each, `groups` doing the vector work.
///
/// Safety: the CPU has V with VLEN ≥ 128; `check_quantized` passed for this block
/// size; `w` is 2-byte aligned (so every row's f16 scales are: row_bytes is
/// even).
unsafe fn matvec_blocks(
    groups: GroupsFn,
    value_bytes: usize,
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    let full = blocks / GROUP;
    let tail = blocks % GROUP;
    let tail_start = full * GROUP;
    // The last, partial group of activations, zero padded once for all rows
    // (zero activations and zero scales add nothing).
    let mut x_pad = [0i8; GROUP * BLOCK_LEN];
    let mut dx_pad = [0.0f32; GROUP];
    x_pad[..tail * BLOCK_LEN].copy_from_slice(&x.qs[tail_start * BLOCK_LEN..blocks * BLOCK_LEN]);
    dx_pad[..tail].copy_from_slice(&x.scales[tail_start..blocks]);
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let (scales, values) = row.split_at(2 * blocks);
        let mut sum = 0.0;
        if full > 0 {
            // SAFETY: the first `full` groups of this row's scales and
            // values, of the activations and of their scales (`check_quantized`); the
            // scales are 2-byte aligned (see the function's contract).
            sum = unsafe {
                groups(
                    values.as_ptr(),
                    scales.as_ptr(),
                    x.qs.as_ptr(),
                    x.scales.as_ptr(),
                    full,
                )
            };
        }
        if tail > 0 {
            let mut w_pad = [0u8; GROUP * Q8_VALUE_BYTES];
            let mut s_pad = [0u16; GROUP]; // u16: aligned for `vle16`
            w_pad[..tail * value_bytes].copy_from_slice(&values[tail_start * value_bytes..]);
            for (d, b) in s_pad
                .iter_mut()
                .zip(scales[2 * tail_start..].chunks_exact(2))
            {
                *d = u16::from_le_bytes([b[0], b[1]]);
            }
            // SAFETY: one whole group in each padded buffer.
            sum += unsafe {
                groups(
                    w_pad.as_ptr(),
                    s_pad.as_ptr() as *const u8,
                    x_pad.as_ptr(),
                    dx_pad.as_ptr(),
                    1,
                )
            };
        }
        *o = sum;
    }
}

/// The rows a lanes kernel computes: `rows` rows (at most the kernel's
/// tile), row `r`'s block `b` values at `values + r·stride + b·value_bytes`
/// and its f16 scale at `scales + r·stride + 2b`.
#[derive(Clone, Copy)]
struct Tile {
    values: *const u8,
    scales: *const u8,
    stride: usize,
    rows: usize,
}

/// One of the lanes kernels (`q4::q4_lanes`, `q8::q8_lanes`): `out[r] =
/// row r · x` for the tile's rows, over `blocks ≥ 1` blocks of activations
/// at `xq` with scales at `dx`.
type LanesFn = unsafe fn(Tile, *const i8, *const f32, usize, *mut f32);

/// True when the lanes kernels (32-bit lanes) may read these rows: every
/// row's values start 4-byte aligned (strided loads of misaligned
/// elements may trap), which holds when a row has an even number of
/// blocks (its length and its scale array are then multiples of 4 bytes)
/// and the matrix is aligned (model files align tensors to 64).
fn lanes_fit(w: &[u8], row_bytes: usize, blocks: usize) -> bool {
    blocks > 0
        && row_bytes.is_multiple_of(4)
        && (w.as_ptr() as usize + 2 * blocks).is_multiple_of(4)
}

/// `out[r] = row r · x`, `tile` rows at a time through `lanes`.
///
/// Safety: the CPU has V; `check_quantized` passed for the block size
/// `lanes` reads; `lanes_fit` holds; `tile` is at most the rows `lanes`
/// takes.
unsafe fn matvec_lanes(
    lanes: LanesFn,
    tile: usize,
    w: &[u8],
    row_bytes: usize,
    blocks: usize,
    x: &Activations<'_>,
    out: &mut [f32],
) {
    for (t, o) in out.chunks_mut(tile).enumerate() {
        let rows = &w[t * tile * row_bytes..][..o.len() * row_bytes];
        // SAFETY: `rows` holds `o.len()` ≤ `tile` whole rows (`check_quantized`),
        // their values after `2 · blocks` scale bytes; `blocks` blocks of
        // activations; `o` has room for every row's sum.
        unsafe {
            let tile = Tile {
                values: rows.as_ptr().add(2 * blocks),
                scales: rows.as_ptr(),
                stride: row_bytes,
                rows: o.len(),
            };
            lanes(
                tile,
                x.qs.as_ptr(),
                x.scales.as_ptr(),
                blocks,
                o.as_mut_ptr(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::f16::matvec_f16_rvv;
    use super::q4::matvec_q4_rvv;
    use super::q8::matvec_q8_rvv;
    use super::*;
    use crate::kernels::check::compare_with_scalar;
    use crate::kernels::{scalar, table, Kernels, MatvecFn};
    use crate::quant::{Q4_BLOCK_BYTES, Q8_BLOCK_BYTES};

    /// The table must follow the CPU: `MOTE_EXPECT_KERNELS` names it when
    /// set (`targets/cross-test.sh` sets it for each qemu CPU, `scalar` for
    /// `-cpu rv64`); unset, the RVV table is required (qemu `v=true`).
    #[test]
    fn detected_kernels_are_the_expected_ones_and_match_scalar() {
        let fast = table::riscv(Kernels::scalar());
        let want = std::env::var("MOTE_EXPECT_KERNELS");
        std::println!("kernels: {} (expected: {want:?})", fast.name);
        assert_eq!(fast.name, want.as_deref().unwrap_or("riscv64-rvv"));
        compare_with_scalar(&fast);
        crate::kernels::check::compare_matmul_with_scalar(&fast);
    }

    /// Requires V (run with `--skip rvv_` on CPUs without it).
    fn require_v() {
        assert!(has_v(), "this test needs a CPU with RVV 1.0");
        std::println!("VLEN = {}", 8 * vlen_bytes());
    }

    /// Integer sums must be exact at the i8 extremes (−128 · −128 included),
    /// which the quantizers never produce. All values equal, so every float
    /// step is exact too and the results must be identical. 7 blocks take
    /// the group kernels (a full group and a padded one), 6 and 8 the lanes
    /// kernels; 37 rows fill whole tiles and leave a partial one.
    #[test]
    fn rvv_extreme_int8_values_are_exact() {
        require_v();
        for blocks in [6, 7, 8] {
            extreme_int8_values_are_exact(blocks, 37);
        }
    }

    fn extreme_int8_values_are_exact(blocks: usize, rows: usize) {
        let qs = std::vec![-128i8; blocks * BLOCK_LEN];
        let ones = std::vec![1.0f32; blocks];
        let x = Activations {
            f32s: &[],
            qs: &qs,
            scales: &ones,
            sums: &ones, // unused by these kernels
        };
        for (b8, b4) in [(0x80u8, 0x00u8), (0x7f, 0xff)] {
            for (byte, block_bytes, reference, fast) in [
                (
                    b8,
                    Q8_BLOCK_BYTES,
                    scalar::matvec_q8 as MatvecFn,
                    matvec_q8_rvv as MatvecFn,
                ),
                (b4, Q4_BLOCK_BYTES, scalar::matvec_q4, matvec_q4_rvv),
            ] {
                let row_bytes = blocks * block_bytes;
                let mut w = std::vec![byte; rows * row_bytes];
                for row in w.chunks_exact_mut(row_bytes) {
                    for b in 0..blocks {
                        row[2 * b..2 * b + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                        // f16 1.0
                    }
                }
                let (mut want, mut got) = (std::vec![0.0f32; rows], std::vec![0.0f32; rows]);
                reference(&w, row_bytes, &x, &mut want);
                fast(&w, row_bytes, &x, &mut got);
                assert_eq!(got, want, "{blocks} blocks, byte {byte:#x}");
            }
        }
    }

    /// Every f16 bit pattern converts like `half` does: normals,
    /// subnormals, zeros, infinities and NaNs. One-column rows, so each
    /// output is one weight times 1.0.
    #[test]
    fn rvv_f16_conversion_covers_every_pattern() {
        require_v();
        let bytes: std::vec::Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        let x = Activations {
            f32s: &[1.0],
            qs: &[],
            scales: &[],
            sums: &[],
        };
        let mut got = std::vec![0.0f32; 1 << 16];
        matvec_f16_rvv(&bytes, 2, &x, &mut got);
        for (bits, got) in (0..=u16::MAX).zip(got) {
            let want = half::f16::from_bits(bits).to_f32();
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}: {got}");
            } else {
                // == so that −0 (summed onto +0) matches.
                assert!(got == want, "{bits:#06x}: {got} vs {want}");
            }
        }
    }

    /// Rounding ties go away from zero exactly as the scalar quantizer's.
    #[test]
    fn rvv_activation_rounding_matches_scalar_at_ties() {
        require_v();
        crate::kernels::check::compare_rounding_ties_with_scalar(
            super::activations::quantize_activations_rvv,
        );
    }

    /// Weights at an odd address (never so in model files) still give the
    /// scalar result.
    #[test]
    fn misaligned_weights_match_scalar() {
        crate::kernels::check::compare_misaligned_with_scalar(&table::riscv(Kernels::scalar()));
    }
}
