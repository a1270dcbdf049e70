//! Expert paging under a memory budget: the same numbers as full
//! residency, typed errors on read failures and corrupt experts, and
//! recovery once the storage heals.

use mote::error::Section;
use mote::{DType, Error, FaultyStorage, Limits, Model, Plan, Session, SliceStorage, TensorKind};
use mote_tests::{argmax, convert, reference};

const FAMILY: &str = "mixtral-tiny";

/// Limits whose budget holds everything but experts plus `share` of the
/// experts in slots, exactly.
fn budget_for<S: mote::Storage>(model: &Model<S>, context: u32, share: f64) -> Limits {
    let base = Limits {
        max_context: context,
        ..Limits::default()
    };
    let mut plan = Plan::new(model, &base).unwrap();
    let mut experts = plan.experts.expect("a paged plan");
    let c = model.config();
    experts.slots = ((c.expert_layers() * c.n_experts) as f64 * share).round() as usize;
    plan.experts = Some(experts);
    Limits {
        memory_budget_bytes: Some(plan.arena_bytes() as u64),
        ..base
    }
}

/// Prefill then `steps` greedy steps; every step's logits.
fn run<S: mote::Storage + Sync>(
    model: &Model<S>,
    limits: &Limits,
    prompt: &[u32],
    steps: usize,
) -> Vec<Vec<f32>> {
    let plan = Plan::new(model, limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(model, &plan, &mut arena).unwrap();
    let mut out = vec![session.prefill(prompt).unwrap().to_vec()];
    for _ in 0..steps {
        let next = argmax(out.last().unwrap());
        out.push(session.step(next).unwrap().to_vec());
    }
    out
}

#[test]
fn a_quarter_of_the_experts_gives_bit_identical_logits_for_every_dtype() {
    quarter_of_the_experts_is_bit_identical(FAMILY, 6);
}

/// The fine-grained family: 48 experts of width 48, top-4.
#[test]
fn olmoe_at_a_quarter_of_its_experts_is_bit_identical_too() {
    quarter_of_the_experts_is_bit_identical("olmoe-tiny", 12);
}

/// Latent attention's cache, dense first layer, grouped sigmoid routing:
/// 2 expert layers of 16.
#[test]
fn deepseek_v3_at_a_quarter_of_its_experts_is_bit_identical_too() {
    quarter_of_the_experts_is_bit_identical("deepseekv3-tiny", 8);
}

/// Sinks, sliding windows, biased experts (their biases stay resident).
#[test]
fn gpt_oss_at_a_quarter_of_its_experts_is_bit_identical_too() {
    quarter_of_the_experts_is_bit_identical("gptoss-tiny", 8);
}

fn quarter_of_the_experts_is_bit_identical(family: &str, slots: usize) {
    let r = reference(family);
    for dtype in [DType::F32, DType::F16, DType::Q8, DType::Q4, DType::Mxfp4] {
        let file = convert(family, "f32", dtype);
        let resident = Model::open(SliceStorage::new(&file)).unwrap();
        let context = (r.prompt.len() + 16) as u32;
        let paged_model = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
        let limits = budget_for(&paged_model, context, 0.25);
        let plan = Plan::new(&paged_model, &limits).unwrap();
        assert_eq!(
            plan.experts.unwrap().slots,
            slots,
            "{family} {dtype}: 25% of the experts"
        );
        assert!(plan.arena_bytes() as u64 <= limits.memory_budget_bytes.unwrap());
        for batch in [1, 64] {
            let full_limits = Limits {
                max_context: context,
                prefill_batch: batch,
                ..Limits::default()
            };
            let full = run(&resident, &full_limits, &r.prompt, 15);
            let paged = run(
                &paged_model,
                &Limits {
                    prefill_batch: batch,
                    ..limits
                },
                &r.prompt,
                15,
            );
            let same = paged
                .iter()
                .zip(&full)
                .all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(
                same && paged.len() == full.len(),
                "{dtype}, prefill batch {batch}: paged logits differ"
            );
            let greedy = |l: &[Vec<f32>]| l.iter().map(|v| argmax(v)).collect::<Vec<_>>();
            assert_eq!(greedy(&paged), greedy(&full));
        }
    }
}

#[test]
fn paging_counts_hits_misses_and_bytes() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::Q4);
    let model = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
    let limits = Limits {
        prefill_batch: 1,
        ..budget_for(&model, 64, 0.25)
    };
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    session.prefill(&r.prompt).unwrap();
    let s = session.cache_stats();
    // Each token uses top-2 experts in each of 3 layers.
    assert_eq!(s.hits + s.misses, (r.prompt.len() * 3 * 2) as u64);
    assert!(
        s.misses >= 6,
        "at least the first token's experts are misses"
    );
    // Every read is of one whole group (they are smaller than the I/O
    // thread's piece, so a cancelled one is dropped whole or read whole).
    let group = model.expert_range(0, 0).unwrap().1;
    assert_eq!(s.bytes_read % group, 0);
    assert!(s.misses * group <= s.bytes_read && s.bytes_read <= s.reads_started * group);
    // A miss was read on demand or ahead (a prefetch then used).
    assert_eq!(s.reads_started - s.prefetches, s.misses - s.prefetches_used);
    assert!(s.prefetches > 0 && s.prefetches_used <= s.predicted_used);
    assert_eq!(s.prefetches, s.prefetches_used + s.prefetches_wasted);
    // Predictions are read ahead only while the device is idle (the layer
    // before had no reads of its own): at a quarter of the experts some
    // layers read theirs, and their predictions are skipped.
    assert!(s.predictions_skipped > 0, "{s:?}");
    assert!(s.prefetches + s.predictions_skipped <= s.predicted, "{s:?}");
    // With a prefill batch of 1, every prompt token is a one-token step and
    // predicts too: layers 1 and 2, top-2 each.
    assert_eq!(s.predicted, (r.prompt.len() * 2 * 2) as u64);
    let mut next = 1;
    for _ in 0..8 {
        next = argmax(session.step(next).unwrap());
    }
    let s = session.cache_stats();
    // Layers 1 and 2 are predicted at each step, top-2 each, and every
    // prediction is checked against the layer's choice.
    assert_eq!(s.predicted, ((r.prompt.len() + 8) * 2 * 2) as u64);
    assert!(s.predicted_used <= s.predicted);
    println!("prediction accuracy {}/{}", s.predicted_used, s.predicted);
}

