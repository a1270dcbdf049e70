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
    let exact = ["--kv-cache", "f32"];
    let all = ok_json(&[
        "logits",
        m,
        "--tokens",
        &ids(&r.tokens),
        "--all",
        exact[0],
        exact[1],
    ]);
    let rows: Vec<Vec<f32>> = serde_json::from_value(all["logits"].clone()).unwrap();
    assert_eq!(rows.len(), r.tokens.len());
    assert!(max_rel_err(&rows, &r.logits_f32) < 1e-4);
    let last = ok_json(&["logits", m, "--tokens", &ids(&r.tokens), exact[0], exact[1]]);
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

/// A random Mixtral checkpoint far larger than the budgets below: 4 layers
/// of 8 experts, hidden 256, expert width 512 (int8 experts: 13.4 MiB).
fn synthetic_checkpoint(dir: &Path) {
    let (vocab, hidden, ffn, layers, experts) = (512usize, 256usize, 512usize, 4usize, 8usize);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let mut t: Vec<mote_tests::NamedTensor> = vec![
        (
            "model.embed_tokens.weight".into(),
            vec![vocab, hidden],
            random(vocab * hidden),
        ),
        (
            "lm_head.weight".into(),
            vec![vocab, hidden],
            random(vocab * hidden),
        ),
        ("model.norm.weight".into(), vec![hidden], vec![1.0; hidden]),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        t.push((
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        ));
        t.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        ));
        for (n, rows) in [
            ("q", hidden),
            ("k", hidden / 2),
            ("v", hidden / 2),
            ("o", hidden),
        ] {
            t.push((
                format!("{p}.self_attn.{n}_proj.weight"),
                vec![rows, hidden],
                random(rows * hidden),
            ));
        }
        t.push((
            format!("{p}.block_sparse_moe.gate.weight"),
            vec![experts, hidden],
            random(experts * hidden),
        ));
        for e in 0..experts {
            let q = format!("{p}.block_sparse_moe.experts.{e}");
            t.push((
                format!("{q}.w1.weight"),
                vec![ffn, hidden],
                random(ffn * hidden),
            ));
            t.push((
                format!("{q}.w3.weight"),
                vec![ffn, hidden],
                random(ffn * hidden),
            ));
            t.push((
                format!("{q}.w2.weight"),
                vec![hidden, ffn],
                random(hidden * ffn),
            ));
        }
    }
    mote_tests::write_safetensors(dir, &t);
    let config = serde_json::json!({
        "architectures": ["MixtralForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_local_experts": experts, "num_experts_per_tok": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "eos_token_id": 2, "bos_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn generate_under_a_memory_budget_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    synthetic_checkpoint(&ck);
    let model = dir.path().join("big.mote");
    let q = mote(&[
        "quantize",
        ck.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--dtype",
        "int8",
        "-q",
    ]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let m = model.to_str().unwrap();
    let info = ok_json(&["inspect", m, "--json"]);
    let expert_bytes: u64 = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_str().unwrap().starts_with("expert_"))
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();

    let budget: u64 = 3 << 20;
    assert!(
        expert_bytes >= 4 * budget,
        "experts {expert_bytes} bytes must be at least 4x the budget"
    );
    let full = ok_json(&[
        "generate",
        m,
        "--tokens",
        "1,5,9",
        "--max-tokens",
        "12",
        "--ignore-eos",
    ]);
    let out = mote(&[
        "generate",
        m,
        "--tokens",
        "1,5,9",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--memory-budget",
        "3MiB",
        "--stats",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        paged["tokens"], full["tokens"],
        "paging must not change the output"
    );
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().unwrap()).unwrap();
    let peak_mib = stats["peak_rss_mib"].as_f64().expect("peak RSS on Linux");
    let limit_mib = (budget >> 20) as f64 + 8.0;
    println!(
        "budget 3 MiB: peak RSS {peak_mib:.1} MiB, {} slots, {stats}",
        stats["expert_slots"]
    );
    assert!(stats["misses"].as_u64().unwrap() > 0);
    assert!(
        peak_mib <= limit_mib,
        "peak RSS {peak_mib:.1} MiB exceeds budget + 8 MiB = {limit_mib} MiB"
    );

    // `mote bench` under the same budget reports what the storage did.
    let b = ok_json(&[
        "bench",
        m,
        "--memory-budget",
        "3MiB",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "6",
        "--threads",
        "1",
        "--json",
    ]);
    let slots = b["expert_slots"].as_u64().unwrap();
    assert!(slots > 0, "{b}");
    let cache = &b["cache"];
    let (hits, misses) = (
        cache["hits"].as_u64().unwrap(),
        cache["misses"].as_u64().unwrap(),
    );
    assert!(misses > 0, "{b}");
    let prefill_read = b["prefill_storage_bytes_read"].as_u64().unwrap();
    let decode_read = b["storage_bytes_read_per_token"].as_f64().unwrap() * 6.0;
    assert!(prefill_read > 0, "{b}");
    let total = cache["bytes_read"].as_u64().unwrap() as f64;
    assert!(
        (prefill_read as f64 + decode_read - total).abs() < 1.0,
        "prefill and decode reads add up to the total: {b}"
    );
    let rate = b["decode_hit_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate) && hits + misses > 0, "{b}");
    assert_eq!(
        b["prefetches"].as_u64().unwrap(),
        b["prefetches_used"].as_u64().unwrap() + b["prefetches_wasted"].as_u64().unwrap(),
        "{b}"
    );
    assert!(b["decode_blocked_ms_per_token"].as_f64().unwrap() >= 0.0);
}

#[test]
fn plan_says_whether_a_model_fits_a_board() {
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "int4");
    let m = model.to_str().unwrap();
    let mcu = ok_json(&[
        "plan",
        m,
        "--board",
        "stm32h7",
        "--max-context",
        "64",
        "--json",
    ]);
    assert_eq!(mcu["fits"], true);
    assert_eq!(mcu["weights_in_place"], true);
    assert!(mcu["arena_bytes"].as_u64().unwrap() < 1 << 20);
    assert!(mcu["decode_ceiling_tok_s"].as_f64().unwrap() > 0.0);
    let tiny = ok_json(&[
        "plan",
        m,
        "--board",
        "esp32c3",
        "--max-context",
        "100000",
        "--json",
    ]);
    assert_eq!(tiny["fits"], false);
    assert!(tiny["why"].as_str().unwrap().contains("bytes missing"));
    let pi = ok_json(&["plan", m, "--board", "rpi5", "--json"]);
    assert_eq!(pi["expert_slots"], 24, "every expert fits in 3 GiB");
    let err = one_line_error(&["plan", m, "--board", "pdp11"]);
    assert!(err.contains("rpi5"), "{err}");
    // --target picks the board's weight type and reports the fit.
    let out = dir.path().join("board.mote");
    let input = fixture("mixtral-tiny").join("f32");
    let q = mote(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--target",
        "rpi4",
        "-q",
    ]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(String::from_utf8_lossy(&q.stdout).contains("Raspberry Pi 4"));
    let info = ok_json(&["inspect", out.to_str().unwrap(), "--json"]);
    let q_proj = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "attn_q")
        .unwrap()
        .clone();
    assert_eq!(q_proj["dtype"], "int4");
    assert_eq!(q_proj["layout"], "planar", "the Pi 4 has no dotprod");
}

#[test]
fn the_rpi5_target_and_layout_flag_write_rows4_and_inspect_shows_it() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("mixtral-tiny").join("f32");
    for (name, flags) in [
        ("rpi5", ["--target", "rpi5"]),
        ("flag", ["--layout", "rows4"]),
    ] {
        let out = dir.path().join(format!("{name}.mote"));
        let mut args = vec![
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend(flags);
        let q = mote(&args);
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        let m = out.to_str().unwrap();
        let info = ok_json(&["inspect", m, "--json"]);
        let layout = |kind: &str| {
            info["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["kind"] == kind)
                .unwrap()["layout"]
                .clone()
        };
        assert_eq!(layout("expert_down"), "rows4", "{name}");
        assert_eq!(layout("lm_head"), "rows4", "{name}");
        assert_eq!(layout("token_embedding"), "planar", "{name}: read by rows");
        assert_eq!(layout("router"), "planar", "{name}: f32");
        let text = mote(&["inspect", m]);
        assert!(String::from_utf8_lossy(&text.stdout).contains(" rows4 "));
        let gen = ok_json(&[
            "generate",
            m,
            "--tokens",
            &ids(&r.prompt),
            "--max-tokens",
            "3",
            "--ignore-eos",
        ]);
        assert_eq!(as_u32s(&gen["tokens"]).len(), 3);
    }
    let out = dir.path().join("never.mote");
    let bad = mote(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--layout",
        "zigzag",
    ]);
    assert!(!bad.status.success() && !out.exists());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("planar or rows4"), "{err}");
    let err = one_line_error(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        "f16",
        "--layout",
        "rows4",
    ]);
    assert!(
        err.contains("layout rows4 needs int4 or int8 weights, not f16"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn sampling_is_seeded_and_greedy_by_default() {
    let r = reference("mixtral-tiny");
    let dir = tempfile::tempdir().unwrap();
    let model = quantized(dir.path(), "f32");
    let m = model.to_str().unwrap();
    let prompt = ids(&r.prompt);
    let args = [
        "generate",
        m,
        "--tokens",
        &prompt,
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--temperature",
        "1.2",
    ];
    let a = ok_json(&[&args[..], &["--seed", "1"]].concat());
    let b = ok_json(&[&args[..], &["--seed", "1"]].concat());
    let c = ok_json(&[&args[..], &["--seed", "2"]].concat());
    assert_eq!(a, b, "the same seed must give the same tokens");
    assert_ne!(a, c, "another seed should give other tokens");
    assert_ne!(
        as_u32s(&a["tokens"]),
        r.greedy[..12],
        "temperature 1.2 on flat logits is not greedy"
    );
    let k1 = ok_json(&[&args[..], &["--top-k", "1"]].concat());
    assert_eq!(as_u32s(&k1["tokens"]), r.greedy[..12], "top-k 1 is greedy");
}

#[test]
fn a_gguf_is_converted_once_into_the_cache_then_reused() {
    let cache = tempfile::tempdir().unwrap();
    let gguf = fixture("gguf").join("llama-tiny-q8_0.gguf");
    let gguf = gguf.to_str().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_mote"))
            .env("MOTE_CACHE_DIR", cache.path())
            .args(["tokenize", "--text", "In the beginning", gguf])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("converted once into"));
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one conversion in the cache");
    let second = run();
    assert!(String::from_utf8_lossy(&second.stderr).contains("using its conversion"));
    assert_eq!(first.stdout, second.stdout);
    // The same file `mote quantize` makes of it.
    let out = cache.path().join("explicit.mote");
    let q = mote(&["quantize", gguf, "-o", out.to_str().unwrap(), "-q"]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let direct = mote(&[
        "tokenize",
        "--text",
        "In the beginning",
        out.to_str().unwrap(),
    ]);
    assert_eq!(first.stdout, direct.stdout);
}
