//! Conformance against transformers: each family's tiny fixture, converted
//! by our quantizer, must give the reference logits (f32, bf16: 1e-4
//! relative; f16: 1e-2), the same greedy tokens, and, quantized, a
//! next-token KL bounded by what the same block quantization gives inside
//! transformers (`sim_kl` in reference.json). Batched prefill must equal
//! step-by-step decoding.

use mote::kernels::Kernels;
use mote::{DType, KvCacheType, Layout, Limits, Model, Plan, Session, SliceStorage};
use mote_tests::{
    all_logits, all_logits_with, convert, convert_in, greedy, max_rel_err, mean_kl, reference,
    top1_agreement,
};

fn f32_matches_transformers(family: &str) {
    let r = reference(family);
    let file = convert(family, "f32", DType::F32);
    let err = max_rel_err(&all_logits(&file, &r.tokens), &r.logits_f32);
    println!("{family} f32: max relative error {err:.2e}");
    assert!(
        err < 1e-4,
        "{family}: f32 relative error {err:.3e} exceeds 1e-4"
    );
    assert_eq!(
        greedy(&file, &r.prompt, r.greedy.len(), true),
        r.greedy,
        "{family}: greedy"
    );
    assert_eq!(
        greedy(&file, &r.prompt, r.greedy.len(), false),
        r.greedy_until_eos,
        "{family}: EOS"
    );
    assert_eq!(*r.greedy_until_eos.last().unwrap(), r.eos_token_id);
}

fn bf16_matches_its_reference(family: &str) {
    let r = reference(family);
    let file = convert(family, "bf16", DType::F32);
    let err = max_rel_err(&all_logits(&file, &r.tokens), &r.logits_bf16);
    println!("{family} bf16 -> f32: max relative error {err:.2e}");
    assert!(
        err < 1e-4,
        "{family}: bf16 relative error {err:.3e} exceeds 1e-4"
    );
}

fn f16_within_1e_2(family: &str) {
    let r = reference(family);
    let file = convert(family, "f32", DType::F16);
    let err = max_rel_err(&all_logits(&file, &r.tokens), &r.logits_f32);
    println!("{family} f16: max relative error {err:.2e}");
    assert!(
        err < 1e-2,
        "{family}: f16 relative error {err:.3e} exceeds 1e-2"
    );
}

/// The KV cache in f16 rounds keys and values as f16 weights round
/// weights (the same 1e-2 bound); in int8 blocks it costs no more than
/// int8 weights do (their KL bound against transformers). MLA's latent
/// cache (DeepSeek) included.
fn kv_cache_types_stay_close_to_f32(family: &str) {
    let r = reference(family);
    let file = convert(family, "f32", DType::F32);
    let f16 = all_logits_with(&file, &r.tokens, KvCacheType::F16);
    let err = max_rel_err(&f16, &r.logits_f32);
    let q8 = all_logits_with(&file, &r.tokens, KvCacheType::Q8);
    let kl = mean_kl(&r.logits_f32, &q8);
    let bound = 3.0 * r.sim_kl["int8"] + 1e-4;
    println!("{family} kv f16: max relative error {err:.2e}; kv q8: mean KL {kl:.3e} (bound {bound:.3e})");
    assert!(
        err < 1e-2,
        "{family}: f16 KV cache relative error {err:.3e} exceeds 1e-2"
    );
    assert!(
        kl <= bound,
        "{family}: q8 KV cache mean KL {kl:.3e} exceeds {bound:.3e}"
    );
}

/// Quantized weights: our KL against the f32 reference may exceed the
/// weight-only simulation by the error of int8 activations; the bound is
/// `factor * sim_kl + floor`.
fn quantized(family: &str, dtype: DType, key: &str, factor: f64, floor: f64) {
    let r = reference(family);
    let file = convert(family, "f32", dtype);
    let logits = all_logits(&file, &r.tokens);
    let kl = mean_kl(&r.logits_f32, &logits);
    let sim = r.sim_kl[key];
    let bound = factor * sim + floor;
    let top1 = top1_agreement(&r.logits_f32, &logits);
    println!(
        "{family} {key}: mean KL {kl:.3e} (transformers simulation {sim:.3e}, bound {bound:.3e}); top-1 {top1:.3} (simulation {:.3})",
        r.sim_top1[key]
    );
    assert!(
        kl <= bound,
        "{family} {key}: mean KL {kl:.3e} exceeds the bound {bound:.3e} (simulated {sim:.3e})"
    );
}

