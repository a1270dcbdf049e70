//! Reads a checkpoint's `tokenizer.json` (and `tokenizer_config.json`) and
//! builds the `.mote` tokenizer section (`mote::format::tokenizer`): the
//! vocabulary as raw bytes, merges as id pairs with their rank, added
//! tokens, the byte tokens, and the few choices (split rule, `▁` prepend,
//! BOS/EOS template, chat format) the runtime needs. Anything the runtime
//! would not reproduce exactly is an error naming the field, not a
//! silently different tokenizer.

use std::collections::HashMap;
use std::path::Path;

use mote::format::tokenizer::{
    ChatTemplate, Prepend, SplitRule, TokenizerHeader, TokenizerKind, NO_TOKEN,
    OPT_FIRST_TOKEN_NO_MARKS, OPT_FUSE_UNK, OPT_IGNORE_MERGES, OPT_NFC, OPT_SINGLE_DIGITS,
    OPT_SPLIT_DIGITS, OPT_SPLIT_ON_SPACE, OPT_STRIP_LEADING_SPACE, TOKEN_ADDED, TOKEN_BYTE,
    TOKEN_LSTRIP, TOKEN_RSTRIP, TOKEN_SPECIAL,
};
use serde_json::Value;

use crate::error::{io, QuantizeError};

/// The split patterns mote implements, as `tokenizers` spells them.
const PATTERNS: [(&str, SplitRule); 4] = [
    (
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        SplitRule::Gpt2,
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        SplitRule::Llama3,
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        SplitRule::Qwen2,
    ),
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        SplitRule::O200k,
    ),
];

/// The tokenizer section for the checkpoint in `folder`, or `None` when the
/// folder has no `tokenizer.json`.
pub fn read_tokenizer(
    folder: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, QuantizeError> {
    let path = folder.join("tokenizer.json");
    if !path.exists() {
        warnings.push(format!(
            "{}: not found; the .mote file will take token ids only (no `mote run`, `tokenize`)",
            path.display()
        ));
        return Ok(None);
    }
    let json = read_json(&path)?;
    let config_path = folder.join("tokenizer_config.json");
    let config = if config_path.exists() {
        read_json(&config_path)?
    } else {
        Value::Null
    };
    let err = |message: String| QuantizeError::Tokenizer {
        path: path.clone(),
        message,
    };
    build(&json, &config, warnings).map(Some).map_err(err)
}

fn read_json(path: &Path) -> Result<Value, QuantizeError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| QuantizeError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The components of a `Sequence` (or the one component itself).
fn parts(v: &Value) -> Vec<&Value> {
    match v.get("type").and_then(Value::as_str) {
        Some("Sequence") => ["pretokenizers", "normalizers", "decoders", "processors"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_array))
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![v],
        None => vec![],
    }
}

fn kind_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// GPT-2's map from bytes to the printable characters byte-level vocabularies use.
fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        };
    }
    map
}

