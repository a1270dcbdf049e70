//! GGUF metadata (`{arch}.*` keys) → the `config.json` a Hugging Face
//! checkpoint of the same model would have, so that one parser
//! (`hf_config`) checks every model whatever file it came in; then the
//! pieces config.json cannot say (rope factors stored as a tensor).
//!
//! llama.cpp's architecture names map to transformers' classes; `llama`
//! with experts is Mixtral's form. A family whose GGUF conventions are not
//! implemented here yet is an error naming it, never a guess.

use mote::{ModelConfig, RopeScaling};
use serde_json::{json, Map, Value as Json};

use super::{gguf_err, Gguf, Value};
use crate::error::QuantizeError;

/// llama.cpp architecture names imported from GGUF.
pub const IMPORTED_ARCHITECTURES: &[&str] = &[
    "llama",
    "qwen2moe",
    "qwen3moe",
    "olmoe",
    "granitemoe",
    "deepseek2",
    "hunyuan-moe",
    "gpt-oss",
];

/// How mote reads a family's GGUF tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// True when the converter permuted Q and K rows for interleaved rope
    /// (llama.cpp's "NORM" rope on a model trained with rotate-half).
    pub permuted_qk: bool,
}

/// The file's `general.architecture`.
pub fn architecture(g: &Gguf) -> Result<&str, QuantizeError> {
    g.get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| gguf_err(&g.paths[0], 0, "no general.architecture".into()))
}