#[test]
fn a_read_error_is_typed_leaves_no_bad_slot_and_the_session_recovers() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::Q8);
    let context = (r.prompt.len() + 12) as u32;
    let clean_model = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
    let limits = budget_for(&clean_model, context, 0.25);
    let clean = run(&clean_model, &limits, &r.prompt, 10);

    let faulty = FaultyStorage::new(SliceStorage::new(&file));
    let model = Model::open(&faulty).unwrap();
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    let mut logits = vec![session.prefill(&r.prompt).unwrap().to_vec()];
    let mut failed_steps = 0;
    for step in 0..10 {
        let next = argmax(logits.last().unwrap());
        if step % 3 == 1 {
            // Expert groups are kilobytes; embedding rows are smaller.
            faulty.fail_reads_larger_than(1024);
            match session.step(next) {
                Err(Error::Storage(mote::StorageError::Io { .. })) => failed_steps += 1,
                Err(e) => panic!("step {step}: unexpected error {e}"),
                Ok(_) => {} // every expert it needed was cached
            }
            faulty.heal();
        }
        logits.push(session.step(next).unwrap().to_vec());
    }
    assert!(
        failed_steps >= 1 && faulty.failures() >= 1,
        "no step needed a page-in while failing"
    );
    assert_eq!(
        logits, clean,
        "after healing, the output must match a clean run"
    );
}

