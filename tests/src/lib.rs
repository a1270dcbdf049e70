//! Shared helpers for the cross-cutting tests: the committed fixtures, their
//! reference outputs from transformers, conversion into a temporary folder,
//! and the metrics the conformance tests compare with.

use std::path::{Path, PathBuf};

pub use mote::sample::argmax;
use mote::{DType, KvCacheType, Limits, Model, Plan, Session, SliceStorage};
use serde::Deserialize;

/// Reference outputs written by `tools/reference/make_fixtures.py`.
#[derive(Debug, Deserialize)]
pub struct Reference {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// 16 greedy tokens, EOS ignored.
    pub greedy: Vec<u32>,
    /// The EOS id written into the fixture's config.
    pub eos_token_id: u32,
    /// `greedy` up to and including the first EOS.
    pub greedy_until_eos: Vec<u32>,
    /// Prompt + greedy[..15]: every position has reference logits.
    pub tokens: Vec<u32>,
    /// Logits of the f32 checkpoint at every position of `tokens`.
    pub logits_f32: Vec<Vec<f32>>,
    /// Logits of the bf16 checkpoint (computed in f32).
    pub logits_bf16: Vec<Vec<f32>>,
    /// Mean KL of fake-quantized weights against f32, by dtype name.
    pub sim_kl: std::collections::HashMap<String, f64>,
    /// Top-1 agreement of fake-quantized weights with f32, by dtype name.
    pub sim_top1: std::collections::HashMap<String, f64>,
}

/// The folder of a committed fixture family, e.g. `mixtral-tiny`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Loads `reference.json` of a fixture family.
pub fn reference(name: &str) -> Reference {
    let path = fixture(name).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Converts checkpoint folder `family/variant` to `dtype` and returns the file's bytes.
pub fn convert(family: &str, variant: &str, dtype: DType) -> Vec<u8> {
    convert_in(family, variant, dtype, mote::Layout::Planar)
}

/// [`convert`] with the int4/int8 matrices in `layout`.
pub fn convert_in(family: &str, variant: &str, dtype: DType, layout: mote::Layout) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("model.mote");
    let options = mote_quantize::Options {
        dtype: Some(dtype),
        layout,
        threads: 2,
        no_tokenizer: false,
    };
    mote_quantize::quantize(&fixture(family).join(variant), &out, &options, |_| {})
        .unwrap_or_else(|e| panic!("quantize {family}/{variant} to {dtype}: {e}"));
    std::fs::read(&out).expect("read output")
}

/// Logits at every position of `tokens`, one session step at a time, with
/// an f32 KV cache (the model's arithmetic, nothing rounded between steps).
pub fn all_logits(file: &[u8], tokens: &[u32]) -> Vec<Vec<f32>> {
    all_logits_with(file, tokens, KvCacheType::F32)
}

/// [`all_logits`] with a KV cache of `kv_cache`.
pub fn all_logits_with(file: &[u8], tokens: &[u32], kv_cache: KvCacheType) -> Vec<Vec<f32>> {
    let model = Model::open(SliceStorage::new(file)).expect("open");
    model.verify_checksums().expect("checksums");
    let plan = Plan::new(
        &model,
        &Limits {
            max_context: tokens.len() as u32,
            kv_cache,
            ..Limits::default()
        },
    )
    .expect("plan");
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).expect("session");
    tokens
        .iter()
        .map(|&t| session.step(t).expect("step").to_vec())
        .collect()
}

/// Greedy continuation of `prompt` for `n` tokens, stopping after EOS unless
/// `ignore_eos`; f32 KV cache.
pub fn greedy(file: &[u8], prompt: &[u32], n: usize, ignore_eos: bool) -> Vec<u32> {
    let model = Model::open(SliceStorage::new(file)).expect("open");
    let plan = Plan::new(
        &model,
        &Limits {
            max_context: (prompt.len() + n) as u32,
            kv_cache: KvCacheType::F32,
            ..Limits::default()
        },
    )
    .expect("plan");
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).expect("session");
    let mut next = argmax(session.prefill(prompt).expect("prefill"));
    let mut out = Vec::new();
    while out.len() < n {
        out.push(next);
        if (!ignore_eos && model.config().is_eos(next)) || out.len() == n {
            break;
        }
        next = argmax(session.step(next).expect("step"));
    }
    out
}

/// max |a - b| / max |b| over all rows: the relative error the conformance bound uses.
pub fn max_rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (&x, &y) in ra.iter().zip(rb) {
            diff = diff.max((x as f64 - y as f64).abs());
            scale = scale.max((y as f64).abs());
        }
    }
    diff / scale
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    v.iter().map(|&x| x as f64 - lse).collect()
}

/// Mean over positions of KL(p_ref || p_test) of the next-token distributions.
pub fn mean_kl(reference: &[Vec<f32>], test: &[Vec<f32>]) -> f64 {
    let total: f64 = reference
        .iter()
        .zip(test)
        .map(|(r, t)| {
            let (lp, lq) = (log_softmax(r), log_softmax(t));
            lp.iter()
                .zip(&lq)
                .map(|(p, q)| p.exp() * (p - q))
                .sum::<f64>()
        })
        .sum();
    total / reference.len() as f64
}

/// Fraction of positions whose argmax agrees.
pub fn top1_agreement(reference: &[Vec<f32>], test: &[Vec<f32>]) -> f64 {
    let same = reference
        .iter()
        .zip(test)
        .filter(|(r, t)| argmax(r) == argmax(t))
        .count();
    same as f64 / reference.len() as f64
}

/// A tensor to write into a test checkpoint: name, shape and f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every tensor of a checkpoint folder as f32, sorted by name.
pub fn read_checkpoint(dir: &Path) -> Vec<NamedTensor> {
    let ck = mote_quantize::Checkpoint::open(dir).expect("open checkpoint");
    let mut out: Vec<NamedTensor> = ck
        .tensors
        .iter()
        .map(|(name, entry)| {
            let n: usize = entry.shape.iter().product();
            let mut raw = vec![0u8; n * entry.dtype.size()];
            ck.read(entry, 0, &mut raw).expect("read tensor");
            let mut values = vec![0.0f32; n];
            entry.dtype.to_f32(&raw, &mut values);
            (name.clone(), entry.shape.clone(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `tensors` as one f32 `model.safetensors` in `dir`.
pub fn write_safetensors(dir: &Path, tensors: &[NamedTensor]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let end = offset + values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("header");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    for (_, _, values) in tensors {
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(dir.join("model.safetensors"), bytes).expect("write safetensors");
}
