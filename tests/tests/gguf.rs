//! GGUF import against llama.cpp on the same files: the fixtures in
//! `tests/fixtures/gguf` (tools/reference/make_gguf_fixtures.py: the tiny
//! transformers fixtures written as llama.cpp's converter writes them and
//! quantized by llama.cpp's quantizer) are imported keeping each tensor's
//! type, and mote's logits and tokens are compared with llama.cpp's on the
//! same file. Bad GGUFs get typed errors and leave nothing behind.

use std::path::{Path, PathBuf};

use mote::DType;
use mote_quantize::{quantize, Options, QuantizeError};
use mote_tests::{all_logits, fixture, mean_kl, top1_agreement};
use serde_json::Value;

fn gguf_dir() -> PathBuf {
    fixture("gguf")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(gguf_dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn options(dtype: Option<DType>) -> Options {
    Options {
        dtype,
        layout: mote::Layout::Planar,
        threads: 2,
        no_tokenizer: false,
    }
}

fn import(path: &Path, dtype: Option<DType>) -> Result<Vec<u8>, QuantizeError> {
    import_reporting(path, dtype).map(|(bytes, _)| bytes)
}

/// The imported file and the conversion's warnings.
fn import_reporting(
    path: &Path,
    dtype: Option<DType>,
) -> Result<(Vec<u8>, Vec<String>), QuantizeError> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.mote");
    let report = quantize(path, &out, &options(dtype), |_| {})?;
    Ok((std::fs::read(&out).unwrap(), report.warnings))
}

/// Every directory record's dtype.
fn dtypes(model: &mote::Model<mote::SliceStorage<'_>>) -> Vec<DType> {
    (0..model.tensor_count())
        .map(|i| model.record(i).unwrap().dtype)
        .collect()
}

fn logits_of(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn prompt_of(f: &Value) -> Vec<u32> {
    f["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// The mote type a ggml type is kept as.
fn kept(ggml: &str) -> Option<DType> {
    match ggml {
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "Q8_0" => Some(DType::Q8),
        "Q4_0" => Some(DType::Q4),
        "MXFP4" => Some(DType::Mxfp4),
        _ => None,
    }
}

#[test]
fn imported_files_match_llama_cpp_on_the_same_file() {
    let r = reference();
    let files = r["files"].as_object().unwrap();
    assert!(files.len() >= 8, "fixtures missing");
    for (name, f) in files {
        let types = f["types"].as_object().unwrap();
        // A type mote has no kernel for is re-quantized to int8, and the
        // warnings name it.
        let foreign = types
            .iter()
            .find(|(_, t)| kept(t.as_str().unwrap()).is_none());
        if let Some((tensor, ty)) = foreign {
            let ty = ty.as_str().unwrap();
            let (bytes, warnings) = import_reporting(&gguf_dir().join(name), None).unwrap();
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains(&format!("of {ty} re-quantized to int8"))),
                "{name}: {warnings:?}"
            );
            let want = logits_of(&f["logits"]);
            let got = all_logits(&bytes, &prompt_of(f));
            let kl = mean_kl(&want, &got);
            println!("{name} ({tensor}: {ty}) as int8: mean KL vs llama.cpp {kl:.2e}");
            assert!(
                kl < 5e-3,
                "{name}: re-quantized mean KL {kl:.3e} against llama.cpp"
            );
            continue;
        }
        let bytes = import(&gguf_dir().join(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let model = mote::Model::open(mote::SliceStorage::new(&bytes)).unwrap();
        // Every weight matrix kept its GGUF type (norms and routers are f32).
        let quantized_kept = dtypes(&model).iter().filter(|d| d.is_quantized()).count();
        let quantized_in_file = types
            .values()
            .filter(|t| matches!(kept(t.as_str().unwrap()), Some(d) if d.is_quantized()))
            .count();
        assert!(quantized_kept > 0, "{name}: no quantized tensor kept");
        // Stacked experts count once in the file and once per expert in mote.
        assert!(
            quantized_kept >= quantized_in_file,
            "{name}: {quantized_kept} < {quantized_in_file}"
        );
        let want = logits_of(&f["logits"]);
        let got = all_logits(&bytes, &prompt_of(f));
        let kl = mean_kl(&want, &got);
        let top1 = top1_agreement(&want, &got);
        println!("{name}: mean KL vs llama.cpp {kl:.2e}, top-1 {top1:.3}");
        // The same numbers: only activation rounding differs (llama.cpp
        // rounds activations to f16 for F16 weights, to Q8_0 blocks with
        // f16 scales for quantized ones; mote keeps f32 and f32 scales).
        assert!(kl < 2e-3, "{name}: mean KL {kl:.3e} against llama.cpp");
        for (p, (w, g)) in want.iter().zip(&got).enumerate() {
            let mut sorted = w.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 0.05 {
                assert_eq!(
                    argmax(g),
                    argmax(w),
                    "{name}: greedy token at {p} differs from llama.cpp's"
                );
            }
        }
        assert!(top1 >= 0.75, "{name}: top-1 agreement {top1}");

        // Tokens: llama.cpp's, on the same file.
        let mut buf = vec![0u8; model.tokenizer_len()];
        let tok = model.tokenizer(&mut buf).unwrap();
        for (text, want) in r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(f["tokens"].as_array().unwrap())
        {
            let text = text.as_str().unwrap();
            let mut out = vec![0u32; tok.max_tokens(text.len())];
            let n = tok.encode(text, false, &mut out).unwrap();
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(out[..n], want[..], "{name}: tokens of {text}");
        }
    }
}

#[test]
fn dtype_requantizes_instead() {
    let path = gguf_dir().join("qwen3moe-tiny-q4_0.gguf");
    let bytes = import(&path, Some(DType::Q8)).unwrap();
    let model = mote::Model::open(mote::SliceStorage::new(&bytes)).unwrap();
    assert!(dtypes(&model)
        .iter()
        .all(|&d| d == DType::Q8 || d == DType::F32));
    // Int8 re-quantization of int4 numbers: close to the original file.
    let f = &reference()["files"]["qwen3moe-tiny-q4_0.gguf"];
    let kl = mean_kl(&logits_of(&f["logits"]), &all_logits(&bytes, &prompt_of(f)));
    assert!(kl < 1e-2, "mean KL {kl:.3e}");
}

/// A copy of `name` with `edit` applied, in a temporary directory.
fn edited(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(gguf_dir().join(name)).unwrap();
    edit(&mut bytes);
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Byte offset of tensor `name`'s directory entry's type field.
fn type_field(bytes: &[u8], tensor: &str) -> usize {
    let at = bytes
        .windows(tensor.len() + 8)
        .position(|w| &w[8..] == tensor.as_bytes() && w[..8] == (tensor.len() as u64).to_le_bytes())
        .expect("tensor name in the directory");
    let dims_at = at + 8 + tensor.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

#[test]
fn bad_ggufs_get_errors_naming_the_problem_and_write_nothing() {
    let name = "llama-tiny-q8_0.gguf";
    let check = |path: &Path, want: &str| {
        let dir = path.parent().unwrap();
        let out = dir.join("out.mote");
        let err = quantize(path, &out, &options(None), |_| {})
            .unwrap_err()
            .to_string();
        println!("{err}");
        assert!(err.contains(want), "{err:?} should mention {want:?}");
        // Nothing left behind: no output, no partial file.
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != name)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    };
    let (_d, p) = edited(name, |b| b[0] = b'X');
    check(&p, "not a GGUF file");
    let (_d, p) = edited(name, |b| b[4] = 9);
    check(&p, "GGUF version 9");
    let (_d, p) = edited(name, |b| b.truncate(b.len() - 100));
    check(&p, "past the end of the file");
    let (_d, p) = edited(name, |b| b.truncate(200));
    check(&p, "cannot fit in a file of 200 bytes");
    let (_d, p) = edited(name, |b| b.truncate(3000));
    check(&p, "past the end of the file");
    // An unknown ggml type, and one mote cannot read, name the tensor.
    let (_d, p) = edited(name, |b| {
        let at = type_field(b, "blk.1.attn_v.weight");
        b[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    });
    check(&p, "blk.1.attn_v.weight: unknown ggml type 77");
    // Q4_K's blocks are 256 values: a 64-wide row is not whole blocks.
    let (_d, p) = edited(name, |b| {
        let at = type_field(b, "blk.1.attn_v.weight");
        b[at..at + 4].copy_from_slice(&12u32.to_le_bytes());
    });
    check(&p, "blk.1.attn_v.weight");
    // A type mote does not read (I8 here; the IQ1-IQ3 and TQ types too).
    let (_d, p) = edited(name, |b| {
        let at = type_field(b, "blk.1.attn_v.weight");
        b[at..at + 4].copy_from_slice(&24u32.to_le_bytes());
    });
    check(&p, "blk.1.attn_v.weight: I8: mote cannot read this type");
    // A tensor the model needs, renamed away.
    let (_d, p) = edited(name, |b| {
        let t = b"blk.2.attn_output.weight";
        let at = b.windows(t.len()).position(|w| w == t).unwrap();
        b[at + 4] = b'X';
    });
    check(&p, "missing tensor");
    // A shape that disagrees with the metadata.
    let (_d, p) = edited(name, |b| {
        let t = "blk.0.ffn_norm.weight";
        let at = type_field(b, t) - 8;
        b[at..at + 8].copy_from_slice(&32u64.to_le_bytes());
    });
    check(&p, "blk.0.ffn_norm.weight: shape");
    // A data offset past the end of the file.
    let (_d, p) = edited(name, |b| {
        let at = type_field(b, "output.weight") + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    check(&p, "output.weight");
}

#[test]
fn a_split_set_imports_as_its_single_file_does() {
    let single = import(&gguf_dir().join("llama-tiny-q4_0.gguf"), None).unwrap();
    let split = import(
        &gguf_dir().join("llama-tiny-q4_0-split-00001-of-00003.gguf"),
        None,
    )
    .unwrap();
    assert!(
        single == split,
        "the split set's .mote differs from the single file's"
    );
    let err = import(
        &gguf_dir().join("llama-tiny-q4_0-split-00002-of-00003.gguf"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not its first file"), "{err}");
}

#[test]
fn an_architecture_not_imported_is_named() {
    // general.architecture "llama" → "gemma" (same length) in the header.
    let (_d, p) = edited("llama-tiny-q8_0.gguf", |b| {
        let key = b"general.architecture";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        // type (u32 8) + length (u64 5) + "llama"
        assert_eq!(&b[at + 12..at + 17], b"llama");
        b[at + 12..at + 17].copy_from_slice(b"gemma");
    });
    let err = import(&p, None).unwrap_err().to_string();
    assert!(
        err.contains("\"gemma\" is not imported yet") && err.contains("deepseek2"),
        "{err}"
    );
}

#[test]
fn unstacked_experts_import_as_stacked_ones_do() {
    // One tensor an expert (`blk.N.ffn_gate.E.weight`), as Mixtral GGUFs
    // were before llama.cpp stacked them: the same numbers, the same file.
    let stacked = import(&gguf_dir().join("mixtral-tiny-q4_0.gguf"), None).unwrap();
    let unstacked = import(&gguf_dir().join("mixtral-tiny-q4_0-unstacked.gguf"), None).unwrap();
    assert!(stacked == unstacked, "unstacked experts import differently");
}
