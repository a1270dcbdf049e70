//! The shared compare-with-scalar suite (tests only): every ISA's tests run
//! it on their tables, and `detected_kernels_match_scalar` on the detected one.

extern crate std;
use std::vec;

use super::*;
use crate::format::tensor::Layout;
use crate::quant::{encode_row, quantize_activations, rows4_from_planar, BLOCK_LEN};

/// Every weight format and layout the kernels take.
const FORMATS: [(DType, Layout); 7] = [
    (DType::Q4, Layout::Planar),
    (DType::Q4, Layout::Rows4),
    (DType::Q8, Layout::Planar),
    (DType::Q8, Layout::Rows4),
    (DType::Mxfp4, Layout::Planar),
    (DType::F16, Layout::Planar),
    (DType::F32, Layout::Planar),
];

/// `rows × cols` values as a `dtype` matrix in `layout`.
fn encode_in(dtype: DType, layout: Layout, w: &[f32], rows: usize, cols: usize) -> vec::Vec<u8> {
    let planar = encode(dtype, w, rows, cols, 0);
    match layout {
        Layout::Planar => planar,
        Layout::Rows4 => {
            let mut out = vec![0u8; planar.len()];
            rows4_from_planar(dtype, cols, &planar, &mut out);
            out
        }
    }
}

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

/// One token's activations, quantized by the scalar quantizer.
struct Quantized {
    x: vec::Vec<f32>,
    qs: vec::Vec<i8>,
    scales: vec::Vec<f32>,
    sums: vec::Vec<f32>,
}

impl Quantized {
    fn new(x: vec::Vec<f32>) -> Self {
        let blocks = x.len().div_ceil(BLOCK_LEN);
        let mut q = Quantized {
            qs: vec![0i8; blocks * BLOCK_LEN],
            scales: vec![0.0f32; blocks],
            sums: vec![0.0f32; blocks],
            x,
        };
        quantize_activations(&q.x, &mut q.qs, &mut q.scales, &mut q.sums);
        q
    }

    fn view(&self) -> Activations<'_> {
        Activations {
            f32s: &self.x,
            qs: &self.qs,
            scales: &self.scales,
            sums: &self.sums,
        }
    }
}

/// Rounding ties and near-ties go away from zero exactly as the scalar
/// quantizer's: a block whose largest value is 127 has id = 1, so each
/// value is rounded as it stands.
pub(crate) fn compare_rounding_ties_with_scalar(quantize: QuantizeActsFn) {
    let near = f32::from_bits(0.5f32.to_bits() - 1);
    let mut x = vec![
        127.0f32, 0.5, -0.5, 1.5, -2.5, 126.5, near, -near, 0.0, -0.0,
    ];
    x.extend((0..23).map(|i| i as f32 * 3.5 - 40.5));
    let blocks = x.len().div_ceil(BLOCK_LEN);
    let mut want = (
        vec![0i8; 32 * blocks],
        vec![0.0f32; blocks],
        vec![0.0; blocks],
    );
    let mut got = want.clone();
    quantize_activations(&x, &mut want.0, &mut want.1, &mut want.2);
    quantize(&x, &mut got.0, &mut got.1, &mut got.2);
    assert_eq!(got, want);
    assert_eq!(&got.0[..8], &[127, 1, -1, 2, -3, 127, 0, 0]);
}

