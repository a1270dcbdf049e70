//! The quantizer refuses bad checkpoints with an error naming the tensor or
//! field, and never leaves a partial output (an existing file is untouched).

use std::path::Path;

use mote::DType;
use mote_quantize::{quantize, Options, QuantizeError};
use mote_tests::{fixture, read_checkpoint, write_safetensors, NamedTensor};

fn fixture_tensors() -> Vec<NamedTensor> {
    read_checkpoint(&fixture("mixtral-tiny").join("f32"))
}

fn config_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("mixtral-tiny").join("f32/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Writes a checkpoint folder, converts it over an existing output file and
/// returns the error; checks that the old output survived and nothing else
/// was left in the folder.
fn convert_expecting_error(config: &serde_json::Value, tensors: &[NamedTensor]) -> QuantizeError {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    std::fs::write(ck.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    write_safetensors(&ck, tensors);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.mote");
    std::fs::write(&out, b"previous contents").unwrap();
    let err = quantize(
        &ck,
        &out,
        &Options {
            dtype: Some(DType::Q4),
            threads: 2,
            no_tokenizer: false,
            layout: mote::Layout::Planar,
        },
        |_| {},
    )
    .expect_err("conversion should fail");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"previous contents",
        "existing output was touched"
    );
    assert_eq!(
        entries(&out_dir),
        vec!["model.mote".to_string()],
        "partial files left behind"
    );
    err
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn nan_in_a_weight_names_tensor_row_and_column() {
    let mut tensors = fixture_tensors();
    let (name, shape, values) = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.self_attn.k_proj.weight")
        .unwrap();
    values[3 * shape[1] + 5] = f32::NAN;
    let name = name.clone();
    match convert_expecting_error(&config_json(), &tensors) {
        QuantizeError::NonFinite {
            tensor, row, col, ..
        } => {
            assert_eq!((tensor.as_str(), row, col), (name.as_str(), 3, 5))
        }
        other => panic!("expected NonFinite, got {other}"),
    }
}

#[test]
fn infinity_late_in_an_expert_is_caught_too() {
    let mut tensors = fixture_tensors();
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.2.block_sparse_moe.experts.7.w2.weight")
        .unwrap();
    let last = t.2.len() - 1;
    t.2[last] = f32::NEG_INFINITY;
    let err = convert_expecting_error(&config_json(), &tensors);
    assert!(
        err.to_string().contains("experts.7.w2") && err.to_string().contains("-inf"),
        "{err}"
    );
}

#[test]
fn a_missing_tensor_is_named_with_the_names_tried() {
    let mut tensors = fixture_tensors();
    tensors.retain(|t| t.0 != "model.layers.2.block_sparse_moe.experts.3.w3.weight");
    let err = convert_expecting_error(&config_json(), &tensors);
    let msg = err.to_string();
    assert!(matches!(err, QuantizeError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("experts.3.w3.weight") && msg.contains("gate_up_proj"),
        "{msg}"
    );
}

#[test]
fn a_shape_that_disagrees_with_config_json_is_named() {
    let mut config = config_json();
    config["intermediate_size"] = 96.into();
    match convert_expecting_error(&config, &fixture_tensors()) {
        QuantizeError::Shape {
            tensor,
            expected,
            found,
        } => {
            assert!(
                tensor.starts_with("model.layers.0.block_sparse_moe.experts.0."),
                "{tensor}"
            );
            assert_ne!(expected, found);
        }
        other => panic!("expected Shape, got {other}"),
    }
}

#[test]
fn an_unsupported_architecture_lists_the_supported_ones() {
    let mut config = config_json();
    config["architectures"] = serde_json::json!(["FancyNewForCausalLM"]);
    let msg = convert_expecting_error(&config, &fixture_tensors()).to_string();
    assert!(
        msg.contains("FancyNewForCausalLM") && msg.contains("MixtralForCausalLM"),
        "{msg}"
    );
}

#[test]
fn a_truncated_safetensors_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("mixtral-tiny").join("f32");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(dir.path().join("model.safetensors"), &bytes[..cut]).unwrap();
        let out = dir.path().join("out.mote");
        let err = quantize(
            dir.path(),
            &out,
            &Options {
                dtype: Some(DType::Q8),
                threads: 1,
                no_tokenizer: false,
                layout: mote::Layout::Planar,
            },
            |_| {},
        )
        .expect_err("truncated checkpoint converted");
        assert!(
            err.to_string().contains("model.safetensors"),
            "cut {cut}: {err}"
        );
        assert!(!out.exists());
    }
}

/// Copies fixture folder `from` into a temporary folder, replacing in each
/// file the first occurrence of `find` (in a safetensors header or its
/// data) by `replace` of the same length.
fn patched_copy(from: &Path, find: &[u8], replace: &[u8]) -> tempfile::TempDir {
    assert_eq!(find.len(), replace.len());
    let dir = tempfile::tempdir().unwrap();
    let mut patched = false;
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(find.len()).position(|w| w == find) {
            bytes[at..at + find.len()].copy_from_slice(replace);
            patched = true;
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    assert!(patched, "nothing to patch");
    dir
}

fn convert_folder(dir: &Path) -> Result<(), QuantizeError> {
    let out = dir.join("out.mote");
    let options = Options {
        dtype: Some(DType::Q4),
        threads: 2,
        no_tokenizer: false,
        layout: mote::Layout::Planar,
    };
    let result = quantize(dir, &out, &options, |_| {}).map(|_| ());
    assert_eq!(result.is_ok(), out.exists());
    result
}

#[test]
fn an_fp8_weight_without_its_block_scales_is_named() {
    let name = "model.layers.1.self_attn.kv_b_proj.weight";
    let scale = format!("\"{name}_scale_inv\"");
    let hidden = format!("\"{name}_scale_xxx\"");
    let dir = patched_copy(
        &fixture("deepseekv3-tiny").join("fp8"),
        scale.as_bytes(),
        hidden.as_bytes(),
    );
    let err = convert_folder(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, QuantizeError::DType { ref tensor, .. } if tensor == name),
        "{msg}"
    );
    assert!(msg.contains("_scale_inv"), "{msg}");
}

#[test]
fn an_mxfp4_nan_scale_is_an_error_naming_the_expert() {
    // The scale tensors' bytes are E8M0 exponents near 127; make one 255.
    let folder = fixture("gptoss-tiny").join("mxfp4");
    let index = std::fs::read_to_string(folder.join("model.safetensors.index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let name = "model.layers.0.mlp.experts.down_proj_scales";
    let file = folder.join(index["weight_map"][name].as_str().unwrap());
    let ck = mote_quantize::Checkpoint::open(&folder).unwrap();
    let entry = &ck.tensors[name];
    let bytes = std::fs::read(&file).unwrap();
    let at = entry.offset as usize;
    // 8 bytes of this tensor, patched where they occur first in its file.
    let find = bytes[at..at + 8].to_vec();
    assert_eq!(bytes.windows(8).position(|w| w == find), Some(at));
    let mut replace = find.clone();
    replace[0] = 255;
    let dir = patched_copy(&folder, &find, &replace);
    let err = convert_folder(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, QuantizeError::NonFinite { ref tensor, row: 0, col: 0, .. } if tensor.contains("down_proj_blocks[0]")),
        "{msg}"
    );
}

#[test]
fn a_tokenizer_mote_cannot_reproduce_says_how_to_convert_without_it() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            fixture("mixtral-tiny").join("f32").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    let wordpiece = r#"{"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}}"#;
    std::fs::write(dir.path().join("tokenizer.json"), wordpiece).unwrap();
    let out = dir.path().join("out.mote");
    let mut options = Options {
        dtype: Some(DType::Q8),
        threads: 1,
        no_tokenizer: false,
        layout: mote::Layout::Planar,
    };
    let err = quantize(dir.path(), &out, &options, |_| {}).unwrap_err();
    assert!(matches!(err, QuantizeError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("--no-tokenizer"), "{err}");
    assert!(!out.exists());
    options.no_tokenizer = true;
    let report = quantize(dir.path(), &out, &options, |_| {}).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("token ids only")));
    let bytes = std::fs::read(&out).unwrap();
    let model = mote::Model::open(mote::SliceStorage::new(&bytes)).unwrap();
    assert_eq!(model.preamble().tokenizer_len, 0);
}