/// Logits after a batched prefill of `tokens` (batches of `batch`), with
/// the detected kernel table or, `scalar`, the reference one.
fn prefill_logits_with(
    file: &[u8],
    tokens: &[u32],
    batch: u32,
    threads: u32,
    scalar: bool,
) -> Vec<f32> {
    let model = Model::open(SliceStorage::new(file)).unwrap();
    let limits = Limits {
        max_context: tokens.len() as u32,
        prefill_batch: batch,
        threads,
        kv_cache: KvCacheType::F32,
        ..Limits::default()
    };
    let plan = Plan::new(&model, &limits).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    if scalar {
        session.set_kernels(Kernels::scalar());
    }
    session.prefill(tokens).unwrap().to_vec()
}

/// Logits after a batched prefill with the detected kernels.
fn prefill_logits(file: &[u8], tokens: &[u32], batch: u32, threads: u32) -> Vec<f32> {
    prefill_logits_with(file, tokens, batch, threads, false)
}

/// The batched products of this CPU's kernel table (tiles, or a fast
/// matvec a token) against the scalar table, through a whole batched
/// prefill of every family: integer sums agree exactly, so only float
/// summation order differs, and a value moving across an int8 rounding
/// boundary of the next layer's activations bounds the rest (2e-2, as
/// above). f32 and f16 rows: 1e-5.
fn batched_products_match_the_scalar_table(family: &str) {
    let r = reference(family);
    for (dtype, bound) in BATCH_BOUNDS {
        let file = convert(family, "f32", dtype);
        let want = vec![prefill_logits_with(&file, &r.tokens, 64, 1, true)];
        let got = vec![prefill_logits_with(&file, &r.tokens, 64, 1, false)];
        let err = max_rel_err(&got, &want);
        assert!(
            err < bound,
            "{family} {dtype} {}: relative error {err:.2e} against the scalar table",
            Kernels::detect().name
        );
    }
}

/// How far a batched prefill may move the last logits, relative to the
/// largest, per weight type (the reasons are in the two tests below).
const BATCH_BOUNDS: [(DType, f64); 4] = [
    (DType::F32, 1e-5),
    (DType::F16, 1e-5),
    (DType::Q8, 2e-2),
    (DType::Q4, 2e-2),
];

/// Float weights: batched and step-by-step differ only in float summation
/// order (1e-5). Quantized weights quantize their activations to int8, and a
/// value that moves by one ulp across a rounding boundary moves a whole int8
/// step, so there the bound is the scale of activation quantization noise
/// (2e-2 of the largest logit); scalar kernels agree bit for bit
/// (`MOTE_KERNELS=scalar`).
fn batched_prefill_matches_steps(family: &str) {
    let r = reference(family);
    for (dtype, bound) in BATCH_BOUNDS {
        let file = convert(family, "f32", dtype);
        let steps = all_logits(&file, &r.tokens);
        let want = &steps[steps.len() - 1..];
        for (batch, threads) in [(1, 1), (5, 1), (5, 2), (64, 2)] {
            let got = vec![prefill_logits(&file, &r.tokens, batch, threads)];
            let err = max_rel_err(&got, want);
            assert!(
                err < bound,
                "{family} {dtype} batch {batch} threads {threads}: relative error {err:.2e}"
            );
        }
    }
}