/// Weights at an odd address (never so in model files) still give the
/// scalar result.
pub(crate) fn compare_misaligned_with_scalar(fast: &Kernels) {
    let (rows, cols) = (3usize, 161usize);
    let mut rng = Rng(7);
    let w: vec::Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
    let x = Quantized::new((0..cols).map(|_| rng.unit()).collect());
    let acts = x.view();
    for dtype in [DType::Q4, DType::Q8, DType::Mxfp4, DType::F16, DType::F32] {
        let buf = encode(dtype, &w, rows, cols, 1);
        let m = Matrix {
            dtype,
            layout: Layout::Planar,
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
    compare_attend_with_scalar(fast);
    compare_silu_with_scalar(fast);
    let scalar = Kernels::scalar();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sizes = [
        1usize, 5, 31, 32, 33, 63, 64, 65, 96, 100, 127, 128, 129, 255, 500, 512, 513, 1024, 1040,
        2816, 4099,
    ];
    for &cols in &sizes {
        for pattern in 0..6 {
            // Pattern 0 has more rows than any kernel's tile (RVV's are up
            // to VLEN / 16) and a partial last tile.
            let rows = if pattern == 0 {
                37
            } else {
                1 + (cols + pattern) % 4
            };
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
            for (dtype, layout) in FORMATS {
                // The reference is the scalar kernel on planar rows.
                let planar = encode(dtype, &w, rows, cols, 0);
                let bytes = encode_in(dtype, layout, &w, rows, cols);
                let m = Matrix {
                    dtype,
                    layout,
                    rows,
                    cols,
                    data: &bytes,
                };
                let (mut want, mut got) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                scalar.matvec(
                    &Matrix {
                        layout: Layout::Planar,
                        data: &planar,
                        ..m
                    },
                    &acts,
                    &mut want,
                );
                fast.matvec(&m, &acts, &mut got);
                for r in 0..rows {
                    let row = &w[r * cols..(r + 1) * cols];
                    let magnitude: f32 = row.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                    let tol = 2e-5 * magnitude + 1e-20;
                    assert!(
                        (want[r] - got[r]).abs() <= tol,
                        "{} {dtype} {layout} cols {cols} pattern {pattern} row {r}: scalar {} vs {} (tol {tol})",
                        fast.name, want[r], got[r]
                    );
                }
            }
        }
    }
}

/// `fast.attend` against the scalar one for every KV cache type: head
/// widths 1 to 130, 1 to 70 visible positions of a ring that wraps, with
/// and without a sink.
pub(crate) fn compare_attend_with_scalar(fast: &Kernels) {
    use crate::arena::Arena;
    use crate::kv_cache::{KvCacheType, KvShape, KvStore};
    let mut rng = Rng(0x0dd_ba11_5eed);
    for &(d, visible) in &[
        (1usize, 1usize),
        (7, 5),
        (32, 23),
        (64, 70),
        (128, 12),
        (130, 9),
    ] {
        let slots = visible + 3;
        let stride = d + 5;
        let k: vec::Vec<f32> = (0..slots * stride).map(|_| rng.unit()).collect();
        let v: vec::Vec<f32> = (0..slots * stride).map(|_| rng.unit()).collect();
        let q: vec::Vec<f32> = (0..d).map(|_| rng.unit() * 4.0).collect();
        let shape = KvShape {
            heads: 1,
            width: stride,
        };
        for kind in [KvCacheType::F32, KvCacheType::F16, KvCacheType::Q8] {
            let bytes = kind.cache_bytes(slots, 1, stride);
            let mut region = vec![0u8; 2 * bytes + 128];
            let mut arena = Arena::new(&mut region, 2 * bytes + 128);
            let mut kc = KvStore::take(&mut arena, kind, slots, shape).unwrap();
            let mut vc = KvStore::take(&mut arena, kind, slots, shape).unwrap();
            for s in 0..slots {
                kc.write(shape, s, &k[s * stride..]);
                vc.write(shape, s, &v[s * stride..]);
            }
            for sink in [None, Some(0.5f32)] {
                let cache = scalar::KvView {
                    k: kc.rows(0, 0),
                    v: vc.rows(0, 0),
                    stride,
                    scale_stride: shape.scale_stride(),
                    slots,
                    first: slots - 2, // visible positions wrap past the last slot
                };
                let (mut s1, mut s2) = (vec![0.0f32; visible], vec![0.0f32; visible]);
                let (mut want, mut got) = (vec![0.0f32; d], vec![1.0f32; d]);
                scalar::attend(&q, cache, 0.3, sink, &mut s1, &mut want);
                (fast.attend)(&q, cache, 0.3, sink, &mut s2, &mut got);
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{} attend {kind:?} d {d} visible {visible} sink {sink:?}: {a} vs {b}",
                        fast.name
                    );
                }
            }
        }
    }
}