/// The tokenizer section for a tokenizer.json / tokenizer_config.json pair.
pub(crate) fn build(
    json: &Value,
    config: &Value,
    warnings: &mut Vec<String>,
) -> Result<Vec<u8>, String> {
    let model = &json["model"];
    if kind_of(model) != "BPE" {
        return Err(format!(
            "model type {:?} is not supported (mote reads BPE tokenizers)",
            kind_of(model)
        ));
    }
    for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model.get(field).is_some_and(|v| !v.is_null() && v != "") {
            return Err(format!("model.{field} is not supported"));
        }
    }
    if model.get("dropout").is_some_and(|v| !v.is_null()) {
        warnings
            .push("tokenizer.json: BPE dropout is ignored (mote encodes deterministically)".into());
    }
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);

    // Which kind, and its choices.
    let pre = parts(&json["pre_tokenizer"]);
    let norm = parts(&json["normalizer"]);
    let dec = parts(&json["decoder"]);
    let mut options = 0u8;
    let mut split = SplitRule::None;
    let mut prepend = Prepend::Never;
    let byte_level = pre.iter().any(|p| kind_of(p) == "ByteLevel");
    let kind = if byte_level {
        for p in &pre {
            match kind_of(p) {
                "ByteLevel" => {
                    if p["add_prefix_space"].as_bool() == Some(true) {
                        return Err(
                            "pre_tokenizer ByteLevel with add_prefix_space=true is not supported"
                                .into(),
                        );
                    }
                    if p["use_regex"].as_bool().unwrap_or(true) {
                        set_split(&mut split, SplitRule::Gpt2)?;
                    }
                }
                "Split" => {
                    let pattern = p["pattern"]["Regex"]
                        .as_str()
                        .or_else(|| p["pattern"]["String"].as_str())
                        .unwrap_or("");
                    let behavior = p["behavior"].as_str().unwrap_or("");
                    let rule = PATTERNS
                        .iter()
                        .find(|(pat, _)| *pat == pattern)
                        .map(|&(_, r)| r)
                        .filter(|_| behavior == "Isolated" && p["invert"].as_bool() != Some(true))
                        .ok_or_else(|| {
                            format!(
                                "pre_tokenizer Split {pattern:?} ({behavior}) is not one mote implements (GPT-2, Llama 3, Qwen2 and o200k patterns, isolated)"
                            )
                        })?;
                    set_split(&mut split, rule)?;
                }
                "Digits" => {
                    options |= if p["individual_digits"].as_bool() == Some(true) {
                        OPT_SINGLE_DIGITS
                    } else {
                        OPT_SPLIT_DIGITS
                    }
                }
                other => {
                    return Err(format!(
                        "pre_tokenizer {other} is not supported with ByteLevel"
                    ))
                }
            }
        }
        TokenizerKind::ByteLevel
    } else {
        // SentencePiece style: spaces are ▁, by a normalizer (Llama 2) or a
        // Metaspace pre-tokenizer (newer files).
        let mut spaces_marked = false;
        for n in &norm {
            match kind_of(n) {
                "Prepend" if n["prepend"] == "\u{2581}" => prepend = Prepend::Always,
                "Replace" if n["pattern"]["String"] == " " && n["content"] == "\u{2581}" => {
                    spaces_marked = true
                }
                "NFC" => {}
                other => return Err(format!("normalizer {other} is not supported")),
            }
        }
        for p in &pre {
            match kind_of(p) {
                "Metaspace" => {
                    spaces_marked = true;
                    if p["replacement"] != "\u{2581}" {
                        return Err("pre_tokenizer Metaspace with a replacement other than ▁ is not supported".into());
                    }
                    prepend = match p["prepend_scheme"].as_str() {
                        Some("always") => Prepend::UnlessSpace,
                        Some("first") => Prepend::First,
                        Some("never") => Prepend::Never,
                        _ if p["add_prefix_space"].as_bool() == Some(false) => Prepend::Never,
                        _ => Prepend::UnlessSpace,
                    };
                    if p["split"].as_bool().unwrap_or(true) {
                        options |= OPT_SPLIT_ON_SPACE;
                    }
                }
                other => return Err(format!("pre_tokenizer {other} is not supported")),
            }
        }
        if !spaces_marked && !byte_fallback {
            return Err(
                "neither a ByteLevel nor a SentencePiece-style (▁ for spaces) BPE tokenizer".into(),
            );
        }
        for d in &dec {
            match kind_of(d) {
                "Strip" if d["content"] == " " && d["start"].as_u64() == Some(1) => {
                    options |= OPT_STRIP_LEADING_SPACE
                }
                "Metaspace"
                    if d["prepend_scheme"].as_str() != Some("never")
                        && d["add_prefix_space"].as_bool() != Some(false) =>
                {
                    options |= OPT_FIRST_TOKEN_NO_MARKS
                }
                "Replace" | "ByteFallback" | "Fuse" | "Metaspace" => {}
                other => return Err(format!("decoder {other} is not supported")),
            }
        }
        TokenizerKind::SentencePiece
    };
    if norm.iter().any(|n| kind_of(n) == "NFC") {
        options |= OPT_NFC;
    }
    if byte_level {
        if let Some(n) = norm.iter().find(|n| kind_of(n) != "NFC") {
            return Err(format!(
                "normalizer {} is not supported with ByteLevel (only NFC)",
                kind_of(n)
            ));
        }
    }
    if model["ignore_merges"].as_bool() == Some(true) {
        options |= OPT_IGNORE_MERGES;
    }
    if model["fuse_unk"].as_bool() == Some(true) {
        options |= OPT_FUSE_UNK;
    }

    // Vocabulary.
    let vocab = model["vocab"]
        .as_object()
        .ok_or("model.vocab is not an object")?;
    let added: Vec<&Value> = json["added_tokens"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let id_of = |v: &Value| -> Result<u32, String> {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .filter(|&x| x < mote::format::tokenizer::MAX_TOKENS)
            .ok_or_else(|| format!("token id {v} is out of range"))
    };
    let mut n_tokens = 0u32;
    for v in vocab.values() {
        n_tokens = n_tokens.max(id_of(v)? + 1);
    }
    for a in &added {
        n_tokens = n_tokens.max(id_of(&a["id"])? + 1);
    }
    let mut bytes: Vec<Vec<u8>> = vec![Vec::new(); n_tokens as usize];
    let mut flags = vec![0u8; n_tokens as usize];
    let mut byte_ids = [NO_TOKEN; 256];
    let char_to_byte: HashMap<char, u8> = byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    let byte_token = |s: &str| -> Option<u8> {
        let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
        (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
    };
    for (s, v) in vocab {
        let id = id_of(v)? as usize;
        bytes[id] = match kind {
            TokenizerKind::ByteLevel => s
                .chars()
                .map(|c| {
                    char_to_byte.get(&c).copied().ok_or_else(|| {
                        format!("vocabulary token {s:?} has {c:?}, which is not in the byte-level alphabet")
                    })
                })
                .collect::<Result<_, _>>()?,
            TokenizerKind::SentencePiece => match byte_token(s).filter(|_| byte_fallback) {
                Some(b) => {
                    flags[id] |= TOKEN_BYTE;
                    byte_ids[b as usize] = id as u32;
                    vec![b]
                }
                None => s.as_bytes().to_vec(),
            },
        };
    }
    if kind == TokenizerKind::ByteLevel {
        for (b, c) in byte_to_char().iter().enumerate() {
            if let Some(v) = vocab.get(&c.to_string()) {
                byte_ids[b] = id_of(v)?;
            }
        }
    }
    let mut added_ids = Vec::new();
    for a in &added {
        let id = id_of(&a["id"])?;
        let content = a["content"].as_str().ok_or("added token without content")?;
        if content.is_empty() {
            return Err(format!("added token {id} is empty"));
        }
        bytes[id as usize] = content.as_bytes().to_vec();
        let f = &mut flags[id as usize];
        *f |= TOKEN_ADDED;
        for (key, bit) in [
            ("special", TOKEN_SPECIAL),
            ("lstrip", TOKEN_LSTRIP),
            ("rstrip", TOKEN_RSTRIP),
        ] {
            if a[key].as_bool() == Some(true) {
                *f |= bit;
            }
        }
        added_ids.push(id);
    }
    // Longest content first: the runtime takes the first match at a position.
    added_ids.sort_by_key(|&id| (std::cmp::Reverse(bytes[id as usize].len()), id));
    added_ids.dedup();

    // Ordinary tokens, sorted for lookup.
    let mut sorted: Vec<u32> = vocab
        .values()
        .map(&id_of)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|&id| flags[id as usize] & (TOKEN_BYTE | TOKEN_ADDED) == 0)
        .collect();
    sorted.sort_by(|&a, &b| bytes[a as usize].cmp(&bytes[b as usize]));
    if let Some(w) = sorted
        .windows(2)
        .find(|w| bytes[w[0] as usize] == bytes[w[1] as usize])
    {
        return Err(format!("tokens {} and {} have the same bytes", w[0], w[1]));
    }

    // Merges: ranks in file order; the first of a repeated pair wins.
    let merge_list = model["merges"]
        .as_array()
        .ok_or("model.merges is not a list")?;
    let mut merges: Vec<[u32; 4]> = Vec::with_capacity(merge_list.len());
    let lookup = |s: &str| vocab.get(s).map(id_of).transpose();
    for (rank, m) in merge_list.iter().enumerate() {
        let (a, b) = match m {
            Value::String(s) => s
                .split_once(' ')
                .ok_or_else(|| format!("merge {rank} {s:?} is not two tokens"))?,
            Value::Array(p) if p.len() == 2 => {
                (p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))
            }
            _ => return Err(format!("merge {rank} is neither \"a b\" nor [a, b]")),
        };
        let ids = (lookup(a)?, lookup(b)?, lookup(&format!("{a}{b}"))?);
        let (Some(l), Some(r), Some(merged)) = ids else {
            return Err(format!(
                "merge {rank} ({a:?}, {b:?}) names a token not in the vocabulary"
            ));
        };
        merges.push([l, r, merged, rank as u32]);
    }
    merges.sort_by_key(|m| (m[0], m[1], m[3]));
    merges.dedup_by_key(|m| (m[0], m[1]));

    // Special tokens the template adds, and the unknown token.
    let token = |s: &str| -> Option<u32> {
        added
            .iter()
            .find(|a| a["content"] == s)
            .and_then(|a| id_of(&a["id"]).ok())
            .or_else(|| vocab.get(s).and_then(|v| id_of(v).ok()))
    };
    let (prefix, suffix) = template(json, config, &token)?;
    let unk = match model["unk_token"].as_str() {
        Some(s) => token(s).ok_or_else(|| format!("unk_token {s:?} is not in the vocabulary"))?,
        None => NO_TOKEN,
    };
    let chat = chat_template(config);

    // The section.
    let pool_len: usize = bytes.iter().map(Vec::len).sum();
    let header = TokenizerHeader {
        kind,
        split,
        prepend,
        options,
        n_tokens,
        n_sorted: sorted.len() as u32,
        n_merges: merges.len() as u32,
        n_added: added_ids.len() as u32,
        pool_len: u32::try_from(pool_len).map_err(|_| "vocabulary bytes exceed 4 GiB")?,
        unk,
        prefix,
        suffix,
        chat,
        max_token_bytes: bytes.iter().map(Vec::len).max().unwrap_or(0) as u32,
    };
    let mut out = Vec::with_capacity(header.tables().len);
    out.extend_from_slice(&header.encode());
    let mut end = 0u32;
    for b in &bytes {
        end += b.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    let words = sorted
        .iter()
        .chain(merges.iter().flatten())
        .chain(added_ids.iter())
        .chain(byte_ids.iter());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&flags);
    for b in &bytes {
        out.extend_from_slice(b);
    }
    debug_assert_eq!(out.len(), header.tables().len);
    // The runtime must accept what we wrote.
    mote::Tokenizer::parse(&out).map_err(|e| format!("internal: built section is invalid: {e}"))?;
    Ok(out)
}