#[test]
fn a_corrupt_expert_is_reported_with_its_layer_and_expert_in_paranoid_mode() {
    let r = reference(FAMILY);
    let mut file = convert(FAMILY, "f32", DType::Q4);
    let model = Model::open(SliceStorage::new(&file)).unwrap();
    // One flipped bit in every layer-1 expert's down matrix.
    let victims: Vec<_> = (0..8)
        .map(|e| {
            model
                .tensor(mote::TensorId::expert(TensorKind::ExpertDown, 1, e))
                .unwrap()
        })
        .collect();
    drop(model);
    for v in &victims {
        file[v.offset as usize + 40] ^= 0x04;
    }
    let model = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
    let limits = Limits {
        verify_experts: true,
        ..budget_for(&model, 32, 0.25)
    };
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    match session.prefill(&r.prompt) {
        Err(Error::Checksum {
            section: Section::Tensor(id),
            expected,
            found,
        }) => {
            assert_eq!((id.kind, id.layer), (TensorKind::ExpertDown, 1));
            let v = victims
                .iter()
                .find(|v| v.id == id)
                .expect("one of the corrupted tensors");
            assert_eq!(expected, v.crc32);
            assert_ne!(found, expected);
            let msg = Error::Checksum {
                section: Section::Tensor(id),
                expected,
                found,
            }
            .to_string();
            assert!(
                msg.contains("layer 1") && msg.contains(&format!("expert {}", id.expert)),
                "{msg}"
            );
        }
        other => panic!("expected a checksum error, got {:?}", other.map(|_| ())),
    }
    // Without verification the same file runs (the damage is not detected).
    let quiet = Limits {
        verify_experts: false,
        ..limits
    };
    let plan = Plan::new(&model, &quiet).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    session.prefill(&r.prompt).unwrap();
}

#[test]
fn a_budget_below_the_minimum_says_how_many_bytes_are_missing() {
    let file = convert(FAMILY, "f32", DType::Q4);
    let model = Model::open(FaultyStorage::new(SliceStorage::new(&file))).unwrap();
    let ok = budget_for(&model, 32, 2.0 / 24.0); // exactly top-2 slots
    assert!(Plan::new(&model, &ok).is_ok());
    let short = Limits {
        memory_budget_bytes: Some(ok.memory_budget_bytes.unwrap() - 40_000),
        ..ok
    };
    match Plan::new(&model, &short) {
        Err(Error::BudgetTooSmall { needed, budget }) => assert!(needed > budget),
        other => panic!("expected BudgetTooSmall, got {other:?}"),
    }
}

/// A storage whose reads end in the background, as a DMA engine's would:
/// `start_read` only records the read; its bytes land (or it fails) on the
/// third `poll_read`, so the session's reads of later experts and of the
/// next layer's predicted ones are in flight while it computes.
struct Dma<'f> {
    file: &'f [u8],
    pending: std::sync::Mutex<Vec<Transfer>>,
    started: std::sync::atomic::AtomicU32,
    fail: std::sync::atomic::AtomicBool,
}

struct Transfer {
    id: u32,
    offset: u64,
    dst: usize,
    len: usize,
    polls: u32,
}

impl<'f> Dma<'f> {
    fn new(file: &'f [u8]) -> Self {
        Dma {
            file,
            pending: Default::default(),
            started: Default::default(),
            fail: Default::default(),
        }
    }
}

impl mote::Storage for Dma<'_> {
    fn len(&self) -> u64 {
        self.file.len() as u64
    }
    fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), mote::StorageError> {
        SliceStorage::new(self.file).read_at(offset, dst)
    }
    fn reads_in_background(&self) -> bool {
        true
    }
    unsafe fn start_read(
        &self,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<mote::ReadStart, mote::StorageError> {
        mote::storage::check_range(offset, len as u64, self.len())?;
        let id = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.pending.lock().unwrap().push(Transfer {
            id,
            offset,
            dst: dst as usize,
            len,
            polls: 3,
        });
        Ok(mote::ReadStart::Pending(id))
    }
    fn poll_read(&self, id: u32) -> Option<Result<(), mote::StorageError>> {
        let mut pending = self.pending.lock().unwrap();
        let i = pending
            .iter()
            .position(|t| t.id == id)
            .expect("a started read");
        pending[i].polls -= 1;
        if pending[i].polls > 0 {
            return None;
        }
        let t = pending.swap_remove(i);
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(Err(mote::StorageError::Io { code: 5 }));
        }
        // SAFETY: `start_read`'s caller keeps `len` bytes at `dst` for this
        // read until this poll reports it ended.
        let dst = unsafe { std::slice::from_raw_parts_mut(t.dst as *mut u8, t.len) };
        let at = t.offset as usize;
        dst.copy_from_slice(&self.file[at..at + t.len]);
        Some(Ok(()))
    }
}

