//! `tokenizer.ggml.*` → the `tokenizer.json` and `tokenizer_config.json`
//! terms `crate::tokenizer` builds mote's tokenizer section from, so one
//! builder checks every tokenizer whatever file it came in.
//!
//! - `gpt2` (byte-level BPE): tokens and merges as they are; llama.cpp's
//!   `pre` name chooses the split rule. Names whose rules mote does not
//!   implement are an error naming them, not a different tokenizer.
//! - `llama` (SentencePiece): llama.cpp merges by token score; the BPE
//!   merges are derived from the scores the way transformers converts a
//!   SentencePiece model (every split of a token into two tokens, ranked
//!   by the token's score), spaces as `▁` with a prefix, `<0xXX>` byte
//!   fallback.

use serde_json::{json, Map, Value as Json};

use super::{gguf_err, Gguf, Value};
use crate::error::QuantizeError;

/// Token types of `tokenizer.ggml.token_type`.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const BYTE: i64 = 6;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const O200K: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp `pre` names → (split pattern, single digits first, ignore merges
/// of whole-token pieces, add BOS by default). From llama-vocab.cpp's
/// pre-tokenizer types whose regexes are the ones mote implements.
const PRE: &[(&[&str], &str, bool, bool, bool)] = &[
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "smaug-bpe",
            "dbrx",
            "falcon3",
        ],
        LLAMA3,
        false,
        true,
        true,
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "megrez",
            "stablelm2",
            "hunyuan",
            "grok-2",
        ],
        QWEN2,
        false,
        false,
        false,
    ),
    (
        &[
            "gpt-2", "phi-2", "mpt", "olmo", "jais", "gigachat", "trillion",
        ],
        GPT2,
        false,
        false,
        false,
    ),
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        GPT2,
        true,
        false,
        false,
    ),
    (&["gpt-4o", "minimax-m2"], O200K, false, false, false),
];

/// The tokenizer section built from the file's `tokenizer.ggml.*` keys, or
/// `None` when it has none.
pub fn read(g: &Gguf, warnings: &mut Vec<String>) -> Result<Option<Vec<u8>>, QuantizeError> {
    let path = &g.paths[0];
    let Some(model) = g.get("tokenizer.ggml.model").and_then(Value::as_str) else {
        warnings.push(format!(
            "{}: no tokenizer.ggml.model; the .mote file will take token ids only",
            path.display()
        ));
        return Ok(None);
    };
    let (json, config) =
        describe(g, model).map_err(|m| gguf_err(path, 0, format!("tokenizer: {m}")))?;
    crate::tokenizer::build(&json, &config, warnings)
        .map(Some)
        .map_err(|message| QuantizeError::Tokenizer {
            path: path.clone(),
            message,
        })
}

fn strings<'a>(g: &'a Gguf, key: &str) -> Result<Vec<&'a str>, String> {
    g.get(key)
        .and_then(Value::as_array)
        .ok_or(format!("{key} is missing or not an array"))?
        .iter()
        .map(|v| v.as_str().ok_or(format!("{key} holds a non-string")))
        .collect()
}

