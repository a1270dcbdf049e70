//! ggml's weight types: their ids, block sizes, how a row of blocks turns
//! into f32 (the reference each type is defined by), and which ones are
//! already a mote weight type — so that their rows are copied, not
//! re-quantized: the numbers of the file are the numbers mote computes with.
//!
//! ggml stores a row as whole blocks, each block its scale(s) then its
//! values; mote stores a row's scales first, then its values (planar,
//! `mote::quant`). Copying a Q4_0, Q8_0 or MXFP4 row is a reordering of
//! bytes (MXFP4's nibbles also go from ggml's "element j and j + 16" to
//! gpt-oss's "elements 2j and 2j + 1"), checked against [`dequantize_row`]
//! in the tests.
//!
//! Layouts and formulas follow ggml's `ggml-common.h` / `ggml-quants.c`
//! (`dequantize_row_*`) and gguf-py's `quants.py`.

use half::f16;
use mote::quant::{mxfp4_half_scale, FP4_TIMES_TWO};
use mote::DType;

/// ggml's 16 non-linear levels of IQ4_NL and IQ4_XS.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// The ggml types a GGUF tensor can have (`ggml_type` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// (type, id, name, values a block, bytes a block).
const TYPES: [(GgmlType, u32, &str, usize, usize); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", QK_K, 84),
    (GgmlType::Q3_K, 11, "Q3_K", QK_K, 110),
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, 144),
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, 176),
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, 210),
    (GgmlType::Q8_K, 15, "Q8_K", QK_K, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", QK_K, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TYPES
            .iter()
            .find(|t| t.0 == self)
            .expect("every type is in TYPES")
    }

    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }

    /// ggml's name (`Q4_K`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Values a block.
    pub fn block_len(self) -> usize {
        self.entry().3
    }

    /// Bytes a block.
    pub fn block_bytes(self) -> usize {
        self.entry().4
    }

    /// Bytes of `rows` rows of `cols` values, or `None` when a row is not
    /// whole blocks (or the size overflows).
    pub fn bytes_for(self, cols: u64, rows: u64) -> Option<u64> {
        let n = self.block_len() as u64;
        cols.is_multiple_of(n)
            .then(|| {
                (cols / n)
                    .checked_mul(self.block_bytes() as u64)?
                    .checked_mul(rows)
            })
            .flatten()
    }

    /// Bytes of one row of `cols` values (whole blocks).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_len() * self.block_bytes()
    }

    /// The mote weight type holding this type's numbers exactly, if there
    /// is one (its rows are then copied by [`copy_row`]).
    pub fn mote_dtype(self) -> Option<DType> {
        match self {
            GgmlType::F32 => Some(DType::F32),
            GgmlType::F16 => Some(DType::F16),
            GgmlType::Q4_0 => Some(DType::Q4),
            GgmlType::Q8_0 => Some(DType::Q8),
            GgmlType::MXFP4 => Some(DType::Mxfp4),
            _ => None,
        }
    }

    /// True when [`dequantize_row`] decodes this type.
    pub fn decodes(self) -> bool {
        !matches!(
            self,
            GgmlType::Q8_1
                | GgmlType::Q8_K
                | GgmlType::IQ2_XXS
                | GgmlType::IQ2_XS
                | GgmlType::IQ3_XXS
                | GgmlType::IQ1_S
                | GgmlType::IQ3_S
                | GgmlType::IQ2_S
                | GgmlType::IQ1_M
                | GgmlType::TQ1_0
                | GgmlType::TQ2_0
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Copies one ggml row of a type with a [`GgmlType::mote_dtype`] into that
/// mote type's row (`out` is `dtype.row_bytes(cols)` long).
pub fn copy_row(ty: GgmlType, row: &[u8], out: &mut [u8]) {
    match ty {
        GgmlType::F32 | GgmlType::F16 => out.copy_from_slice(row),
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            // [d, values] blocks → [all d][all values].
            let (bb, vb) = (ty.block_bytes(), ty.block_bytes() - 2);
            let blocks = row.len() / bb;
            let (scales, values) = out.split_at_mut(2 * blocks);
            for (i, block) in row.chunks_exact(bb).enumerate() {
                scales[2 * i..2 * i + 2].copy_from_slice(&block[..2]);
                values[vb * i..vb * (i + 1)].copy_from_slice(&block[2..]);
            }
        }
        GgmlType::MXFP4 => {
            // [e, 16 bytes: j | j+16] blocks → [all e][16 bytes: 2j | 2j+1].
            let blocks = row.len() / 17;
            let (scales, values) = out.split_at_mut(blocks);
            for (i, block) in row.chunks_exact(17).enumerate() {
                scales[i] = block[0];
                let mut codes = [0u8; 32];
                for j in 0..16 {
                    codes[j] = block[1 + j] & 0x0f;
                    codes[j + 16] = block[1 + j] >> 4;
                }
                for (j, v) in values[16 * i..16 * (i + 1)].iter_mut().enumerate() {
                    *v = codes[2 * j] | (codes[2 * j + 1] << 4);
                }
            }
        }
        _ => unreachable!("copy_row takes types with a mote dtype, not {ty}"),
    }
}

/// The 6-bit scale and min `j` of a Q4_K / Q5_K super-block's 12 bytes.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (
            ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4)) as f32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32,
        )
    }
}