fn set_split(split: &mut SplitRule, rule: SplitRule) -> Result<(), String> {
    // A Split followed by ByteLevel(use_regex=false) is the usual spelling;
    // two regex splits in a row are not.
    if *split != SplitRule::None && *split != rule {
        return Err("more than one pre-tokenizer split pattern".into());
    }
    *split = rule;
    Ok(())
}

/// The ids the post-processor's single-sequence template puts before and
/// after the text (or tokenizer_config.json's add_bos_token / add_eos_token).
fn template(
    json: &Value,
    config: &Value,
    token: &dyn Fn(&str) -> Option<u32>,
) -> Result<([u32; 2], [u32; 2]), String> {
    let mut prefix = Vec::new();
    let mut suffix = Vec::new();
    let processors = parts(&json["post_processor"]);
    if let Some(t) = processors
        .iter()
        .find(|p| kind_of(p) == "TemplateProcessing")
    {
        let single = t["single"]
            .as_array()
            .ok_or("TemplateProcessing without single")?;
        let mut seen_text = false;
        for item in single {
            if item.get("Sequence").is_some() {
                seen_text = true;
            } else if let Some(name) = item["SpecialToken"]["id"].as_str() {
                let ids = t["special_tokens"][name]["ids"]
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_u64)
                    .map(|x| x as u32)
                    .or_else(|| token(name))
                    .ok_or_else(|| format!("template token {name:?} has no id"))?;
                if seen_text { &mut suffix } else { &mut prefix }.push(ids);
            }
        }
    } else {
        let named = |key: &str| -> Option<u32> {
            let v = &config[key];
            token(v.as_str().or_else(|| v["content"].as_str())?)
        };
        if config["add_bos_token"].as_bool() == Some(true) {
            prefix.extend(named("bos_token"));
        }
        if config["add_eos_token"].as_bool() == Some(true) {
            suffix.extend(named("eos_token"));
        }
    }
    let two = |v: Vec<u32>| -> Result<[u32; 2], String> {
        if v.len() > 2 {
            return Err("the post-processor adds more than two tokens on one side".into());
        }
        Ok([
            *v.first().unwrap_or(&NO_TOKEN),
            *v.get(1).unwrap_or(&NO_TOKEN),
        ])
    };
    Ok((two(prefix)?, two(suffix)?))
}

/// The chat format named by tokenizer_config.json's `chat_template`,
/// recognised by its markers.
fn chat_template(config: &Value) -> ChatTemplate {
    let text = match &config["chat_template"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|t| t["template"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let markers = [
        ("<|im_start|>", ChatTemplate::ChatMl),
        ("<|start_header_id|>", ChatTemplate::Llama3),
        ("<|start_of_role|>", ChatTemplate::Granite),
        ("[INST]", ChatTemplate::Inst),
        ("<|user|>", ChatTemplate::Tulu),
    ];
    markers
        .iter()
        .find(|(m, _)| text.contains(m))
        .map_or(ChatTemplate::Plain, |&(_, t)| t)
}
