//! The text commands' contract: `tokenize` / `detokenize` JSON, `run`
//! streaming text with statistics on stderr (silenced by `--quiet`),
//! `chat` turns from stdin, `eval` perplexity and KL, and the built-in
//! model used when no file is named.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn mote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mote"))
        .args(args)
        .output()
        .expect("run mote")
}

fn ok(args: &[&str]) -> Output {
    let out = mote(args);
    assert!(
        out.status.success(),
        "mote {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ok(args).stdout).expect("JSON on stdout")
}

#[test]
fn tokenize_and_detokenize_round_trip_with_the_builtin_model() {
    let text = "And God said, Let there be light: and there was light. 123 naïve 你好 🙂";
    let ids = json(&["tokenize", "--text", text]);
    let ids: Vec<u64> = ids["ids"]
        .as_array()
        .expect("{\"ids\": [...]}")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(ids.len() > 10 && ids.len() < text.len(), "{ids:?}");
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let back = json(&["detokenize", "--ids", &list]);
    assert_eq!(back["text"], text);

    // --special adds the BOS the model was trained with; plain tokenize does not.
    let with = json(&["tokenize", "--text", text, "--special"]);
    assert_eq!(with["ids"].as_array().unwrap().len(), ids.len() + 1);
}

#[test]
fn run_streams_text_and_reports_speed_on_stderr() {
    let out = ok(&["run", "--prompt", "And God said", "--max-tokens", "24"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("And God said"), "{text:?}");
    assert!(
        text.trim_end().len() > "And God said".len() + 10,
        "{text:?}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("tok/s") && err.contains("generated"),
        "{err:?}"
    );

    // Same seed, same text; --quiet leaves stderr empty.
    let args = [
        "run",
        "--prompt",
        "In the beginning",
        "--max-tokens",
        "16",
        "--temperature",
        "0.9",
        "--seed",
        "11",
        "--quiet",
    ];
    let a = ok(&args);
    let b = ok(&args);
    assert_eq!(a.stdout, b.stdout);
    assert!(
        a.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );

    // Paged under a budget: same greedy text, and the hit rate is reported.
    let full = ok(&[
        "run",
        "--prompt",
        "And God said",
        "--max-tokens",
        "12",
        "--quiet",
    ]);
    let paged = ok(&[
        "run",
        "--prompt",
        "And God said",
        "--max-tokens",
        "12",
        "--memory-budget",
        "4MiB",
    ]);
    assert_eq!(full.stdout, paged.stdout);
    let err = String::from_utf8(paged.stderr).unwrap();
    assert!(err.contains("expert cache hit rate"), "{err:?}");
}

#[test]
fn chat_answers_each_line_until_end_of_input() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mote"))
        .args(["chat", "--max-tokens", "8", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Who made the heaven?\n\nAnd the earth?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One reply line per non-empty input line.
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text:?}");
}

#[test]
fn eval_reports_perplexity_and_kl_between_two_files_and_kv_cache_types() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "And it came to pass, when men began to multiply on the face of the earth, and daughters were born unto them, \
         that the sons of God saw the daughters of men that they were fair; and they took them wives of all which they chose.",
    )
    .unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-kjv.mote");
    let t = text.to_str().unwrap();
    let r = json(&["eval", model, "--text", t, "--json", "--window", "32"]);
    let ppl = r["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{r}");
    assert!(r["tokens_scored"].as_u64().unwrap() > 20, "{r}");
    // A model against itself: zero KL, full agreement.
    let r = json(&["eval", model, "--text", t, "--json", "--kl-vs", model]);
    assert!(r["mean_kl"].as_f64().unwrap().abs() < 1e-9, "{r}");
    assert_eq!(r["top1_agreement"].as_f64().unwrap(), 1.0);
    assert!(r["paging"].is_null(), "no budget, no paging: {r}");
    // Under a budget of a few expert slots: the same perplexity, and the
    // cache's figures on the text's own routing.
    let full_ppl = r["perplexity"].as_f64().unwrap();
    let p = json(&[
        "inspect",
        model,
        "--json",
        "--memory-budget",
        "64GiB",
        "--max-context",
        "256",
    ]);
    let plan = &p["plan"];
    let all_slots = plan["expert_slots"].as_u64().unwrap();
    let slot = plan["expert_slot_bytes"].as_u64().unwrap();
    let fixed =
        plan["arena_bytes"].as_u64().unwrap() - plan["expert_cache_bytes"].as_u64().unwrap();
    let budget = (fixed + 3 * slot + (64 << 10)).to_string();
    let r = json(&[
        "eval",
        model,
        "--text",
        t,
        "--json",
        "--memory-budget",
        &budget,
    ]);
    let paging = &r["paging"];
    let slots = paging["expert_slots"].as_u64().unwrap();
    assert!(
        slots >= 2 && slots < all_slots,
        "{slots} of {all_slots} slots: {r}"
    );
    assert!(paging["misses"].as_u64().unwrap() > 0, "{r}");
    let rate = paging["hit_rate"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&rate), "{r}");
    assert!(
        paging["storage_bytes_read_per_token"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    let paged_ppl = r["perplexity"].as_f64().unwrap();
    assert!(
        (paged_ppl - full_ppl).abs() <= 1e-9 * full_ppl,
        "paging changed the perplexity: {paged_ppl} vs {full_ppl}"
    );
    // The same file with an f16 and an int8 KV cache against f32: each
    // rounds something, int8 more than f16; the cache takes 1/2 and ~1/4
    // of the bytes.
    let kl = |kv: &str| {
        let r = json(&[
            "eval",
            model,
            "--text",
            t,
            "--json",
            "--kv-cache",
            kv,
            "--kl-kv-cache",
            "f32",
        ]);
        assert_eq!(
            (r["kv_cache"].as_str(), r["kl_kv_cache"].as_str()),
            (Some(kv), Some("f32"))
        );
        r["mean_kl"].as_f64().unwrap()
    };
    let (f32_kl, f16_kl, q8_kl) = (kl("f32"), kl("f16"), kl("q8"));
    assert!(
        f32_kl.abs() < 1e-9 && f16_kl > 0.0 && q8_kl > f16_kl && q8_kl < 0.01,
        "{f16_kl} {q8_kl}"
    );
    let bytes = |kv: &str| {
        let r = json(&["inspect", model, "--json", "--kv-cache", kv]);
        assert_eq!(r["plan"]["kv_cache_type"].as_str(), Some(kv));
        r["plan"]["kv_cache_bytes"].as_f64().unwrap()
    };
    let (b32, b16, b8) = (bytes("f32"), bytes("f16"), bytes("q8"));
    assert!(b16 / b32 > 0.49 && b16 / b32 <= 0.5, "{b16} of {b32}");
    assert!(b8 / b32 > 0.25 && b8 / b32 < 0.28, "{b8} of {b32}");
}

#[test]
fn a_file_without_tokenizer_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ids-only.mote");
    let input = mote_tests::fixture("mixtral-tiny").join("f32");
    ok(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
        "-q",
    ]);
    let out = mote(&["run", file.to_str().unwrap(), "--prompt", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no tokenizer") && err.lines().count() == 1,
        "{err:?}"
    );
}