/// Decodes one row of `ty` blocks into `out.len()` values (a multiple of
/// the block length). Panics for a type [`GgmlType::decodes`] refuses.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    let n = ty.block_len();
    let blocks = row
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(n));
    match ty {
        GgmlType::F32 => {
            for (b, y) in blocks {
                y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, y) in blocks {
                y[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, y) in blocks {
                y[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        GgmlType::F64 => {
            for (b, y) in blocks {
                y[0] = f64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f32;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::IQ4_NL => {
            for (b, y) in blocks {
                let d = f16_at(b, 0);
                let (m, qs) = match ty {
                    GgmlType::Q4_1 => (f16_at(b, 2), &b[4..20]),
                    _ => (0.0, &b[2..18]),
                };
                for j in 0..16 {
                    let (lo, hi) = (qs[j] & 0x0f, qs[j] >> 4);
                    (y[j], y[j + 16]) = match ty {
                        GgmlType::Q4_0 => (d * (lo as f32 - 8.0), d * (hi as f32 - 8.0)),
                        GgmlType::Q4_1 => (d * lo as f32 + m, d * hi as f32 + m),
                        _ => (
                            d * IQ4_LEVELS[lo as usize] as f32,
                            d * IQ4_LEVELS[hi as usize] as f32,
                        ),
                    };
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for (b, y) in blocks {
                let d = f16_at(b, 0);
                let (m, at) = match ty {
                    GgmlType::Q5_1 => (f16_at(b, 2), 4),
                    _ => (0.0, 2),
                };
                let qh = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
                let qs = &b[at + 4..at + 20];
                for j in 0..16 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    let x0 = ((qs[j] & 0x0f) as u32 | h0) as f32;
                    let x1 = ((qs[j] >> 4) as u32 | h1) as f32;
                    (y[j], y[j + 16]) = match ty {
                        GgmlType::Q5_0 => (d * (x0 - 16.0), d * (x1 - 16.0)),
                        _ => (d * x0 + m, d * x1 + m),
                    };
                }
            }
        }
        GgmlType::Q8_0 => {
            for (b, y) in blocks {
                let d = f16_at(b, 0);
                for (o, &q) in y.iter_mut().zip(&b[2..34]) {
                    *o = d * (q as i8) as f32;
                }
            }
        }
        GgmlType::MXFP4 => {
            for (b, y) in blocks {
                let d = mxfp4_half_scale(b[0]);
                for j in 0..16 {
                    y[j] = d * FP4_TIMES_TWO[(b[1 + j] & 0x0f) as usize] as f32;
                    y[j + 16] = d * FP4_TIMES_TWO[(b[1 + j] >> 4) as usize] as f32;
                }
            }
        }
        GgmlType::Q2_K => {
            // scales[16], qs[64], d, dmin.
            for (b, y) in blocks {
                let (sc, qs) = (&b[..16], &b[16..80]);
                let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
                let mut is = 0;
                for half in 0..2 {
                    let q = &qs[32 * half..32 * half + 32];
                    for shift in [0, 2, 4, 6] {
                        for part in 0..2 {
                            let s = sc[is];
                            is += 1;
                            let (dl, ml) = (d * (s & 0x0f) as f32, dmin * (s >> 4) as f32);
                            let base = 128 * half + 32 * (shift / 2) + 16 * part;
                            for l in 0..16 {
                                y[base + l] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                            }
                        }
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            // hmask[32], qs[64], scales[12], d.
            for (b, y) in blocks {
                let (hm, qs, s) = (&b[..32], &b[32..96], &b[96..108]);
                let d = f16_at(b, 108);
                let mut scales = [0i8; 16];
                for (j, v) in scales.iter_mut().enumerate() {
                    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
                    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                    *v = (low | (high << 4)) as i8 - 32;
                }
                let mut is = 0;
                let mut m = 1u8;
                for half in 0..2 {
                    let q = &qs[32 * half..32 * half + 32];
                    for shift in [0, 2, 4, 6] {
                        for part in 0..2 {
                            let dl = d * scales[is] as f32;
                            is += 1;
                            let base = 128 * half + 32 * (shift / 2) + 16 * part;
                            for l in 0..16 {
                                let k = l + 16 * part;
                                let low = ((q[k] >> shift) & 3) as i32;
                                let minus = if hm[k] & m != 0 { 0 } else { 4 };
                                y[base + l] = dl * (low - minus) as f32;
                            }
                        }
                        m <<= 1;
                    }
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // d, dmin, scales[12], (Q5_K: qh[32]), qs[128].
            for (b, y) in blocks {
                let (d, dmin, sc) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
                let (qh, qs) = match ty {
                    GgmlType::Q5_K => (Some(&b[16..48]), &b[48..176]),
                    _ => (None, &b[16..144]),
                };
                for group in 0..4 {
                    let q = &qs[32 * group..32 * group + 32];
                    for nib in 0..2 {
                        let (s, m) = scale_min_k4(2 * group + nib, sc);
                        let (dl, ml) = (d * s, dmin * m);
                        let bit = 1u8 << (2 * group + nib);
                        for l in 0..32 {
                            let low = if nib == 0 { q[l] & 0x0f } else { q[l] >> 4 };
                            let high = qh.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
                            y[64 * group + 32 * nib + l] = dl * (low + high) as f32 - ml;
                        }
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            // ql[128], qh[64], scales[16] (i8), d.
            for (b, y) in blocks {
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    let sc = &sc[8 * half..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = [
                            (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                            (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                            (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                        ];
                        for (k, &q) in q.iter().enumerate() {
                            y[128 * half + 32 * k + l] =
                                d * (sc[is + 2 * k] as i8) as f32 * (q as i32 - 32) as f32;
                        }
                    }
                }
            }
        }
        GgmlType::IQ4_XS => {
            // d, scales_h (u16), scales_l[4], qs[128].
            for (b, y) in blocks {
                let d = f16_at(b, 0);
                let sh = u16::from_le_bytes([b[2], b[3]]);
                let (sl, qs) = (&b[4..8], &b[8..136]);
                for ib in 0..8 {
                    let ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0x0f) as i32
                        | ((((sh >> (2 * ib)) & 3) as i32) << 4);
                    let dl = d * (ls - 32) as f32;
                    let q = &qs[16 * ib..16 * ib + 16];
                    for j in 0..16 {
                        y[32 * ib + j] = dl * IQ4_LEVELS[(q[j] & 0x0f) as usize] as f32;
                        y[32 * ib + j + 16] = dl * IQ4_LEVELS[(q[j] >> 4) as usize] as f32;
                    }
                }
            }
        }
        _ => panic!("dequantize_row: {ty} is not decoded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (no dependency on a random crate).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Random blocks with finite, moderate f16 scales at `scale_at`.
    fn blocks(ty: GgmlType, n: usize, scale_at: &[usize], seed: u64) -> Vec<u8> {
        let mut b = bytes(n * ty.block_bytes(), seed);
        for block in b.chunks_exact_mut(ty.block_bytes()) {
            for &at in scale_at {
                let v = f16::from_f32(0.01 + (block[at] as f32) / 4096.0);
                block[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn copied_rows_hold_the_same_numbers() {
        for (ty, scale_at) in [
            (GgmlType::Q4_0, vec![0]),
            (GgmlType::Q8_0, vec![0]),
            (GgmlType::MXFP4, vec![]),
        ] {
            let cols = 96; // three blocks
            let row = blocks(ty, cols / 32, &scale_at, 7);
            let want = {
                let mut y = vec![0.0; cols];
                dequantize_row(ty, &row, &mut y);
                y
            };
            let dtype = ty.mote_dtype().unwrap();
            let mut out = vec![0u8; dtype.row_bytes(cols)];
            copy_row(ty, &row, &mut out);
            let mut got = vec![0.0; cols];
            mote::quant::dequantize_row(dtype, &out, &mut got);
            assert_eq!(got, want, "{ty}");
        }
    }

    /// gguf-py's values for random blocks of every decoded type
    /// (tools/reference/make_gguf_fixtures.py writes them).
    #[test]
    fn decodes_as_gguf_py_does() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/gguf/blocks.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = json.as_object().unwrap();
        assert!(cases.len() >= 11);
        for (name, case) in cases {
            let ty = TYPES.iter().find(|t| t.2 == name).expect("known type").0;
            let hex = case["bytes"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let want: Vec<f32> = case["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let mut got = vec![0.0; want.len()];
            dequantize_row(ty, &bytes, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                    "{name} value {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn sizes_follow_the_blocks() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512, 3), Some(2 * 144 * 3));
        assert_eq!(GgmlType::Q4_K.bytes_for(320, 1), None); // not whole super-blocks
        assert_eq!(GgmlType::from_id(39), Some(GgmlType::MXFP4));
        assert_eq!(GgmlType::from_id(4), None); // removed Q4_2
    }

    #[test]
    fn k_quant_scales_unpack_as_ggml_does() {
        // Q4_K: first four 6-bit scales are the low bits of bytes 0..4,
        // the last four combine nibbles of bytes 8..12 with the top bits.
        let mut sc = [0u8; 12];
        sc[0] = 0b11_000101; // scale 0 = 5, top bits 3 go to scale 4
        sc[4] = 0b01_000111; // min 0 = 7, top bits 1 go to min 4
        sc[8] = 0x2a; // scale 4 low nibble 0xa, min 4 low nibble 2
        assert_eq!(scale_min_k4(0, &sc), (5.0, 7.0));
        assert_eq!(
            scale_min_k4(4, &sc),
            ((0xa | (3 << 4)) as f32, (2 | (1 << 4)) as f32)
        );
    }
}