/// The rows4 layout holds the same numbers as planar rows: with the scalar
/// table both give the same logits bit for bit (step by step and through
/// a batched prefill split across two threads); with this CPU's table
/// only float order differs (the bound of the batched products above).
fn rows4_layout_matches_planar(family: &str) {
    let r = reference(family);
    for dtype in [DType::Q4, DType::Q8] {
        let planar = convert(family, "f32", dtype);
        let rows4 = convert_in(family, "f32", dtype, Layout::Rows4);
        let model = Model::open(SliceStorage::new(&rows4)).unwrap();
        let packed = (0..model.tensor_count())
            .filter(|&i| model.record(i).unwrap().layout == Layout::Rows4)
            .count();
        assert!(
            packed > 0,
            "{family} {dtype}: no tensor was written in rows4"
        );
        for threads in [1, 2] {
            let want = prefill_logits_with(&planar, &r.tokens, 5, threads, true);
            let got = prefill_logits_with(&rows4, &r.tokens, 5, threads, true);
            assert_eq!(
                got, want,
                "{family} {dtype} threads {threads}, scalar table"
            );
            let fast = prefill_logits(&rows4, &r.tokens, 5, threads);
            let err = max_rel_err(&[fast], &[want]);
            assert!(err < 2e-2, "{family} {dtype} threads {threads}: {err:.2e}");
        }
        let steps = max_rel_err(
            &all_logits(&rows4, &r.tokens),
            &all_logits(&planar, &r.tokens),
        );
        assert!(steps < 2e-2, "{family} {dtype} step by step: {steps:.2e}");
    }
}

macro_rules! family {
    ($module:ident, $family:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn f32_checkpoint_matches_transformers_and_its_greedy_tokens() {
                f32_matches_transformers($family);
            }

            #[test]
            fn bf16_sharded_checkpoint_matches_its_reference() {
                bf16_matches_its_reference($family);
            }

            #[test]
            fn f16_within_1e_2() {
                super::f16_within_1e_2($family);
            }

            #[test]
            fn kv_cache_in_f16_and_q8_stays_close_to_f32() {
                kv_cache_types_stay_close_to_f32($family);
            }

            #[test]
            fn int8_kl_is_bounded_by_the_simulation() {
                quantized($family, DType::Q8, "int8", 3.0, 1e-4);
            }

            #[test]
            fn int4_kl_is_bounded_by_the_simulation() {
                quantized($family, DType::Q4, "int4", 1.5, 1e-3);
            }

            #[test]
            fn batched_prefill_matches_step_by_step() {
                batched_prefill_matches_steps($family);
            }

            #[test]
            fn rows4_layout_matches_planar() {
                super::rows4_layout_matches_planar($family);
            }

            #[test]
            fn batched_products_match_the_scalar_table() {
                super::batched_products_match_the_scalar_table($family);
            }
        }
    };
}

family!(mixtral, "mixtral-tiny");
family!(qwen3_moe, "qwen3moe-tiny");
family!(olmoe, "olmoe-tiny");
family!(granite_moe, "granitemoe-tiny");
family!(llama, "llama-tiny");
family!(qwen2_moe, "qwen2moe-tiny");
family!(hunyuan_moe, "hunyuanmoe-tiny");
family!(granite_moe_shared, "granitemoeshared-tiny");
family!(phimoe, "phimoe-tiny");
family!(deepseek_v2, "deepseekv2-tiny");
family!(deepseek_v3, "deepseekv3-tiny");
family!(gpt_oss, "gptoss-tiny");

