//! Bad input never panics: every corrupt file, out-of-range token and
//! overfull context yields its typed error.

use std::sync::OnceLock;

use mote::error::Section;
use mote::format::tensor::{TensorRecord, RECORD_BYTES};
use mote::format::{Preamble, PREAMBLE_BYTES};
use mote::{
    DType, Error, Layout, Limits, Model, Plan, Session, SliceStorage, TensorId, TensorKind,
};
use mote_tests::convert;

/// The fixture as an int4 file, converted once for all tests here.
fn file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| convert("mixtral-tiny", "f32", DType::Q4))
}

fn preamble(bytes: &[u8]) -> Preamble {
    Preamble::decode(bytes[..PREAMBLE_BYTES].try_into().unwrap()).unwrap()
}

fn open(bytes: &[u8]) -> Result<Model<SliceStorage<'_>>, Error> {
    Model::open(SliceStorage::new(bytes))
}

/// Rewrites record `index` with `edit`, and fixes the directory CRC so the
/// change reaches the record checks.
fn edit_record(bytes: &mut [u8], index: usize, edit: impl FnOnce(&mut TensorRecord)) {
    let mut p = preamble(bytes);
    let at = p.directory_offset as usize + index * RECORD_BYTES;
    let mut rec = TensorRecord::decode(bytes[at..at + RECORD_BYTES].try_into().unwrap()).unwrap();
    edit(&mut rec);
    bytes[at..at + RECORD_BYTES].copy_from_slice(&rec.encode());
    let dir = &bytes[p.directory_offset as usize..][..p.tensor_count as usize * RECORD_BYTES];
    p.directory_crc = crc32fast::hash(dir);
    bytes[..PREAMBLE_BYTES].copy_from_slice(&p.encode());
}

#[test]
fn the_untouched_file_opens_and_verifies() {
    let model = open(file()).unwrap();
    model.verify_checksums().unwrap();
}

#[test]
fn truncation_at_every_section_boundary_is_reported_for_that_section() {
    let bytes = file();
    let p = preamble(bytes);
    let config_end = p.config_offset + p.config_len as u64;
    let dir_end = p.directory_offset + p.tensor_count as u64 * RECORD_BYTES as u64;
    let cases: &[(u64, &str)] = &[
        (0, "preamble"),
        (1, "preamble"),
        (PREAMBLE_BYTES as u64 - 1, "preamble"),
        (PREAMBLE_BYTES as u64, "config"),
        (config_end - 1, "config"),
        (config_end, "directory"),
        (p.directory_offset + 1, "directory"),
        (dir_end - 1, "directory"),
        (dir_end, "data"),
        (p.data_offset, "data"),
        (p.data_offset + 4096, "data"),
        (bytes.len() as u64 - 1, "data"),
    ];
    for &(cut, want) in cases {
        let err = open(&bytes[..cut as usize]).expect_err("truncated file opened");
        let got = match err {
            Error::Truncated {
                section: Section::Preamble,
                ..
            } => "preamble",
            Error::Truncated {
                section: Section::Config,
                ..
            } => "config",
            Error::Truncated {
                section: Section::Directory,
                ..
            } => "directory",
            Error::Truncated {
                section: Section::Data,
                ..
            } => "data",
            other => panic!("cut at {cut}: unexpected error {other}"),
        };
        assert_eq!(got, want, "cut at {cut}: {err}");
    }
}

#[test]
fn bad_magic_is_reported_with_the_bytes_found() {
    let mut bytes = file().to_vec();
    bytes[..4].copy_from_slice(b"GGUF");
    match open(&bytes) {
        Err(Error::BadMagic { found }) => assert_eq!(&found[..4], b"GGUF"),
        other => panic!("expected BadMagic, got {other:?}"),
    }
}

#[test]
fn a_future_version_is_refused_by_number() {
    let mut bytes = file().to_vec();
    let future = mote::format::VERSION + 1;
    bytes[8..12].copy_from_slice(&future.to_le_bytes());
    assert_eq!(
        open(&bytes).err(),
        Some(Error::UnsupportedVersion {
            found: future,
            supported: mote::format::VERSION
        })
    );
}

#[test]
fn a_tensor_offset_past_the_end_names_the_tensor() {
    let mut bytes = file().to_vec();
    let len = bytes.len() as u64;
    // Record 1 is layer 0's attn_q.
    edit_record(&mut bytes, 1, |r| {
        r.offset = len.next_multiple_of(64) + 4096
    });
    match open(&bytes) {
        Err(Error::Truncated {
            section: Section::Tensor(id),
            ..
        }) => {
            assert_eq!(id, TensorId::layer(TensorKind::AttnQ, 0))
        }
        other => panic!("expected a truncated tensor, got {other:?}"),
    }
}

#[test]
fn a_row_read_tensor_in_the_rows4_layout_is_refused_by_name() {
    let mut bytes = file().to_vec();
    let embedding = (0..open(file()).unwrap().tensor_count())
        .find(|&i| open(file()).unwrap().record(i).unwrap().id.kind == TensorKind::TokenEmbedding)
        .unwrap();
    edit_record(&mut bytes, embedding, |r| r.layout = Layout::Rows4);
    let err = open(&bytes).err().unwrap();
    assert!(
        matches!(err, Error::TensorLayout { tensor, found: Layout::Rows4 }
            if tensor == TensorId::global(TensorKind::TokenEmbedding)),
        "{err:?}"
    );
    assert!(err.to_string().contains("token_embedding"), "{err}");
}

