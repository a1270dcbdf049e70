//! int4 weights: the RVV matvec.

use core::arch::asm;

use super::{lanes_fit, matvec_blocks, matvec_lanes, vlen_bytes, Tile, F16_MAGIC};
use crate::kernels::{check_quantized, scalar, Activations};
use crate::quant::{Q4_BLOCK_BYTES, Q4_VALUE_BYTES};

/// Σ over `groups` groups of four int4 blocks of `d_w · d_x · (w · x)`.
///
/// Safety: as for `q8::q8_groups`, with 16 value bytes per block at `w`.
unsafe fn q4_groups(
    w: *const u8,
    s: *const u8,
    xq: *const i8,
    dx: *const f32,
    groups: usize,
) -> f32 {
    let sum: f32;
    // SAFETY: the loads stay inside the ranges the caller vouched for: each
    // iteration reads 4 × 16 bytes at w, 4 × 32 at xq, 8 at s and 16 at dx,
    // then advances them by exactly that; `groups` iterations.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetivli zero, 4, e32, m1, ta, mu",
            "vmv.v.i v1, 0", // reduction seed: 0 as i32 and as +0.0
            "vmv.v.i v2, 0", // four f32 lanes of running sum
            "beqz {n}, 2f",
            "1:",
            // Per block: q = nibble − 8 (low nibbles: elements 0..16, high:
            // 16..32), then 16 i16 lanes of two products each (|.| ≤ 2048).
            "vsetivli zero, 16, e8, m1, ta, ma",
            "vle8.v v4, ({w})",
            "vle8.v v5, ({x})",
            "addi {u}, {x}, 16",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v8, v7, v5",
            "vwmacc.vv v8, v4, v6",
            "addi {t}, {w}, 16",
            "addi {u}, {x}, 32",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 48",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v10, v7, v5",
            "vwmacc.vv v10, v4, v6",
            "addi {t}, {w}, 32",
            "addi {u}, {x}, 64",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 80",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v12, v7, v5",
            "vwmacc.vv v12, v4, v6",
            "addi {t}, {w}, 48",
            "addi {u}, {x}, 96",
            "vle8.v v4, ({t})",
            "vle8.v v5, ({u})",
            "addi {u}, {x}, 112",
            "vle8.v v6, ({u})",
            "vand.vi v7, v4, 15",
            "vsrl.vi v4, v4, 4",
            "vadd.vi v7, v7, -8",
            "vadd.vi v4, v4, -8",
            "vwmul.vv v14, v7, v5",
            "vwmacc.vv v14, v4, v6",
            // Block sums as i32 in element 0 of v16, v10, v12, v14; then
            // gathered as e32 lanes 0..4 of v16 (e16 lanes 2k, 2k + 1).
            "vsetivli zero, 16, e16, m2, ta, ma",
            "vwredsum.vs v16, v8, v1",
            "vwredsum.vs v10, v10, v1",
            "vwredsum.vs v12, v12, v1",
            "vwredsum.vs v14, v14, v1",
            "vslideup.vi v16, v10, 2",
            "vslideup.vi v16, v12, 4",
            "vslideup.vi v16, v14, 6",
            scale_group!("v16"),
            "addi {w}, {w}, 64",
            "addi {x}, {x}, 128",
            "addi {n}, {n}, -1",
            "bnez {n}, 1b",
            "2:",
            "vfredusum.vs v3, v2, v1",
            "vfmv.f.s {sum}, v3",
            ".option pop",
            w = inout(reg) w => _,
            s = inout(reg) s => _,
            x = inout(reg) xq => _,
            dx = inout(reg) dx => _,
            n = inout(reg) groups => _,
            t = out(reg) _,
            u = out(reg) _,
            m7fff = in(reg) 0x7fffu32,
            m7bff = in(reg) 0x7bffu32,
            m8000 = in(reg) 0x8000u32,
            exp = in(reg) 0x7f80_0000u32,
            magic = in(freg) F16_MAGIC,
            sum = lateout(freg) sum,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// asm lines for chunk `k` (bytes `4k..4k + 4`) of an int4 lanes block:
/// `$setup` points `$wp` at the chunk in row 0 and `$xp` at activations
/// `4k..`; the chunk of every row is multiplied with those activations
/// (low nibbles) and with activations `16 + 4k..` (`$hi` bytes past
/// `{x}`, high nibbles) into the e16 products in `v0`, `$op` being
/// `vwmul.vv` for the first chunk and `vwmacc.vv` after. Leaves vtype at
/// e8, m4, vl 4n.
macro_rules! lane_chunk {
    ($op:literal, $setup:literal, $wp:literal, $xp:literal, $hi:literal) => {
        concat!(
            "vsetvli zero, {n}, e32, m4, ta, ma\n",
            $setup,
            "vlse32.v v8, (",
            $wp,
            "), {stride}\n",
            "vlse32.v v12, (",
            $xp,
            "), zero\n",
            "addi {t}, {x}, ",
            $hi,
            "\n",
            "vlse32.v v16, ({t}), zero\n",
            "vsetvli zero, {n4}, e8, m4, ta, ma\n",
            "vand.vi v20, v8, 15\n",
            "vadd.vi v20, v20, -8\n",
            $op,
            " v0, v12, v20\n",
            "vsrl.vi v8, v8, 4\n",
            "vadd.vi v8, v8, -8\n",
            "vwmacc.vv v0, v16, v8\n",
        )
    };
}

/// `out[r] = row r · x` for up to VLEN / 8 int4 rows, one row a 32-bit
/// lane (see [`super::Tile`] for the pointers).
///
/// A block is four 4-byte chunks. Per chunk, a strided 32-bit load takes
/// it from every row of the tile and two stride-0 loads broadcast the
/// activations it pairs with: its low nibbles are weights `4k..4k + 4`,
/// its high nibbles weights `16 + 4k..`. Eight widening products into one
/// e16 group leave each row 4 lanes of 8 products (|.| ≤ 8192); two
/// narrowing pair sums (`vnsrl` of the lanes read as e32, the second one
/// widening) leave one exact i32 per row, scaled in f32 by the row's f16
/// scale (a strided 16-bit load) and the block's activation scale. 32-bit
/// lanes rather than 64-bit ones let a tile hold twice the rows at the
/// same register group sizes, and need only 4-byte alignment.
///
/// Safety: the CPU has V; `lanes_fit`; `tile.rows ≤ vlenb`,
/// `blocks ≥ 1`; the tile and the activations cover `blocks` blocks.
unsafe fn q4_lanes(tile: Tile, xq: *const i8, dx: *const f32, blocks: usize, out: *mut f32) {
    let n = tile.rows;
    // SAFETY: each iteration reads, for rows 0..n, 16 bytes at
    // `values + r·stride` and 2 at `scales + r·stride` (inside the rows, 4-
    // and 2-byte aligned), 32 bytes at xq and 4 at dx, then advances each
    // by exactly that; `blocks` iterations; n f32 are stored at `out`.
    // Every `vsetvli` asks for at most VLMAX (n ≤ vlenb), so vl is the AVL.
    // `vzext.vf2 v28, v30` overlaps its source in the destination's
    // highest-numbered part, which RVV allows.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetvli zero, {n}, e32, m4, ta, mu",
            "vmv.v.i v24, 0",
            "1:",
            lane_chunk!("vwmul.vv", "", "{w}", "{x}", "16"),
            lane_chunk!("vwmacc.vv", "addi {t}, {w}, 4\naddi {u}, {x}, 4\n", "{t}", "{u}", "20"),
            lane_chunk!("vwmacc.vv", "addi {t}, {w}, 8\naddi {u}, {x}, 8\n", "{t}", "{u}", "24"),
            lane_chunk!("vwmacc.vv", "addi {t}, {w}, 12\naddi {u}, {x}, 12\n", "{t}", "{u}", "28"),
            // 4 i16 lanes a row -> 2 (still i16: |.| ≤ 16384) -> 1 i32.
            "vsetvli zero, {n2}, e16, m4, ta, ma",
            "vnsrl.wi v8, v0, 0",
            "vnsrl.wi v12, v0, 16",
            "vadd.vv v8, v8, v12",
            "vsetvli zero, {n}, e16, m2, ta, ma",
            "vnsrl.wi v16, v8, 0",
            "vnsrl.wi v18, v8, 16",
            "vwadd.vv v12, v16, v18",
            lanes_scale!("m4", "v8", "v12", "16"),
            "vse32.v v24, ({out})",
            ".option pop",
            w = inout(reg) tile.values => _,
            s = inout(reg) tile.scales => _,
            x = inout(reg) xq => _,
            dx = inout(reg) dx => _,
            b = inout(reg) blocks => _,
            stride = in(reg) tile.stride,
            out = in(reg) out,
            n = in(reg) n,
            n2 = in(reg) 2 * n,
            n4 = in(reg) 4 * n,
            t = out(reg) _,
            u = out(reg) _,
            d = out(freg) _,
            m7fff = in(reg) 0x7fffu32,
            m7bff = in(reg) 0x7bffu32,
            m8000 = in(reg) 0x8000u32,
            exp = in(reg) 0x7f80_0000u32,
            magic = in(freg) F16_MAGIC,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
}

pub(crate) fn matvec_q4_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q4_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q4(w, row_bytes, x, out);
    }
    if lanes_fit(w, row_bytes, blocks) {
        // SAFETY: V is present (see `kernels::table`), `check_quantized` and
        // `lanes_fit` passed; tiles of vlenb rows are what `q4_lanes` takes.
        return unsafe { matvec_lanes(q4_lanes, vlen_bytes(), w, row_bytes, blocks, x, out) };
    }
    // SAFETY: as for `q8::matvec_q8_rvv`.
    unsafe { matvec_blocks(q4_groups, Q4_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_q4_rvv, matvec_q4_rvv, Q4);
