//! Tokenizer conformance: for every committed tokenizer under
//! `tests/fixtures/tokenizers/` (written with the `tokenizers` package by
//! `tools/reference/make_tokenizer_fixtures.py`), the quantizer's section
//! must encode every case to exactly `tokenizers`' ids (with and without
//! special tokens), decode them to exactly its text, round-trip, and decode
//! the same when streamed one token at a time.

use std::path::{Path, PathBuf};

use mote::{TextDecoder, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    kind: String,
    cases: Vec<Case>,
    decode_cases: Vec<DecodeCase>,
}

/// Id lists that split characters across tokens, decoded by `tokenizers`.
#[derive(Deserialize)]
struct DecodeCase {
    ids: Vec<u32>,
    skip_special_tokens: bool,
    decoded: String,
    note: String,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
    decoded: String,
}

fn folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizers");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cases.json").exists())
        .collect();
    v.sort();
    v
}

fn section(folder: &Path) -> Vec<u8> {
    let mut warnings = Vec::new();
    mote_quantize::read_tokenizer(folder, &mut warnings)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .expect("tokenizer.json present")
}

fn load_cases(folder: &Path) -> Cases {
    serde_json::from_str(&std::fs::read_to_string(folder.join("cases.json")).unwrap()).unwrap()
}

#[test]
fn both_kinds_are_covered() {
    let kinds: Vec<String> = folders().iter().map(|f| load_cases(f).kind).collect();
    assert!(kinds.len() >= 4, "{kinds:?}");
    for kind in ["bytelevel", "sentencepiece"] {
        assert!(
            kinds.iter().any(|k| k.contains(kind)),
            "no {kind} fixture in {kinds:?}"
        );
    }
}