/// Reads the model's config from the metadata (and `rope_freqs`).
pub fn read(g: &Gguf, warnings: &mut Vec<String>) -> Result<(ModelConfig, Family), QuantizeError> {
    let arch = architecture(g)?.to_string();
    let path = &g.paths[0];
    let err = |message: String| gguf_err(path, 0, message);
    let key = |k: &str| format!("{arch}.{k}");
    let u = |k: &str| g.get(&key(k)).and_then(Value::as_u64);
    let f = |k: &str| g.get(&key(k)).and_then(Value::as_f64);
    let need = |k: &str| u(k).ok_or_else(|| err(format!("missing or non-integer {}", key(k))));

    let experts = u("expert_count").unwrap_or(0);
    let class = match (arch.as_str(), experts > 0) {
        ("llama", false) => "LlamaForCausalLM",
        ("llama", true) => "MixtralForCausalLM",
        ("qwen2moe", _) => "Qwen2MoeForCausalLM",
        ("qwen3moe", _) => "Qwen3MoeForCausalLM",
        ("olmoe", _) => "OlmoeForCausalLM",
        ("granitemoe", _) if u("expert_shared_feed_forward_length").is_some_and(|n| n > 0) => {
            "GraniteMoeSharedForCausalLM"
        }
        ("granitemoe", _) => "GraniteMoeForCausalLM",
        ("deepseek2", _) if u("expert_gating_func") == Some(2) => "DeepseekV3ForCausalLM",
        ("deepseek2", _) => "DeepseekV2ForCausalLM",
        ("hunyuan-moe", _) => "HunYuanMoEV1ForCausalLM",
        ("gpt-oss", _) => "GptOssForCausalLM",
        (other, _) => {
            return Err(err(format!(
                "GGUF architecture {other:?} is not imported yet (from GGUF mote imports {}); convert the Hugging Face checkpoint instead",
                IMPORTED_ARCHITECTURES.join(", ")
            )))
        }
    };
    let embd = g
        .tensors
        .get("token_embd.weight")
        .ok_or_else(|| err("no token_embd.weight tensor".into()))?;
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let mut c = Map::new();
    c.insert("architectures".into(), json!([class]));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert(
        "vocab_size".into(),
        json!(u("vocab_size").unwrap_or(embd.rows())),
    );
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("num_hidden_layers".into(), json!(need("block_count")?));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert(
        "num_key_value_heads".into(),
        json!(u("attention.head_count_kv").unwrap_or(heads)),
    );
    let mla = arch == "deepseek2";
    if mla {
        deepseek2(&mut c, &u, &f, &key, &err)?;
    } else if let Some(d) = u("attention.key_length") {
        if u("attention.value_length").is_some_and(|v| v != d) {
            return Err(err(format!(
                "{} differs from {} (mote's heads have one width)",
                key("attention.value_length"),
                key("attention.key_length")
            )));
        }
        c.insert("head_dim".into(), json!(d));
    }
    if let Some(r) = u("rope.dimension_count").filter(|_| !mla) {
        let d = u("attention.key_length").unwrap_or(hidden / heads.max(1));
        if r != d {
            return Err(err(format!(
                "{} is {r}, the head width {d}: partial rope is not supported",
                key("rope.dimension_count")
            )));
        }
    }
    c.insert(
        "rms_norm_eps".into(),
        json!(
            f("attention.layer_norm_rms_epsilon").ok_or_else(|| err(format!(
                "missing {}",
                key("attention.layer_norm_rms_epsilon")
            )))?
        ),
    );
    c.insert(
        "rope_theta".into(),
        json!(f("rope.freq_base").unwrap_or(10_000.0)),
    );
    c.insert(
        "max_position_embeddings".into(),
        json!(u("context_length").unwrap_or(4096)),
    );
    let ffn = u("feed_forward_length").unwrap_or(0);
    c.insert("intermediate_size".into(), json!(ffn));
    if experts > 0 {
        let used = need("expert_used_count")?;
        c.insert("num_experts".into(), json!(experts));
        c.insert("num_local_experts".into(), json!(experts));
        c.insert("num_experts_per_tok".into(), json!(used));
        // Mixtral's GGUF keeps the experts' width in feed_forward_length.
        c.insert(
            "moe_intermediate_size".into(),
            json!(u("expert_feed_forward_length").unwrap_or(ffn)),
        );
        if let Some(s) = u("expert_shared_feed_forward_length") {
            c.insert("shared_expert_intermediate_size".into(), json!(s));
            c.insert("shared_intermediate_size".into(), json!(s));
        }
        // llama.cpp's graphs: Qwen3-MoE renormalises the chosen experts'
        // weights, Qwen2-MoE and OLMoE do not (Mixtral always does).
        let norm = match arch.as_str() {
            "qwen3moe" => g
                .get(&key("expert_weights_norm"))
                .and_then(Value::as_bool)
                .unwrap_or(true),
            _ => g
                .get(&key("expert_weights_norm"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        c.insert("norm_topk_prob".into(), json!(norm));
    }
    // Granite's scales.
    for (k, hf) in [
        ("embedding_scale", "embedding_multiplier"),
        ("residual_scale", "residual_multiplier"),
        ("logit_scale", "logits_scaling"),
        ("attention.scale", "attention_multiplier"),
    ] {
        if let Some(v) = f(k) {
            c.insert(hf.into(), json!(v));
        }
    }
    c.insert(
        "tie_word_embeddings".into(),
        json!(!g.tensors.contains_key("output.weight")),
    );
    if let Some(b) = g.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64) {
        c.insert("bos_token_id".into(), json!(b));
    }
    if let Some(e) = g.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64) {
        c.insert("eos_token_id".into(), json!(e));
    }
    match g.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => {}
        Some("linear") => {
            if let Some(factor) = f("rope.scaling.factor").filter(|&x| x != 0.0 && x != 1.0) {
                c.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "linear", "factor": factor}),
                );
            }
        }
        Some("yarn") => {
            let mut y = json!({
                "rope_type": "yarn",
                "factor": f("rope.scaling.factor").ok_or_else(|| err(format!("yarn without {}", key("rope.scaling.factor"))))?,
                "original_max_position_embeddings": u("rope.scaling.original_context_length").or(u("context_length")),
            });
            for (k, hf) in [
                ("rope.scaling.yarn_beta_fast", "beta_fast"),
                ("rope.scaling.yarn_beta_slow", "beta_slow"),
            ] {
                if let Some(v) = f(k) {
                    y[hf] = json!(v);
                }
            }
            if let Some(a) = f("rope.scaling.attn_factor") {
                y["attention_factor"] = json!(a);
            }
            c.insert("rope_scaling".into(), y);
        }
        Some(other) => {
            return Err(err(format!(
                "{} {other:?} is not supported",
                key("rope.scaling.type")
            )))
        }
    }
    if arch == "hunyuan-moe" {
        // transformers' Hunyuan: one intermediate_size for the experts and
        // the shared MLP, moe_topk for the experts chosen.
        let e = u("expert_feed_forward_length").unwrap_or(ffn);
        if u("expert_shared_feed_forward_length").is_some_and(|s| s != e) {
            return Err(err(format!(
                "{} differs from {} (mote's Hunyuan sizes its shared MLP like an expert)",
                key("expert_shared_feed_forward_length"),
                key("expert_feed_forward_length")
            )));
        }
        c.insert("intermediate_size".into(), json!(e));
        c.insert("moe_topk".into(), json!(need("expert_used_count")?));
    }
    if arch == "gpt-oss" {
        // llama.cpp's gpt-oss graph: biases everywhere, every other layer
        // (from the first) sliding, the SwiGLU clamped at 7.
        c.insert("attention_bias".into(), json!(true));
        if let Some(w) = u("attention.sliding_window") {
            c.insert("sliding_window".into(), json!(w));
        }
        c.insert(
            "intermediate_size".into(),
            json!(u("expert_feed_forward_length").unwrap_or(ffn)),
        );
        // gpt-oss's yarn keeps the correction range unrounded.
        if let Some(y) = c.get_mut("rope_scaling").and_then(Json::as_object_mut) {
            y.insert("truncate".into(), json!(false));
        }
    }
    if mla {
        // DeepSeek's yarn keeps its mscale as 0.1·mscale_all_dim.
        if let Some(y) = c.get_mut("rope_scaling").and_then(Json::as_object_mut) {
            let m = f("rope.scaling.yarn_log_multiplier").map_or(0.0, |v| v / 0.1);
            y.insert("mscale".into(), json!(m));
            y.insert("mscale_all_dim".into(), json!(m));
        }
    }
    let json = Json::Object(c);
    let mut config = crate::hf_config::config_from_json(path, &json, warnings)?;

    // Llama 3's frequency-dependent rope is a tensor of divisors in GGUF.
    if let Some(t) = g.tensors.get("rope_freqs.weight") {
        let half = config.head_dim as usize / 2;
        if t.ne != [half as u64]
            || t.ggml_type != super::GgmlType::F32
            || half > mote::format::config::MAX_ROPE_FACTORS
        {
            return Err(gguf_err(
                &g.paths[t.file],
                t.offset,
                format!(
                    "rope_freqs.weight: expected {half} F32 values, found {:?} {}",
                    t.ne, t.ggml_type
                ),
            ));
        }
        let mut raw = vec![0u8; 4 * half];
        g.read(t, 0, &mut raw)?;
        let factors: heapless::Vec<f32, { mote::format::config::MAX_ROPE_FACTORS }> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if factors.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(gguf_err(
                &g.paths[t.file],
                t.offset,
                "rope_freqs.weight holds a non-positive or non-finite divisor".into(),
            ));
        }
        // Per-frequency divisors with no mscale, for any context length.
        config.rope_scaling = RopeScaling::LongRope {
            original_max_position: u32::MAX,
            short_mscale: 1.0,
            long_mscale: 1.0,
        };
        config.rope_short_factor = factors.clone();
        config.rope_long_factor = factors;
    }
    let family = Family {
        permuted_qk: arch == "llama" || arch == "granitemoe",
    };
    Ok((config, family))
}