#[test]
fn a_shape_that_disagrees_with_the_config_is_named() {
    let mut bytes = file().to_vec();
    edit_record(&mut bytes, 2, |r| {
        r.rows += 1;
        r.length = r.dtype.tensor_bytes(r.rows.into(), r.cols.into()).unwrap();
    });
    assert!(matches!(
        open(&bytes),
        Err(Error::TensorShape { tensor, .. }) if tensor == TensorId::layer(TensorKind::AttnK, 0)
    ));
}

#[test]
fn crc_mismatches_are_caught_in_config_directory_and_data() {
    let p = preamble(file());

    let mut bytes = file().to_vec();
    bytes[p.config_offset as usize + 3] ^= 0x40;
    assert!(matches!(
        open(&bytes),
        Err(Error::Checksum {
            section: Section::Config,
            ..
        })
    ));

    let mut bytes = file().to_vec();
    bytes[p.directory_offset as usize + 70] ^= 0x01;
    assert!(matches!(
        open(&bytes),
        Err(Error::Checksum {
            section: Section::Directory,
            ..
        })
    ));

    let mut bytes = file().to_vec();
    let model = open(file()).unwrap();
    let victim = model
        .tensor(TensorId::expert(TensorKind::ExpertUp, 1, 5))
        .unwrap();
    bytes[victim.offset as usize + 10] ^= 0x10;
    let model = open(&bytes).expect("data corruption is found by verification, not open");
    match model.verify_checksums() {
        Err(Error::Checksum {
            section: Section::Tensor(id),
            expected,
            found,
        }) => {
            assert_eq!(id, victim.id);
            assert_eq!(expected, victim.crc32);
            assert_ne!(found, expected);
        }
        other => panic!("expected a tensor checksum error, got {other:?}"),
    }
}

#[test]
fn corrupted_records_never_panic() {
    // Every field of several records set to awkward values, CRC fixed up so
    // the record checks see them: open fails with a typed error or, if the
    // record is still valid, the session runs.
    let model = open(file()).unwrap();
    let count = model.tensor_count();
    let values = [
        0u64,
        1,
        63,
        64,
        4096,
        u32::MAX as u64,
        u64::MAX - 63,
        file().len() as u64,
    ];
    for index in [0, 1, 7, count / 2, count - 1] {
        for (field, &v) in (0..5).flat_map(|f| values.iter().map(move |v| (f, v))) {
            let mut bytes = file().to_vec();
            edit_record(&mut bytes, index, |r| match field {
                0 => r.offset = v & !63,
                1 => r.length = v,
                2 => r.rows = v as u32,
                3 => r.cols = v as u32,
                _ => r.id.layer = v as u32,
            });
            if let Ok(model) = open(&bytes) {
                let plan = Plan::new(
                    &model,
                    &Limits {
                        max_context: 2,
                        ..Limits::default()
                    },
                )
                .unwrap();
                let mut arena = vec![0u8; plan.arena_bytes()];
                let mut s = Session::new(&model, &plan, &mut arena).unwrap();
                s.step(1).unwrap();
            }
        }
    }
}

#[test]
fn token_ids_and_context_are_checked_before_any_work() {
    let model = open(file()).unwrap();
    let vocab = model.config().vocab_size;
    let plan = Plan::new(
        &model,
        &Limits {
            max_context: 4,
            ..Limits::default()
        },
    )
    .unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut s = Session::new(&model, &plan, &mut arena).unwrap();

    assert_eq!(
        s.step(vocab).err(),
        Some(Error::TokenOutOfRange {
            token: vocab,
            vocab_size: vocab
        })
    );
    assert_eq!(
        s.prefill(&[1, 2, vocab + 7]).err(),
        Some(Error::TokenOutOfRange {
            token: vocab + 7,
            vocab_size: vocab
        })
    );
    assert_eq!(
        s.position(),
        0,
        "a rejected prompt must not advance the session"
    );
    assert_eq!(
        s.prefill(&[1, 2, 3, 4, 5]).err(),
        Some(Error::ContextFull {
            position: 4,
            max_context: 4
        })
    );
    assert_eq!(s.position(), 0);
    assert_eq!(s.prefill(&[]).err(), Some(Error::EmptyPrompt));

    s.prefill(&[1, 2, 3, 4]).unwrap();
    assert_eq!(
        s.step(5).err(),
        Some(Error::ContextFull {
            position: 4,
            max_context: 4
        })
    );
}

#[test]
fn arena_and_budget_shortfalls_say_how_many_bytes() {
    let model = open(file()).unwrap();
    let plan = Plan::new(
        &model,
        &Limits {
            max_context: 16,
            ..Limits::default()
        },
    )
    .unwrap();
    let needed = plan.arena_bytes();
    let mut arena = vec![0u8; needed - 1];
    assert!(matches!(
        Session::new(&model, &plan, &mut arena),
        Err(Error::ArenaTooSmall { needed: n, provided: p }) if n == needed && p == needed - 1
    ));
    let limits = Limits {
        max_context: 16,
        memory_budget_bytes: Some(1000),
        ..Limits::default()
    };
    match Plan::new(&model, &limits) {
        Err(
            e @ Error::BudgetTooSmall {
                needed: n,
                budget: 1000,
            },
        ) => {
            assert_eq!(n, needed as u64);
            assert!(
                e.to_string()
                    .contains(&format!("{} bytes missing", n - 1000)),
                "{e}"
            );
        }
        other => panic!("expected BudgetTooSmall, got {other:?}"),
    }
}
