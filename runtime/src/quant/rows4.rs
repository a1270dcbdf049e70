//! The [`Layout::Rows4`](crate::format::tensor::Layout::Rows4) byte order of
//! int4/int8 matrices: the same blocks as planar rows, four rows' bytes side
//! by side. Lossless both ways; the quantizer writes it, tests read it back.
//!
//! A group of four rows is stored block after block, each block as
//!
//! ```text
//! [d_r0 d_r1 d_r2 d_r3: 4 × f16 LE][grain 0 of r0 r1 r2 r3][grain 1 of r0 r1 r2 r3] ...
//! ```
//!
//! where grain `j` is the block's value bytes `4j .. 4j + 4` (4 grains for
//! int4, 8 for int8). int4 bytes are XOR `0x88`, so each nibble is `q` in
//! two's complement instead of `q + 8`. Rows past the last whole group stay
//! planar, after the groups.

use super::{BLOCK_LEN, Q4_VALUE_BYTES, Q8_VALUE_BYTES};
use crate::format::tensor::ROWS4;
use crate::DType;

/// Bytes of one value grain: the operand `sdot` multiplies by one lane.
const GRAIN: usize = 4;

/// Value bytes a block of `dtype` has, and the XOR its rows4 bytes carry.
fn value_bytes_and_xor(dtype: DType) -> (usize, u8) {
    match dtype {
        DType::Q4 => (Q4_VALUE_BYTES, 0x88),
        DType::Q8 => (Q8_VALUE_BYTES, 0),
        other => panic!("{other} has no rows4 layout"),
    }
}

/// Bytes one block of a four-row group takes: four scales and four rows' values.
pub fn rows4_block_bytes(dtype: DType) -> usize {
    ROWS4 * (2 + value_bytes_and_xor(dtype).0)
}

/// Where byte `i` of row `r`'s values of a block sits in the block's value
/// bytes (after its 8 scale bytes).
#[inline(always)]
pub fn rows4_value_at(r: usize, i: usize) -> usize {
    ROWS4 * GRAIN * (i / GRAIN) + GRAIN * r + i % GRAIN
}

/// Rewrites a planar `dtype` matrix of `cols` columns (`planar`, whole
/// rows) in the rows4 order into `out` (the same length).
pub fn rows4_from_planar(dtype: DType, cols: usize, planar: &[u8], out: &mut [u8]) {
    convert(dtype, cols, planar, out, true)
}

/// The inverse of [`rows4_from_planar`].
pub fn planar_from_rows4(dtype: DType, cols: usize, rows4: &[u8], out: &mut [u8]) {
    convert(dtype, cols, rows4, out, false)
}

fn convert(dtype: DType, cols: usize, from: &[u8], to: &mut [u8], to_rows4: bool) {
    let (vb, xor) = value_bytes_and_xor(dtype);
    let row_bytes = dtype.row_bytes(cols);
    let blocks = cols.div_ceil(BLOCK_LEN);
    assert!(
        from.len() == to.len() && from.len().is_multiple_of(row_bytes),
        "rows4 conversion: {} bytes are not whole rows of {row_bytes}",
        from.len()
    );
    let group_bytes = ROWS4 * row_bytes;
    let groups = from.len() / group_bytes;
    let block_bytes = rows4_block_bytes(dtype);
    for g in 0..groups {
        let base = g * group_bytes;
        for r in 0..ROWS4 {
            let row = base + r * row_bytes;
            for b in 0..blocks {
                let blk = base + b * block_bytes;
                let (p, q) = (row + 2 * b, blk + 2 * r);
                let (src, dst) = if to_rows4 { (p, q) } else { (q, p) };
                to[dst..dst + 2].copy_from_slice(&from[src..src + 2]);
                for i in 0..vb {
                    let p = row + 2 * blocks + b * vb + i;
                    let q = blk + 2 * ROWS4 + rows4_value_at(r, i);
                    let (src, dst) = if to_rows4 { (p, q) } else { (q, p) };
                    to[dst] = from[src] ^ xor;
                }
            }
        }
    }
    let tail = groups * group_bytes;
    to[tail..].copy_from_slice(&from[tail..]);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    #[test]
    fn conversion_round_trips_and_moves_every_byte() {
        for (dtype, cols) in [(DType::Q4, 96), (DType::Q8, 32), (DType::Q4, 224)] {
            for rows in [1, 4, 7, 9] {
                let len = rows * dtype.row_bytes(cols);
                let planar: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                let mut packed = vec![0u8; len];
                rows4_from_planar(dtype, cols, &planar, &mut packed);
                if rows >= 4 {
                    assert_ne!(packed, planar, "{dtype} {rows}x{cols}");
                }
                let mut back = vec![0u8; len];
                planar_from_rows4(dtype, cols, &packed, &mut back);
                assert_eq!(back, planar, "{dtype} {rows}x{cols}");
            }
        }
    }

    #[test]
    fn a_group_block_holds_the_four_scales_then_grains() {
        // Row r's block b: scale bytes [r, b], values 16·r + i.
        let cols = 64;
        let row_bytes = DType::Q8.row_bytes(cols);
        let mut planar = vec![0u8; 4 * row_bytes];
        for r in 0..4 {
            let row = &mut planar[r * row_bytes..][..row_bytes];
            for b in 0..2 {
                row[2 * b] = r as u8;
                row[2 * b + 1] = b as u8;
                for i in 0..32 {
                    row[4 + 32 * b + i] = (64 * b + 16 * r + i) as u8;
                }
            }
        }
        let mut packed = vec![0u8; planar.len()];
        rows4_from_planar(DType::Q8, cols, &planar, &mut packed);
        let block1 = &packed[rows4_block_bytes(DType::Q8)..];
        assert_eq!(&block1[..8], &[0, 1, 1, 1, 2, 1, 3, 1]);
        // Grain 0 of rows 0..4, then grain 1 of row 0.
        assert_eq!(&block1[8..12], &[64, 65, 66, 67]);
        assert_eq!(&block1[12..16], &[80, 81, 82, 83]);
        assert_eq!(&block1[24..28], &[68, 69, 70, 71]);
    }
}