/// DeepSeek-V2/V3's latent attention and routing keys in config.json
/// terms. Files from before llama.cpp split `attn_kv_b` keep the head
/// widths in `key_length` / `value_length`; newer ones in the `_mla` keys.
fn deepseek2(
    c: &mut Map<String, Json>,
    u: &dyn Fn(&str) -> Option<u64>,
    f: &dyn Fn(&str) -> Option<f64>,
    key: &dyn Fn(&str) -> String,
    err: &dyn Fn(String) -> QuantizeError,
) -> Result<(), QuantizeError> {
    let need = |k: &str| u(k).ok_or_else(|| err(format!("missing {}", key(k))));
    let rope = need("rope.dimension_count")?;
    let (k_width, v_width) = match (
        u("attention.key_length_mla"),
        u("attention.value_length_mla"),
    ) {
        (Some(k), Some(v)) if k > 0 && v > 0 => (k, v),
        _ => (
            need("attention.key_length")?,
            need("attention.value_length")?,
        ),
    };
    let nope = k_width.checked_sub(rope).ok_or_else(|| {
        err(format!(
            "head width {k_width} is less than the rope width {rope}"
        ))
    })?;
    c.insert("qk_rope_head_dim".into(), json!(rope));
    c.insert("qk_nope_head_dim".into(), json!(nope));
    c.insert("v_head_dim".into(), json!(v_width));
    c.insert(
        "kv_lora_rank".into(),
        json!(need("attention.kv_lora_rank")?),
    );
    if let Some(q) = u("attention.q_lora_rank").filter(|&q| q > 0) {
        c.insert("q_lora_rank".into(), json!(q));
    }
    c.insert(
        "n_routed_experts".into(),
        json!(u("expert_count").unwrap_or(0)),
    );
    c.insert(
        "n_shared_experts".into(),
        json!(u("expert_shared_count").unwrap_or(0)),
    );
    c.insert(
        "first_k_dense_replace".into(),
        json!(u("leading_dense_block_count").unwrap_or(0)),
    );
    c.insert(
        "routed_scaling_factor".into(),
        json!(f("expert_weights_scale").unwrap_or(1.0)),
    );
    let sigmoid = u("expert_gating_func") == Some(2);
    c.insert(
        "scoring_func".into(),
        json!(if sigmoid { "sigmoid" } else { "softmax" }),
    );
    let groups = u("expert_group_count").unwrap_or(1);
    c.insert("n_group".into(), json!(groups));
    c.insert(
        "topk_group".into(),
        json!(u("expert_group_used_count").unwrap_or(1)),
    );
    let method = match (sigmoid, groups > 1) {
        (true, _) => "noaux_tc",
        (false, true) => "group_limited_greedy",
        (false, false) => "greedy",
    };
    c.insert("topk_method".into(), json!(method));
    Ok(())
}