/// `fast.silu_mul` against the scalar one within 1e-6 relative, over
/// gates from −120 to 120 (past both ends of exp's range) and odd lengths.
pub(crate) fn compare_silu_with_scalar(fast: &Kernels) {
    let mut rng = Rng(0x5111_u64);
    for len in [1usize, 7, 33, 100, 1000] {
        let gate: vec::Vec<f32> = (0..len).map(|_| rng.unit() * 120.0).collect();
        let up: vec::Vec<f32> = (0..len).map(|_| rng.unit() * 2.0).collect();
        let (mut want, mut got) = (gate.clone(), gate.clone());
        scalar::silu_mul(&mut want, &up);
        (fast.silu_mul)(&mut got, &up);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs() + 1e-30,
                "{} silu_mul len {len} at {i} (gate {}): {a} vs {b}",
                fast.name,
                gate[i]
            );
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
            let rows = if tokens == 3 {
                37
            } else {
                1 + (cols + tokens) % 5
            };
            let blocks = cols.div_ceil(BLOCK_LEN);
            let stride = blocks + tokens % 2; // tokens need not be packed
            let mut w = vec![0.0f32; rows * cols];
            for r in 0..rows {
                fill(&mut rng, r + tokens, &mut w[r * cols..(r + 1) * cols]);
            }
            let f_stride = cols + 3;
            let mut xf = vec![0.0f32; tokens * f_stride];
            let mut qs = vec![0i8; tokens * stride * BLOCK_LEN];
            let (mut sc, mut sums) = (vec![0.0f32; tokens * stride], vec![0.0f32; tokens * stride]);
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
            for (dtype, layout) in FORMATS {
                let planar = encode(dtype, &w, rows, cols, 0);
                let bytes = encode_in(dtype, layout, &w, rows, cols);
                let m = Matrix {
                    dtype,
                    layout,
                    rows,
                    cols,
                    data: &bytes,
                };
                let (mut want, mut got) =
                    (vec![0.0f32; tokens * rows], vec![0.0f32; tokens * rows]);
                scalar.matmul(
                    &Matrix {
                        layout: Layout::Planar,
                        data: &planar,
                        ..m
                    },
                    &x,
                    &mut want,
                );
                fast.matmul(&m, &x, &mut got);
                for t in 0..tokens {
                    for r in 0..rows {
                        let row = &w[r * cols..(r + 1) * cols];
                        let xt = &xf[t * f_stride..t * f_stride + cols];
                        let magnitude: f32 = row.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                        let tol = 2e-5 * magnitude + 1e-20;
                        let (a, b) = (want[t * rows + r], got[t * rows + r]);
                        assert!(
                            (a - b).abs() <= tol,
                            "{} matmul {dtype} {layout} cols {cols} tokens {tokens} token {t} row {r}: scalar {a} vs {b}",
                            fast.name
                        );
                    }
                }
            }
        }
    }
}

/// The scalar rows4 kernels give the planar ones' results bit for bit
/// (same integer sums, same float order), at 1 to 9 rows.
#[test]
fn scalar_rows4_equals_scalar_planar() {
    let scalar = Kernels::scalar();
    let mut rng = Rng(0xface);
    for (rows, cols) in [(1usize, 32usize), (4, 64), (7, 100), (9, 513)] {
        let w: vec::Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
        let x = Quantized::new((0..cols).map(|_| rng.unit()).collect());
        let acts = x.view();
        for dtype in [DType::Q4, DType::Q8] {
            let planar = encode(dtype, &w, rows, cols, 0);
            let packed = encode_in(dtype, Layout::Rows4, &w, rows, cols);
            let m = Matrix {
                dtype,
                layout: Layout::Planar,
                rows,
                cols,
                data: &planar,
            };
            let (mut want, mut got) = (vec![0.0f32; rows], vec![0.0f32; rows]);
            scalar.matvec(&m, &acts, &mut want);
            scalar.matvec(
                &Matrix {
                    layout: Layout::Rows4,
                    data: &packed,
                    ..m
                },
                &acts,
                &mut got,
            );
            assert_eq!(want, got, "{dtype} {rows}x{cols}");
        }
    }
}

#[test]
fn detected_kernels_match_scalar() {
    compare_rounding_ties_with_scalar(Kernels::detect().quantize_activations);
    compare_with_scalar(&Kernels::detect());
    compare_matmul_with_scalar(&Kernels::detect());
}