/// (tokenizer.json, tokenizer_config.json) for the file's tokenizer.
fn describe(g: &Gguf, model: &str) -> Result<(Json, Json), String> {
    let tokens = strings(g, "tokenizer.ggml.tokens")?;
    let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(a) if a.len() == tokens.len() => a
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                Value::Uint(u) => Ok(*u as i64),
                _ => Err("tokenizer.ggml.token_type holds a non-integer".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(a) => {
            return Err(format!(
                "{} token types for {} tokens",
                a.len(),
                tokens.len()
            ))
        }
        None => vec![1; tokens.len()],
    };
    let id = |key: &str| {
        g.get(key)
            .and_then(Value::as_u64)
            .filter(|&i| (i as usize) < tokens.len())
    };
    let is_added = |t: i64| t == CONTROL || t == USER_DEFINED;
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if is_added(ty) {
            added.push(json!({"id": i, "content": tok, "special": ty == CONTROL}));
        } else if vocab.insert(tok.to_string(), json!(i)).is_some() {
            return Err(format!("token {i} {tok:?} appears twice"));
        }
    }
    let mut config = Map::new();
    let default_bos;
    let mut json = Map::new();
    match model {
        "gpt2" => {
            let pre = g.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
            let &(_, pattern, digits, ignore_merges, bos) = PRE
                .iter()
                .find(|p| p.0.contains(&pre))
                .ok_or_else(|| {
                    format!(
                        "tokenizer.ggml.pre {pre:?}: its split rules are not ones mote reproduces (supported: {})",
                        PRE.iter().flat_map(|p| p.0.iter()).copied().collect::<Vec<_>>().join(", ")
                    )
                })?;
            default_bos = bos;
            let mut pretok = vec![];
            if digits {
                pretok.push(json!({"type": "Digits", "individual_digits": true}));
            }
            pretok.push(json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false}));
            pretok.push(json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}));
            let merges = strings(g, "tokenizer.ggml.merges")?;
            json.insert(
                "model".into(),
                json!({"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": ignore_merges}),
            );
            json.insert("pre_tokenizer".into(), json!({"type": "Sequence", "pretokenizers": pretok}));
            json.insert("decoder".into(), json!({"type": "ByteLevel"}));
        }
        "llama" => {
            default_bos = true;
            let scores: Vec<f64> = match g.get("tokenizer.ggml.scores").and_then(Value::as_array) {
                Some(a) if a.len() == tokens.len() => a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
                _ => return Err("tokenizer.ggml.scores is missing or not one score a token".into()),
            };
            let byte_fallback = types.contains(&BYTE);
            let merges = merges_from_scores(&tokens, &types, &scores);
            let space_prefix = g
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let mut norm = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
            let mut dec = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if space_prefix {
                norm.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
                dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let unk = id("tokenizer.ggml.unknown_token_id").map(|i| tokens[i as usize]);
            json.insert(
                "model".into(),
                json!({"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": byte_fallback,
                       "unk_token": unk, "fuse_unk": true}),
            );
            json.insert("normalizer".into(), json!({"type": "Sequence", "normalizers": norm}));
            json.insert("decoder".into(), json!({"type": "Sequence", "decoders": dec}));
        }
        other => {
            return Err(format!(
                "tokenizer.ggml.model {other:?} is not supported (mote reads \"gpt2\" byte-level BPE and \"llama\" SentencePiece)"
            ))
        }
    }
    json.insert("added_tokens".into(), Json::Array(added));
    let flag = |key: &str, default: bool| g.get(key).and_then(Value::as_bool).unwrap_or(default);
    config.insert(
        "add_bos_token".into(),
        json!(flag("tokenizer.ggml.add_bos_token", default_bos)),
    );
    config.insert(
        "add_eos_token".into(),
        json!(flag("tokenizer.ggml.add_eos_token", false)),
    );
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
    ] {
        if let Some(i) = id(key) {
            config.insert(name.into(), json!(tokens[i as usize]));
        }
    }
    if let Some(t) = g.get("tokenizer.chat_template").and_then(Value::as_str) {
        config.insert("chat_template".into(), json!(t));
    }
    Ok((Json::Object(json), Json::Object(config)))
}

/// BPE merges from SentencePiece scores: every split of an ordinary token
/// into two ordinary tokens, ranked by the token's score (highest first),
/// then by token id, then by the halves' ids.
fn merges_from_scores(tokens: &[&str], types: &[i64], scores: &[f64]) -> Vec<Json> {
    let ordinary = |i: usize| types[i] != CONTROL && types[i] != USER_DEFINED && types[i] != BYTE;
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| ordinary(i))
        .map(|(i, &t)| (t, i))
        .collect();
    let mut found: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, &t) in tokens.iter().enumerate().filter(|&(i, _)| ordinary(i)) {
        for (at, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(at);
            if let (Some(&a), Some(&b)) = (index.get(l), index.get(r)) {
                found.push((scores[i], i, a, b));
            }
        }
    }
    found.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then((x.1, x.2, x.3).cmp(&(y.1, y.2, y.3)))
    });
    found
        .into_iter()
        .map(|(_, _, a, b)| json!([tokens[a], tokens[b]]))
        .collect()
}
