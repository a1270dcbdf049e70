//! Conformance against transformers: the tiny Mixtral fixture, converted by
//! our quantizer, must give the reference logits (f32, bf16: 1e-4 relative;
//! f16: 1e-2) and, quantized, a next-token KL bounded by what the same block
//! quantization gives inside transformers (`sim_kl` in reference.json).

use mote::DType;
use mote_tests::{all_logits, convert, greedy, max_rel_err, mean_kl, reference, top1_agreement};

const FAMILY: &str = "mixtral-tiny";

#[test]
fn f32_checkpoint_matches_transformers_within_1e_4() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::F32);
    let logits = all_logits(&file, &r.tokens);
    let err = max_rel_err(&logits, &r.logits_f32);
    println!("f32: max relative error {err:.2e}");
    assert!(err < 1e-4, "f32 relative error {err:.3e} exceeds 1e-4");
}

#[test]
fn bf16_sharded_fused_checkpoint_matches_its_reference_within_1e_4() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "bf16", DType::F32);
    let logits = all_logits(&file, &r.tokens);
    let err = max_rel_err(&logits, &r.logits_bf16);
    println!("bf16 -> f32: max relative error {err:.2e}");
    assert!(err < 1e-4, "bf16 relative error {err:.3e} exceeds 1e-4");
}

#[test]
fn f32_greedy_matches_transformers_and_stops_at_eos() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::F32);
    assert_eq!(greedy(&file, &r.prompt, r.greedy.len(), true), r.greedy);
    assert_eq!(
        greedy(&file, &r.prompt, r.greedy.len(), false),
        r.greedy_until_eos
    );
    assert_eq!(*r.greedy_until_eos.last().unwrap(), r.eos_token_id);
}

#[test]
fn f16_within_1e_2() {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", DType::F16);
    let logits = all_logits(&file, &r.tokens);
    let err = max_rel_err(&logits, &r.logits_f32);
    println!("f16: max relative error {err:.2e}");
    assert!(err < 1e-2, "f16 relative error {err:.3e} exceeds 1e-2");
}

/// Quantized weights: our KL against the f32 reference may exceed the
/// weight-only simulation by the error of int8 activations; the bound is
/// `factor * sim_kl + floor`.
fn quantized_case(dtype: DType, key: &str, factor: f64, floor: f64) {
    let r = reference(FAMILY);
    let file = convert(FAMILY, "f32", dtype);
    let logits = all_logits(&file, &r.tokens);
    let kl = mean_kl(&r.logits_f32, &logits);
    let sim = r.sim_kl[key];
    let bound = factor * sim + floor;
    let top1 = top1_agreement(&r.logits_f32, &logits);
    println!(
        "{key}: mean KL {kl:.3e} (transformers simulation {sim:.3e}, bound {bound:.3e}); top-1 {top1:.3} (simulation {:.3})",
        r.sim_top1[key]
    );
    assert!(
        kl <= bound,
        "{key}: mean KL {kl:.3e} exceeds the bound {bound:.3e} (simulated {sim:.3e})"
    );
}

#[test]
fn int8_kl_is_bounded_by_the_simulation() {
    quantized_case(DType::Q8, "int8", 3.0, 1e-4);
}

#[test]
fn int4_kl_is_bounded_by_the_simulation() {
    quantized_case(DType::Q4, "int4", 1.5, 1e-3);
}

/// Logits after a batched prefill of `tokens` (batches of `batch`).
fn prefill_logits(file: &[u8], tokens: &[u32], batch: u32, threads: u32) -> Vec<f32> {
    use mote::{Limits, Model, Plan, Session, SliceStorage};
    let model = Model::open(SliceStorage::new(file)).unwrap();
    let limits = Limits {
        max_context: tokens.len() as u32,
        prefill_batch: batch,
        threads,
        ..Limits::default()
    };
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    session.prefill(tokens).unwrap().to_vec()
}

#[test]
fn batched_prefill_matches_step_by_step_for_every_dtype_and_batch() {
    let r = reference(FAMILY);
    for dtype in [DType::F32, DType::F16, DType::Q8, DType::Q4] {
        let file = convert(FAMILY, "f32", dtype);
        let steps = all_logits(&file, &r.tokens);
        let want = &steps[steps.len() - 1..];
        for (batch, threads) in [(1, 1), (5, 1), (5, 2), (64, 2)] {
            let got = vec![prefill_logits(&file, &r.tokens, batch, threads)];
            let err = max_rel_err(&got, want);
            assert!(
                err < 1e-5,
                "{dtype} batch {batch} threads {threads}: relative error {err:.2e}"
            );
        }
    }
}
