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
    assert_eq!(
        s.bytes_read,
        s.misses * plan.experts.unwrap().slot_bytes as u64
    );
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
