//! The CLI contract other tools depend on: JSON shapes, EOS handling, and
//! one-line errors with a non-zero exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mote_tests::{fixture, max_rel_err, reference};

fn mote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mote"))
        .args(args)
        .output()
        .expect("run mote")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = mote(args);
    assert!(
        out.status.success(),
        "mote {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("mote {args:?}: bad JSON ({e})"))
}

fn quantized(dir: &Path, dtype: &str) -> PathBuf {
    let out = dir.join(format!("tiny-{dtype}.mote"));
    let input = fixture("mixtral-tiny").join("f32");
    let status = mote(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
        "-q",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

fn ids(tokens: &[u32]) -> String {
    tokens
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn as_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn logits_all_and_last_match_the_reference() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "f32");
    let m = model.to_str().unwrap();
    let all = ok_json(&["logits", m, "--tokens", &ids(&r.tokens), "--all"]);
    let rows: Vec<Vec<f32>> = serde_json::from_value(all["logits"].clone()).unwrap();
    assert_eq!(rows.len(), r.tokens.len());
    assert!(max_rel_err(&rows, &r.logits_f32) < 1e-4);
    let last = ok_json(&["logits", m, "--tokens", &ids(&r.tokens)]);
    let last: Vec<Vec<f32>> = serde_json::from_value(last["logits"].clone()).unwrap();
    assert_eq!(last.len(), 1);
    // The last row of a batched prefill equals the step-by-step one up to
    // float summation order.
    assert!(max_rel_err(&last, &rows[rows.len() - 1..]) < 1e-5);
}

#[test]
fn generate_stops_at_eos_unless_told_not_to() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "f32");
    let m = model.to_str().unwrap();
    let prompt = ids(&r.prompt);
    let out = ok_json(&["generate", m, "--tokens", &prompt, "--max-tokens", "16"]);
    assert_eq!(as_u32s(&out["tokens"]), r.greedy_until_eos);
    let out = ok_json(&[
        "generate",
        m,
        "--tokens",
        &prompt,
        "--max-tokens",
        "16",
        "--ignore-eos",
    ]);
    assert_eq!(as_u32s(&out["tokens"]), r.greedy);
    let out = ok_json(&["generate", m, "--tokens", &prompt, "--max-tokens", "3"]);
    assert_eq!(as_u32s(&out["tokens"]), r.greedy[..3]);
}

#[test]
fn int4_round_trip_and_inspect() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "int4");
    let m = model.to_str().unwrap();
    let out = ok_json(&[
        "generate",
        m,
        "--tokens",
        &ids(&r.prompt),
        "--max-tokens",
        "4",
        "--ignore-eos",
    ]);
    assert_eq!(as_u32s(&out["tokens"]).len(), 4);
    let info = ok_json(&["inspect", m, "--json"]);
    assert_eq!(info["config"]["architecture"], "mixtral");
    assert_eq!(info["config"]["n_experts"], 8);
    let tensors = info["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3 * (7 + 3 * 8) + 3);
    let down = tensors
        .iter()
        .find(|t| t["name"] == "expert_down (layer 0, expert 0)")
        .unwrap();
    assert_eq!(down["dtype"], "int4");
    assert!(info["plan"]["arena_bytes"].as_u64().unwrap() > 0);
    let text = mote(&["inspect", m]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("memory plan"));
}

fn one_line_error(args: &[&str]) -> String {
    let out = mote(args);
    assert!(!out.status.success(), "mote {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("mote: ") && err.trim_end().lines().count() == 1,
        "not one line: {err:?}"
    );
    err
}

#[test]
fn errors_are_one_line_with_nonzero_status() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "int8");
    let m = model.to_str().unwrap();

    let err = one_line_error(&["logits", "/nonexistent/x.mote", "--tokens", "1"]);
    assert!(err.contains("/nonexistent/x.mote"), "{err}");
    let err = one_line_error(&["logits", m, "--tokens", "1,999999"]);
    assert!(
        err.contains("999999") && err.contains("out of range"),
        "{err}"
    );
    let err = one_line_error(&[
        "generate",
        m,
        "--tokens",
        &ids(&r.prompt),
        "--memory-budget",
        "1KiB",
    ]);
    assert!(err.contains("bytes missing"), "{err}");

    let bad = dir.path().join("bad.mote");
    std::fs::write(
        &bad,
        b"definitely not a model, but long enough to hold a preamble of sixty-four bytes",
    )
    .unwrap();
    let err = one_line_error(&["inspect", bad.to_str().unwrap()]);
    assert!(err.contains("not a .mote file"), "{err}");

    let err = one_line_error(&[
        "quantize",
        dir.path().to_str().unwrap(),
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("config.json"), "{err}");
}