#[test]
fn a_storage_that_reads_in_the_background_gives_the_same_logits_and_recovers() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::Q4);
    let context = (r.prompt.len() + 12) as u32;
    let resident = Model::open(SliceStorage::new(&file)).unwrap();
    let full = run(
        &resident,
        &Limits {
            max_context: context,
            ..Limits::default()
        },
        &r.prompt,
        10,
    );
    let dma = Dma::new(&file);
    let model = Model::open(&dma).unwrap();
    let limits = budget_for(&model, context, 0.25);
    assert_eq!(run(&model, &limits, &r.prompt, 10), full);

    // Its reads ahead ran (the session overlapped them), then a failing
    // transfer is an error, and the session recovers once it heals.
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    let mut logits = vec![session.prefill(&r.prompt).unwrap().to_vec()];
    let mut failed = 0;
    for step in 0..10 {
        let next = argmax(logits.last().unwrap());
        if step % 3 == 1 {
            dma.fail.store(true, std::sync::atomic::Ordering::SeqCst);
            match session.step(next) {
                Err(Error::Storage(mote::StorageError::Io { code: 5 })) => failed += 1,
                Err(e) => panic!("step {step}: unexpected error {e}"),
                Ok(_) => {}
            }
            dma.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        logits.push(session.step(next).unwrap().to_vec());
    }
    let s = session.cache_stats();
    assert!(failed >= 1, "no step needed a read while failing");
    assert!(s.prefetches > 0 && s.max_in_flight >= 2, "{s:?}");
    assert!(
        dma.pending.lock().unwrap().is_empty(),
        "a read outlived its step"
    );
    assert_eq!(logits, full, "after healing, the output must match");
}

/// O_DIRECT where the filesystem allows it: the same bytes at aligned and
/// unaligned offsets, and the same logits as the resident model.
#[test]
fn a_file_read_past_the_page_cache_gives_the_same_bytes_and_logits() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::Q8);
    let dir = std::env::temp_dir().join(format!("mote-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.mote");
    std::fs::write(&path, &file).unwrap();
    let storage = mote::FileStorage::open_direct(&path).unwrap();
    // Refused is allowed (tmpfs), but then it must say why.
    assert_eq!(storage.is_direct(), storage.direct_refusal().is_none());
    println!(
        "direct: {} ({:?})",
        storage.is_direct(),
        storage.direct_refusal()
    );
    let mut buf = vec![0u8; 6 * mote::DIRECT_ALIGN];
    let at = buf.as_ptr().align_offset(mote::DIRECT_ALIGN);
    for (offset, len) in [
        (0, 4096),
        (4096, 8192 + 100),
        (4096, 17),
        (4097, 4096),
        (8192, 3 * 4096 + 4095),
    ] {
        for skew in [0, 1] {
            let dst = &mut buf[at + skew..at + skew + len];
            mote::Storage::read_at(&storage, offset as u64, dst).unwrap();
            assert!(
                dst == &file[offset..offset + len],
                "offset {offset}, len {len}, skew {skew}"
            );
        }
    }
    let model = Model::open(storage).unwrap();
    let context = (r.prompt.len() + 8) as u32;
    let resident = Model::open(SliceStorage::new(&file)).unwrap();
    let full = run(
        &resident,
        &Limits {
            max_context: context,
            ..Limits::default()
        },
        &r.prompt,
        8,
    );
    assert_eq!(
        run(&model, &budget_for(&model, context, 0.25), &r.prompt, 8),
        full
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
