//! int8 weights: the RVV matvec.

use core::arch::asm;

use super::{lanes_fit, matvec_blocks, matvec_lanes, vlen_bytes, Tile, F16_MAGIC};
use crate::kernels::{check_quantized, scalar, Activations};
use crate::quant::{Q8_BLOCK_BYTES, Q8_VALUE_BYTES};

/// Σ over `groups` groups of four int8 blocks of `d_w · d_x · (w · x)`.
///
/// Safety: the CPU has V with VLEN ≥ 128; `w` points at `4 · groups`
/// blocks of int8 values (32 bytes each), `s` at as many f16 scales
/// (2-byte aligned), `xq` at `128 · groups` activations and `dx` at
/// `4 · groups` activation scales.
unsafe fn q8_groups(
    w: *const u8,
    s: *const u8,
    xq: *const i8,
    dx: *const f32,
    groups: usize,
) -> f32 {
    let sum: f32;
    // SAFETY: the loads stay inside the ranges the caller vouched for: each
    // iteration reads 4 × 32 bytes at w and at xq, 8 bytes at s and 16 at dx,
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
            "vsetvli zero, {len}, e8, m2, ta, ma",
            "vle8.v v4, ({w})",
            "vle8.v v6, ({x})",
            "vwmul.vv v8, v4, v6",
            "addi {t}, {w}, 32",
            "addi {u}, {x}, 32",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v12, v4, v6",
            "addi {t}, {w}, 64",
            "addi {u}, {x}, 64",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v16, v4, v6",
            "addi {t}, {w}, 96",
            "addi {u}, {x}, 96",
            "vle8.v v4, ({t})",
            "vle8.v v6, ({u})",
            "vwmul.vv v20, v4, v6",
            // Block sums as i32 in element 0 of v24, v12, v16, v20; then
            // gathered as e32 lanes 0..4 of v24 (e16 lanes 2k, 2k + 1).
            "vsetvli zero, {len}, e16, m4, ta, ma",
            "vwredsum.vs v24, v8, v1",
            "vwredsum.vs v12, v12, v1",
            "vwredsum.vs v16, v16, v1",
            "vwredsum.vs v20, v20, v1",
            "vslideup.vi v24, v12, 2",
            "vslideup.vi v24, v16, 4",
            "vslideup.vi v24, v20, 6",
            scale_group!("v24"),
            "addi {w}, {w}, 128",
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
            len = in(reg) 32usize,
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
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// asm lines for chunks `2k` and `2k + 1` (4 bytes each) of an int8 lanes
/// block: `$setup` points `$wa`/`$xa` at chunk `2k` of row 0 and of the
/// activations, `$wb`/`$xb` at chunk `2k + 1`; every row's chunks are
/// multiplied with the broadcast activations (i16, exact) and `$acc` adds
/// both products into the i32 sums in `v0` (a widening add). Leaves vtype
/// at e16, m4, vl 4n.
macro_rules! lane_pair {
    ($setup:literal, $wa:literal, $xa:literal, $wb:literal, $xb:literal, $acc:literal) => {
        concat!(
            "vsetvli zero, {n}, e32, m2, ta, ma\n",
            $setup,
            "vlse32.v v8, (",
            $wa,
            "), {stride}\n",
            "vlse32.v v10, (",
            $wb,
            "), {stride}\n",
            "vlse32.v v12, (",
            $xa,
            "), zero\n",
            "vlse32.v v14, (",
            $xb,
            "), zero\n",
            "vsetvli zero, {n4}, e8, m2, ta, ma\n",
            "vwmul.vv v16, v8, v12\n",
            "vwmul.vv v20, v10, v14\n",
            "vsetvli zero, {n4}, e16, m4, ta, ma\n",
            $acc,
        )
    };
}

/// `out[r] = row r · x` for up to VLEN / 16 int8 rows, one row a 32-bit
/// lane (see [`super::Tile`] for the pointers).
///
/// A block is eight 4-byte chunks, taken two at a time: per chunk a
/// strided 32-bit load takes it from every row of the tile and a stride-0
/// load broadcasts the activations it pairs with; the widening products
/// (i16, exact even at −128 · −128) are added into each row's 4 lanes of
/// i32 sums with widening adds. Two narrowing pair sums (`vnsrl` of the
/// lanes read as e64) leave one i32 per row; scaling as in `q4::q4_lanes`.
///
/// Safety: the CPU has V; `lanes_fit`; `tile.rows ≤ vlenb / 2`,
/// `blocks ≥ 1`; the tile and the activations cover `blocks` blocks.
unsafe fn q8_lanes(tile: Tile, xq: *const i8, dx: *const f32, blocks: usize, out: *mut f32) {
    let n = tile.rows;
    // SAFETY: each iteration reads, for rows 0..n, 32 bytes at
    // `values + r·stride` and 2 at `scales + r·stride` (inside the rows, 4-
    // and 2-byte aligned), 32 bytes at xq and 4 at dx, then advances each
    // by exactly that; `blocks` iterations; n f32 are stored at `out`.
    // Every `vsetvli` asks for at most VLMAX (n ≤ vlenb / 2), so vl is the
    // AVL.
    unsafe {
        asm!(
            ".option push",
            ".option arch, +v",
            "vsetvli zero, {n}, e32, m2, ta, mu",
            "vmv.v.i v24, 0",
            "1:",
            lane_pair!("addi {t}, {w}, 4\naddi {u}, {x}, 4\n", "{w}", "{x}", "{t}", "{u}", "vwadd.vv v0, v16, v20\n"),
            lane_pair!("addi {t}, {w}, 8\naddi {u}, {x}, 8\naddi {t2}, {w}, 12\naddi {u2}, {x}, 12\n", "{t}", "{u}", "{t2}", "{u2}", "vwadd.wv v0, v0, v16\nvwadd.wv v0, v0, v20\n"),
            lane_pair!("addi {t}, {w}, 16\naddi {u}, {x}, 16\naddi {t2}, {w}, 20\naddi {u2}, {x}, 20\n", "{t}", "{u}", "{t2}", "{u2}", "vwadd.wv v0, v0, v16\nvwadd.wv v0, v0, v20\n"),
            lane_pair!("addi {t}, {w}, 24\naddi {u}, {x}, 24\naddi {t2}, {w}, 28\naddi {u2}, {x}, 28\n", "{t}", "{u}", "{t2}", "{u2}", "vwadd.wv v0, v0, v16\nvwadd.wv v0, v0, v20\n"),
            // 4 i32 lanes a row -> 2 -> 1 (|.| ≤ 2^19).
            "vsetvli zero, {n2}, e32, m4, ta, ma",
            "vnsrl.wi v8, v0, 0",
            "vnsrl.wx v12, v0, {k32}",
            "vadd.vv v8, v8, v12",
            "vsetvli zero, {n}, e32, m2, ta, ma",
            "vnsrl.wi v16, v8, 0",
            "vnsrl.wx v18, v8, {k32}",
            "vadd.vv v16, v16, v18",
            "vsetvli zero, {n}, e16, m1, ta, ma",
            lanes_scale!("m2", "v26", "v16", "32"),
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
            k32 = in(reg) 32usize,
            t = out(reg) _,
            u = out(reg) _,
            t2 = out(reg) _,
            u2 = out(reg) _,
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

pub(crate) fn matvec_q8_rvv(w: &[u8], row_bytes: usize, x: &Activations<'_>, out: &mut [f32]) {
    let blocks = check_quantized(w, row_bytes, x, out, Q8_BLOCK_BYTES);
    if !(w.as_ptr() as usize).is_multiple_of(2) {
        return scalar::matvec_q8(w, row_bytes, x, out);
    }
    if lanes_fit(w, row_bytes, blocks) {
        // SAFETY: V is present (see `kernels::table`), `check_quantized` and
        // `lanes_fit` passed; tiles of vlenb / 2 rows are what `q8_lanes` takes.
        return unsafe { matvec_lanes(q8_lanes, vlen_bytes() / 2, w, row_bytes, blocks, x, out) };
    }
    // SAFETY: installed by `kernels::table` only when the CPU has V (VLEN ≥ 128);
    // `check_quantized` passed and `w` is 2-byte aligned.
    unsafe { matvec_blocks(q8_groups, Q8_VALUE_BYTES, w, row_bytes, blocks, x, out) }
}

crate::kernels::matmul_per_token!(matmul_q8_rvv, matvec_q8_rvv, Q8);
