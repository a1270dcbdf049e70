//! Matrix-vector kernels in GB/s of weights, against a plain memory read of
//! the same bytes (the ceiling decode can reach). Weights are 256 MiB, far
//! beyond the caches, as in decoding a real model.
//!
//! `cargo bench -p mote --bench kernels`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mote::kernels::{Activations, Kernels, Matrix};
use mote::quant::{encode_row, quantize_activations, rows4_from_planar, BLOCK_LEN};
use mote::{DType, Layout};

const COLS: usize = 1024;
const BYTES: usize = 256 << 20;

fn bench(c: &mut Criterion) {
    let blocks = COLS / BLOCK_LEN;
    let x: Vec<f32> = (0..COLS)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let (mut qs, mut sc, mut sums) = (vec![0i8; COLS], vec![0.0f32; blocks], vec![0.0f32; blocks]);
    quantize_activations(&x, &mut qs, &mut sc, &mut sums);
    let acts = Activations {
        f32s: &x,
        qs: &qs,
        scales: &sc,
        sums: &sums,
    };
    let row: Vec<f32> = (0..COLS)
        .map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0)
        .collect();

    let mut group = c.benchmark_group("decode_matvec");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(BYTES as u64));
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    group.bench_function("memory_read_baseline", |b| {
        b.iter(|| {
            words.chunks_exact(8).fold([0u64; 8], |mut a, w| {
                for i in 0..8 {
                    a[i] = a[i].wrapping_add(w[i]);
                }
                a
            })
        })
    });
    for (dtype, layout) in [
        (DType::Q4, Layout::Planar),
        (DType::Q4, Layout::Rows4),
        (DType::Q8, Layout::Planar),
        (DType::Q8, Layout::Rows4),
        (DType::Mxfp4, Layout::Planar),
    ] {
        let rb = dtype.row_bytes(COLS);
        let rows = BYTES / rb;
        let mut encoded = vec![0u8; rb];
        encode_row(dtype, &row, &mut encoded);
        let mut data: Vec<u8> = encoded.iter().copied().cycle().take(rows * rb).collect();
        if layout == Layout::Rows4 {
            let planar = data.clone();
            rows4_from_planar(dtype, COLS, &planar, &mut data);
        }
        let w = Matrix {
            dtype,
            layout,
            rows,
            cols: COLS,
            data: &data,
        };
        let mut out = vec![0.0f32; rows];
        for (name, k) in [
            ("scalar", Kernels::scalar()),
            ("detected", Kernels::detect()),
        ] {
            group.bench_function(format!("{dtype}_{layout}_{name}_{}", k.name), |b| {
                b.iter(|| k.matvec(&w, &acts, &mut out))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