#[test]
fn encodes_like_tokenizers() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for folder in folders() {
        let bytes = section(&folder);
        let tok = Tokenizer::parse(&bytes).unwrap();
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        for case in load_cases(&folder).cases {
            let mut out = vec![0u32; tok.max_tokens(case.text.len())];
            let n = tok.encode(&case.text, false, &mut out).unwrap();
            if out[..n] != case.ids[..] {
                failures.push(format!(
                    "{name} {:?}: got {:?}, expected {:?}",
                    case.text,
                    &out[..n],
                    case.ids
                ));
            }
            let n = tok.encode(&case.text, true, &mut out).unwrap();
            if out[..n] != case.ids_with_special[..] {
                failures.push(format!(
                    "{name} {:?} with special tokens: got {:?}, expected {:?}",
                    case.text,
                    &out[..n],
                    case.ids_with_special
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decodes_like_tokenizers_and_streams() {
    let mut failures = Vec::new();
    for folder in folders() {
        let bytes = section(&folder);
        let tok = Tokenizer::parse(&bytes).unwrap();
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        for case in load_cases(&folder).cases {
            let mut buf = vec![0u8; tok.max_decoded_bytes() * (case.ids.len() + 1)];
            let text = tok.decode(&case.ids, true, &mut buf).unwrap().to_string();
            if text != case.decoded {
                failures.push(format!(
                    "{name}: decoded {text:?}, expected {:?}",
                    case.decoded
                ));
            }
            // Streamed a token at a time, each step's text is whole UTF-8
            // and the pieces add up to the same text.
            let mut dec = TextDecoder::new(true);
            let mut streamed = String::new();
            let mut step = vec![0u8; tok.max_decoded_bytes()];
            for &id in &case.ids {
                streamed.push_str(dec.push(&tok, id, &mut step).unwrap());
            }
            streamed.push_str(dec.finish(&mut step).unwrap());
            if streamed != case.decoded {
                failures.push(format!(
                    "{name}: streamed {streamed:?}, expected {:?}",
                    case.decoded
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn split_and_ill_formed_characters_decode_like_tokenizers() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for folder in folders() {
        let bytes = section(&folder);
        let tok = Tokenizer::parse(&bytes).unwrap();
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        for case in load_cases(&folder).decode_cases {
            let mut buf = vec![0u8; tok.max_decoded_bytes() * (case.ids.len() + 1)];
            let text = tok
                .decode(&case.ids, case.skip_special_tokens, &mut buf)
                .unwrap();
            if text != case.decoded {
                failures.push(format!(
                    "{name} {:?} ({}): decoded {text:?}, expected {:?}",
                    case.ids, case.note, case.decoded
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn round_trips_exactly() {
    for folder in folders() {
        let bytes = section(&folder);
        let tok = Tokenizer::parse(&bytes).unwrap();
        for case in load_cases(&folder).cases {
            // Texts that hold special tokens lose them when decoding skips them.
            if case.ids.iter().any(|&id| tok.is_special(id)) {
                continue;
            }
            let mut out = vec![0u32; tok.max_tokens(case.text.len())];
            let n = tok.encode(&case.text, false, &mut out).unwrap();
            let mut buf = vec![0u8; tok.max_decoded_bytes() * (n + 1)];
            assert_eq!(
                tok.decode(&out[..n], true, &mut buf).unwrap(),
                case.decoded,
                "{}: {:?}",
                folder.display(),
                case.text
            );
        }
    }
}

#[test]
fn a_split_character_is_held_until_complete() {
    let folder = folders()
        .into_iter()
        .find(|f| load_cases(f).kind.contains("bytelevel"))
        .unwrap();
    let bytes = section(&folder);
    let tok = Tokenizer::parse(&bytes).unwrap();
    // "€" is E2 82 AC: fed as three single-byte tokens.
    let byte_id = |b: u8| {
        (0..tok.vocab_size())
            .find(|&id| tok.token_bytes(id) == [b] && !tok.is_special(id))
            .unwrap()
    };
    let mut dec = TextDecoder::new(true);
    let mut out = vec![0u8; tok.max_decoded_bytes()];
    assert_eq!(dec.push(&tok, byte_id(0xE2), &mut out).unwrap(), "");
    assert_eq!(dec.push(&tok, byte_id(0x82), &mut out).unwrap(), "");
    assert_eq!(dec.push(&tok, byte_id(0xAC), &mut out).unwrap(), "€");
    // A character cut off by the end of the stream becomes U+FFFD.
    assert_eq!(dec.push(&tok, byte_id(0xE2), &mut out).unwrap(), "");
    assert_eq!(dec.finish(&mut out).unwrap(), "\u{FFFD}");
}

#[test]
fn small_buffers_are_errors_not_panics() {
    let folder = folders().into_iter().next().unwrap();
    let bytes = section(&folder);
    let tok = Tokenizer::parse(&bytes).unwrap();
    let mut out = [0u32; 2];
    assert!(matches!(
        tok.encode("a fairly long sentence of text", false, &mut out),
        Err(mote::Error::BufferTooSmall { .. })
    ));
    let mut text = [0u8; 1];
    let mut ids = [0u32; 64];
    let n = tok.encode("hello world", false, &mut ids).unwrap();
    assert!(matches!(
        tok.decode(&ids[..n], true, &mut text),
        Err(mote::Error::BufferTooSmall { .. })
    ));
}

#[test]
fn corrupted_sections_are_rejected_without_panicking() {
    let folder = folders().into_iter().next().unwrap();
    let good = section(&folder);
    assert!(Tokenizer::parse(&good[..good.len() - 1]).is_err());
    assert!(Tokenizer::parse(&good[..10]).is_err());
    // Flip bytes all over the section: parse either rejects it or yields a
    // tokenizer that encodes and decodes without panicking.
    let mut state = 0x2545_f491u32;
    for _ in 0..400 {
        let mut bad = good.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let i = state as usize % bad.len();
            bad[i] ^= (state >> 24) as u8 | 1;
        }
        if let Ok(tok) = Tokenizer::parse(&bad) {
            let mut ids = [0u32; 64];
            if let Ok(n) = tok.encode("Hello, world! 123 héllo", true, &mut ids) {
                let mut text = vec![0u8; tok.max_decoded_bytes() * (n + 1)];
                let _ = tok.decode(&ids[..n], false, &mut text);
            }
        }
    }
}

#[test]
fn a_corrupted_tokenizer_section_fails_its_checksum() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/models/tiny-kjv.mote");
    let mut bytes = std::fs::read(&path).unwrap();
    let model = mote::Model::open(mote::SliceStorage::new(&bytes)).unwrap();
    let p = *model.preamble();
    assert!(
        p.tokenizer_len > 0,
        "the built-in model carries its tokenizer"
    );
    let mut buf = Vec::new();
    assert!(model.tokenizer(&mut buf).is_ok());
    drop(model);
    bytes[(p.tokenizer_offset + p.tokenizer_len / 2) as usize] ^= 0x40;
    let model = mote::Model::open(mote::SliceStorage::new(&bytes)).unwrap();
    match model.tokenizer(&mut buf) {
        Err(mote::Error::Checksum {
            section: mote::error::Section::Tokenizer,
            ..
        }) => {}
        other => panic!("expected a tokenizer checksum error, got {other:?}"),
    }
}

/// Every fixture tokenizer on 160 KB of real English (`tools/train/heldout.txt`):
/// the id count and the CRC32 of the ids (little-endian u32) must be those
/// `tokenizers` produced.
#[test]
fn long_english_text_encodes_exactly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("fixtures/tokenizers/heldout.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("../tools/train/heldout.txt")).unwrap();
    let expected = checks["ids"].as_object().unwrap();
    assert_eq!(expected.len(), folders().len());
    for folder in folders() {
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = section(&folder);
        let tok = Tokenizer::parse(&bytes).unwrap();
        let mut ids = vec![0u32; tok.max_tokens(text.len())];
        let n = tok.encode(&text, false, &mut ids).unwrap();
        let le: Vec<u8> = ids[..n].iter().flat_map(|id| id.to_le_bytes()).collect();
        assert_eq!(
            (n as u64, crc32fast::hash(&le) as u64),
            (
                expected[&name]["count"].as_u64().unwrap(),
                expected[&name]["crc32"].as_u64().unwrap()
            ),
            "{name}: (ids, crc32) differ from tokenizers'"
        );
    }
}