/// Per-position logits of another checkpoint variant, stored in the
/// family's reference.json under `key`.
fn extra_logits(family: &str, key: &str) -> Vec<Vec<f32>> {
    let path = mote_tests::fixture(family).join("reference.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(json[key].clone()).unwrap()
}

/// gpt-oss's hub checkpoints ship MXFP4 experts (`*_blocks`, `*_scales`):
/// they are converted as they are (17 bytes per 32 weights), never
/// dequantized and re-quantized, and give the logits transformers computes
/// from the dequantized experts, up to the int8 quantization of the
/// activations the MXFP4 kernel multiplies them with.
#[test]
fn gpt_oss_mxfp4_experts_are_kept_as_shipped() {
    let r = reference("gptoss-tiny");
    let want = extra_logits("gptoss-tiny", "logits_mxfp4");
    let file = convert("gptoss-tiny", "mxfp4", DType::F32);
    let model = Model::open(SliceStorage::new(&file)).unwrap();
    for i in 0..model.tensor_count() {
        let rec = model.record(i).unwrap();
        let mxfp4 = rec.dtype == DType::Mxfp4;
        assert_eq!(mxfp4, rec.id.kind.is_expert(), "{}", rec.id);
        if mxfp4 {
            assert_eq!(rec.length, rec.rows as u64 * rec.cols as u64 / 32 * 17);
        }
    }
    // The fixture's blocks were made from the f32 weights by OCP's rule,
    // which our MXFP4 quantizer follows: the bytes must be identical.
    let requantized = convert("gptoss-tiny", "f32", DType::Mxfp4);
    let other = Model::open(SliceStorage::new(&requantized)).unwrap();
    for i in 0..model.tensor_count() {
        let (a, b) = (model.record(i).unwrap(), other.record(i).unwrap());
        if a.id.kind.is_expert() {
            let bytes = |f: &[u8], rec: &mote::format::tensor::TensorRecord| {
                f[rec.offset as usize..][..rec.length as usize].to_vec()
            };
            assert!(bytes(&file, &a) == bytes(&requantized, &b), "{}", a.id);
        }
    }
    // The dequantized MXFP4 model moves gpt-oss-tiny's knife-edge routing
    // (23 of 92 expert choices differ from f32 in transformers); int8
    // activations move it a little further, a quarter of that at most.
    let logits = all_logits(&file, &r.tokens);
    let kl = mean_kl(&want, &logits);
    let quantization = mean_kl(&r.logits_f32, &want);
    let top1 = top1_agreement(&want, &logits);
    println!(
        "gptoss-tiny mxfp4: mean KL vs transformers' MXFP4 model {kl:.3e} (MXFP4 vs f32 in transformers: {quantization:.3e}); top-1 {top1:.3}"
    );
    assert!(
        kl < 0.25 * quantization,
        "mxfp4: mean KL {kl:.3e} against transformers' MXFP4 logits"
    );
}

/// DeepSeek-V3, R1 and Kimi K2 ship block-scaled FP8 (`float8_e4m3fn`
/// weights, a `*_scale_inv` per 128 × 128 block; the fixture uses 32 × 32
/// so that edge blocks are partial): dequantized on conversion, they give
/// the logits of the dequantized model.
#[test]
fn deepseek_v3_fp8_checkpoint_matches_its_dequantized_model() {
    let r = reference("deepseekv3-tiny");
    let want = extra_logits("deepseekv3-tiny", "logits_fp8");
    let file = convert("deepseekv3-tiny", "fp8", DType::F32);
    let err = max_rel_err(&all_logits(&file, &r.tokens), &want);
    println!("deepseekv3-tiny fp8 -> f32: max relative error {err:.2e}");
    assert!(err < 1e-4, "fp8: relative error {err:.3e} exceeds 1e-4");
}

/// gpt-oss's sliding layers keep a ring of window + batch − 1 positions:
/// stepping one token at a time (4 slots for the fixture's window of 4,
/// over a 23-token sequence) reproduces transformers at every position.
#[test]
fn gpt_oss_sliding_layers_keep_only_their_window() {
    let r = reference("gptoss-tiny");
    let file = convert("gptoss-tiny", "f32", DType::F32);
    let model = Model::open(SliceStorage::new(&file)).unwrap();
    let context = r.tokens.len();
    let limits = Limits {
        max_context: context as u32,
        prefill_batch: 1,
        kv_cache: KvCacheType::F32,
        ..Limits::default()
    };
    let plan = Plan::new(&model, &limits).unwrap();
    // Layers 1 and 3 attend fully, 0 and 2 slide.
    assert_eq!(plan.buffers.cache_positions, 2 * context + 2 * 4);
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena).unwrap();
    let logits: Vec<Vec<f32>> = r
        .tokens
        .iter()
        .map(|&t| session.step(t).unwrap().to_vec())
        .collect();
    let err = max_rel_err(&logits, &r.logits_f32);
    println!("gptoss-tiny, 4-slot rings: max relative error {err:.2e}");
    assert!(err < 1e-4, "ring cache: relative error {err:.3e}");
}
