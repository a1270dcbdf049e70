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
            dtype: DType::Q4,
            threads: 2,
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
                dtype: DType::Q8,
                threads: 1,
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
