//! Tokenizer throughput: encoding and decoding 160 KB of held-out English
//! (`tools/train/heldout.txt`) with the built-in model's byte-level BPE and
//! with the committed Llama 3 (byte-level) and Llama 2 (SentencePiece)
//! fixture tokenizers. `tools/bench/tokenizer_speed.py` times the
//! `tokenizers` package on the same text and tokenizer files.
//!
//!     cargo bench -p mote-tests --bench tokenizer

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mote::{Model, SliceStorage, Tokenizer};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn sections() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let file = std::fs::read(repo("tools/models/tiny-kjv.mote")).expect("built-in model");
    let model = Model::open(SliceStorage::new(&file)).unwrap();
    let p = *model.preamble();
    let section =
        file[p.tokenizer_offset as usize..(p.tokenizer_offset + p.tokenizer_len) as usize].to_vec();
    out.push(("kjv-bytelevel".to_string(), section));
    for name in ["llama3-bytelevel", "llama2-sentencepiece"] {
        let folder = repo("tests/fixtures/tokenizers").join(name);
        let section = mote_quantize::read_tokenizer(&folder, &mut Vec::new())
            .unwrap()
            .unwrap();
        out.push((name.to_string(), section));
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(repo("tools/train/heldout.txt")).unwrap();
    let mut group = c.benchmark_group("tokenizer");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    for (name, section) in sections() {
        let tok = Tokenizer::parse(&section).unwrap();
        let mut ids = vec![0u32; tok.max_tokens(text.len())];
        let n = tok.encode(&text, false, &mut ids).unwrap();
        let mut out = vec![0u8; tok.max_decoded_bytes() * (n + 1)];
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| tok.encode(&text, false, &mut ids).unwrap())
        });
        let encoded = ids[..n].to_vec();
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| tok.decode(&encoded, true, &mut out).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
