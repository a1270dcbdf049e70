//! `config.json` → [`ModelConfig`]: accepts the hub's older layout
//! (`rope_theta`, `rope_scaling` at top level) and transformers 5's
//! (`rope_parameters`).

use std::path::Path;

use mote::format::config::{Mla, MAX_EOS_TOKENS, MAX_ROPE_FACTORS};
use mote::{Architecture, ModelConfig, RopeScaling};
use serde_json::Value;

use crate::error::{io, QuantizeError};

/// The `architectures` values this build converts.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "MixtralForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "OlmoeForCausalLM",
    "GraniteMoeForCausalLM",
    "GraniteMoeSharedForCausalLM",
    "HunYuanMoEV1ForCausalLM",
    "PhimoeForCausalLM",
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "GptOssForCausalLM",
    "LlamaForCausalLM",
];

struct Fields<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Fields<'_> {
    fn err(&self, message: String) -> QuantizeError {
        QuantizeError::Config {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn u32(&self, key: &str) -> Result<u32, QuantizeError> {
        self.opt_u32(key)?
            .ok_or_else(|| self.err(format!("missing field \"{key}\"")))
    }

    /// A per-layer setting given as one integer or a list of equal ones
    /// (Hunyuan's `num_experts`, `moe_topk`).
    fn same_per_layer(&self, key: &str) -> Result<u32, QuantizeError> {
        match self.get(key) {
            Some(Value::Array(a)) => {
                let first = a.first().and_then(Value::as_u64);
                match first {
                    Some(v) if a.iter().all(|x| x.as_u64() == Some(v)) => {
                        u32::try_from(v).map_err(|_| self.err(format!("{key} is too large")))
                    }
                    _ => Err(self.err(format!(
                        "{key} differs between layers; mote needs one value for every layer"
                    ))),
                }
            }
            _ => self.u32(key),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, QuantizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(format!(
                        "field \"{key}\" must be a non-negative integer, found {v}"
                    ))
                }),
        }
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, QuantizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|v| Some(v as f32))
                .ok_or_else(|| self.err(format!("field \"{key}\" must be a number, found {v}"))),
        }
    }
}

/// `dir/config.json`'s path and parsed contents.
fn config_json(dir: &Path) -> Result<(std::path::PathBuf, Value), QuantizeError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let json = serde_json::from_str(&text).map_err(|source| QuantizeError::Json {
        path: path.clone(),
        source,
    })?;
    Ok((path, json))
}

/// Reads and checks `dir/config.json`. Warnings about settings that do not
/// change the computation mote does are pushed to `warnings`.
pub fn read_config(dir: &Path, warnings: &mut Vec<String>) -> Result<ModelConfig, QuantizeError> {
    let (path, json) = config_json(dir)?;
    config_from_json(&path, &json, warnings)
}

/// Checks a `config.json` value (read from `path`, named in errors).
pub(crate) fn config_from_json(
    path: &Path,
    json: &Value,
    warnings: &mut Vec<String>,
) -> Result<ModelConfig, QuantizeError> {
    let f = Fields { path, json };

    let arch_name = json
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            json.get("model_type")
                .and_then(Value::as_str)
                .map(|t| format!("model_type {t}"))
        })
        .unwrap_or_else(|| "none given".to_string());
    let architecture = match arch_name.as_str() {
        "MixtralForCausalLM" | "model_type mixtral" => Architecture::Mixtral,
        "Qwen3MoeForCausalLM" | "model_type qwen3_moe" => Architecture::Qwen3Moe,
        "OlmoeForCausalLM" | "model_type olmoe" => Architecture::Olmoe,
        "GraniteMoeForCausalLM" | "model_type granitemoe" => Architecture::GraniteMoe,
        "LlamaForCausalLM" | "model_type llama" => Architecture::Llama,
        "Qwen2MoeForCausalLM" | "model_type qwen2_moe" => Architecture::Qwen2Moe,
        "HunYuanMoEV1ForCausalLM" | "model_type hunyuan_v1_moe" => Architecture::HunyuanMoe,
        "PhimoeForCausalLM" | "PhiMoEForCausalLM" | "model_type phimoe" => Architecture::PhiMoe,
        "DeepseekV2ForCausalLM" | "model_type deepseek_v2" => Architecture::DeepseekV2,
        "GptOssForCausalLM" | "model_type gpt_oss" => Architecture::GptOss,
        // Kimi K2 is DeepSeek-V3's layout under its own model_type.
        "DeepseekV3ForCausalLM" | "model_type deepseek_v3" | "model_type kimi_k2" => {
            Architecture::DeepseekV3
        }
        // Without a shared MLP it is plain Granite MoE.
        "GraniteMoeSharedForCausalLM" | "model_type granitemoeshared" => {
            match f.opt_u32("shared_intermediate_size")? {
                Some(n) if n > 0 => Architecture::GraniteMoeShared,
                _ => Architecture::GraniteMoe,
            }
        }
        _ => {
            return Err(QuantizeError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: arch_name,
                supported: SUPPORTED_ARCHITECTURES,
            })
        }
    };

    source_quantization(&f, architecture)?;
    if let Some(act) = f.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(f.err(format!(
                "hidden_act {act:?} is not supported (mote runs silu experts)"
            )));
        }
    }
    let hidden_size = f.u32("hidden_size")?;
    let n_heads = f.u32("num_attention_heads")?;
    let mla = match architecture.latent_attention() {
        true => Some(Mla {
            q_lora_rank: f.opt_u32("q_lora_rank")?.unwrap_or(0),
            kv_lora_rank: f.u32("kv_lora_rank")?,
            qk_nope_dim: f.u32("qk_nope_head_dim")?,
            qk_rope_dim: f.u32("qk_rope_head_dim")?,
            v_head_dim: f.u32("v_head_dim")?,
        }),
        false => None,
    };
    // MLA expands keys and values for every head; its `head_dim` key (if
    // any) names the rope part, so the query/key width is computed.
    let n_kv_heads = match mla {
        Some(_) => n_heads,
        None => f.opt_u32("num_key_value_heads")?.unwrap_or(n_heads),
    };
    let head_dim = match (mla, f.opt_u32("head_dim")?) {
        (Some(m), _) => m.qk_nope_dim + m.qk_rope_dim,
        (None, Some(d)) => d,
        (None, None) if n_heads > 0 && hidden_size % n_heads == 0 => hidden_size / n_heads,
        (None, None) => {
            return Err(f.err(
                "hidden_size is not a multiple of num_attention_heads and no head_dim".into(),
            ))
        }
    };

    // Rope: transformers 5 nests it in rope_parameters; older configs keep
    // rope_theta and rope_scaling at top level.
    let rope_params = f.get("rope_parameters").filter(|v| v.is_object());
    let rope_scaling_obj = rope_params.or_else(|| f.get("rope_scaling").filter(|v| v.is_object()));
    let mut rope_theta = match rope_params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
    {
        Some(t) => t as f32,
        None => f.opt_f32("rope_theta")?.unwrap_or(1e6),
    };
    // DeepSeek's softmax scale grows with YaRN's mscale_all_dim.
    let mut attention_multiplier = f.opt_f32("attention_multiplier")?;
    let mut rope_short_factor = heapless::Vec::new();
    let mut rope_long_factor = heapless::Vec::new();
    let rope_scaling = match rope_scaling_obj {
        None => RopeScaling::None,
        Some(obj) => {
            let kind = obj
                .get("rope_type")
                .or_else(|| obj.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            match kind {
                "default" => RopeScaling::None,
                // Hunyuan's fixed-alpha NTK rope (labelled "dynamic"):
                // just a larger base, theta · alpha^(d / (d - 2)).
                "dynamic" if architecture == Architecture::HunyuanMoe && obj.get("alpha").is_some() => {
                    let alpha = obj.get("alpha").and_then(Value::as_f64).filter(|a| *a > 0.0);
                    let alpha = alpha.ok_or_else(|| f.err("rope alpha must be a positive number".into()))?;
                    let d = head_dim as f64;
                    rope_theta = (rope_theta as f64 * alpha.powf(d / (d - 2.0))) as f32;
                    RopeScaling::None
                }
                "linear" => {
                    let factor = obj.get("factor").and_then(Value::as_f64).ok_or_else(|| {
                        f.err("linear rope scaling needs a numeric \"factor\"".into())
                    })?;
                    RopeScaling::Linear { factor: factor as f32 }
                }
                "llama3" => {
                    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
                    let (Some(factor), Some(low), Some(high), Some(original)) = (
                        num("factor"),
                        num("low_freq_factor"),
                        num("high_freq_factor"),
                        num("original_max_position_embeddings"),
                    ) else {
                        return Err(f.err(
                            "llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and \
                             original_max_position_embeddings"
                                .into(),
                        ));
                    };
                    RopeScaling::Llama3 {
                        factor: factor as f32,
                        low_freq_factor: low as f32,
                        high_freq_factor: high as f32,
                        original_max_position: original as u32,
                    }
                }
                "longrope" | "su" => {
                    let factors = |k: &str| -> Result<heapless::Vec<f32, MAX_ROPE_FACTORS>, QuantizeError> {
                        let list = obj.get(k).and_then(Value::as_array).ok_or_else(|| {
                            f.err(format!("longrope scaling needs a \"{k}\" list"))
                        })?;
                        let mut out = heapless::Vec::new();
                        for v in list {
                            let v = v.as_f64().ok_or_else(|| f.err(format!("{k} holds a non-number")))?;
                            out.push(v as f32)
                                .map_err(|_| f.err(format!("{k} has more than {MAX_ROPE_FACTORS} values")))?;
                        }
                        if out.len() != head_dim as usize / 2 {
                            return Err(f.err(format!(
                                "{k} has {} values; head_dim {head_dim} needs {}",
                                out.len(),
                                head_dim / 2
                            )));
                        }
                        Ok(out)
                    };
                    rope_short_factor = factors("short_factor")?;
                    rope_long_factor = factors("long_factor")?;
                    let num = |k: &str| obj.get(k).and_then(Value::as_f64).map(|v| v as f32);
                    let original = obj
                        .get("original_max_position_embeddings")
                        .or_else(|| f.get("original_max_position_embeddings"))
                        .and_then(Value::as_u64)
                        .ok_or_else(|| f.err("longrope scaling needs original_max_position_embeddings".into()))?;
                    let (Some(short_mscale), Some(long_mscale)) = (num("short_mscale"), num("long_mscale")) else {
                        return Err(f.err("longrope scaling needs short_mscale and long_mscale".into()));
                    };
                    RopeScaling::LongRope {
                        original_max_position: original as u32,
                        short_mscale,
                        long_mscale,
                    }
                }
                "yarn" => {
                    let (scaling, softmax_scale) = yarn(&f, obj)?;
                    if let (Some(s), Some(m)) = (softmax_scale, mla) {
                        let qk = (m.qk_nope_dim + m.qk_rope_dim) as f32;
                        attention_multiplier = Some(s / qk.sqrt());
                    }
                    scaling
                }
                other => {
                    return Err(f.err(format!(
                        "rope scaling type {other:?} is not supported for this architecture (supported: default, linear, llama3, longrope, yarn)"
                    )))
                }
            }
        }
    };
    let windowed = f
        .get("use_sliding_window")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let windows_followed = architecture == Architecture::GptOss;
    if let Some(w) = f
        .opt_u32("sliding_window")?
        .filter(|&w| w > 0 && windowed && !windows_followed)
    {
        warnings.push(format!(
            "config.json sets sliding_window {w}: mote attends over the whole context, which matches \
             transformers only for contexts up to {w} tokens"
        ));
    }

    let mut eos_token_ids = heapless::Vec::<u32, MAX_EOS_TOKENS>::new();
    match f.get("eos_token_id") {
        None => {}
        Some(Value::Array(ids)) => {
            for id in ids {
                let id = id.as_u64().and_then(|v| u32::try_from(v).ok());
                let id = id.ok_or_else(|| f.err("eos_token_id entries must be integers".into()))?;
                eos_token_ids.push(id).map_err(|_| {
                    f.err(format!("more than {MAX_EOS_TOKENS} eos_token_id values"))
                })?;
            }
        }
        Some(_) => {
            let _ = eos_token_ids.push(f.u32("eos_token_id")?);
        }
    }

    // The families name their MoE fields differently. transformers 5
    // writes `num_local_experts` for every family; the hub's Qwen3-MoE and
    // OLMoE configs say `num_experts`.
    let n_experts = match (architecture, f.opt_u32("num_local_experts")?) {
        (Architecture::Llama, _) => 1,
        (Architecture::DeepseekV2 | Architecture::DeepseekV3, _) => f.u32("n_routed_experts")?,
        (Architecture::HunyuanMoe, _) => f.same_per_layer("num_experts")?,
        (_, Some(n)) => n,
        (_, None) => f.u32("num_experts")?,
    };
    let n_experts_per_token = match architecture {
        Architecture::Llama => 1,
        Architecture::HunyuanMoe => f.same_per_layer("moe_topk")?,
        // gpt-oss's hub config also says `experts_per_token`.
        Architecture::GptOss if f.get("num_experts_per_tok").is_none() => {
            f.u32("experts_per_token")?
        }
        _ => f.u32("num_experts_per_tok")?,
    };
    if architecture == Architecture::PhiMoe {
        for key in ["attention_bias", "lm_head_bias"] {
            if f.get(key).and_then(Value::as_bool) != Some(true) {
                return Err(f.err(format!(
                    "Phi-MoE without {key} is not supported (Phi-3.5-MoE has both biases)"
                )));
            }
        }
    }
    if architecture == Architecture::HunyuanMoe
        && f.get("attention_bias").and_then(Value::as_bool) == Some(true)
    {
        return Err(f.err("attention_bias true is not supported for Hunyuan yet".into()));
    }
    let (expert_ffn_size, norm_topk_prob) = match architecture {
        Architecture::Mixtral
        | Architecture::GraniteMoe
        | Architecture::GraniteMoeShared
        | Architecture::Llama
        | Architecture::HunyuanMoe
        // gpt-oss: softmax over the top-k logits, i.e. renormalised.
        | Architecture::GptOss => (f.u32("intermediate_size")?, true),
        // Sparsemixer weights are never renormalised.
        Architecture::PhiMoe => (f.u32("intermediate_size")?, false),
        // transformers' DeepSeek-V2 never renormalises (it ignores
        // norm_topk_prob); V3 does by default.
        Architecture::DeepseekV2 => {
            if f.get("norm_topk_prob").and_then(Value::as_bool) == Some(true) {
                warnings.push(
                    "norm_topk_prob is true: transformers' DeepSeek-V2 ignores it, and so does mote".into(),
                );
            }
            (f.u32("moe_intermediate_size")?, false)
        }
        Architecture::DeepseekV3 => {
            let norm = f
                .get("norm_topk_prob")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            (f.u32("moe_intermediate_size")?, norm)
        }
        Architecture::Qwen3Moe | Architecture::Qwen2Moe => {
            let step = f.opt_u32("decoder_sparse_step")?.unwrap_or(1);
            let dense = f
                .get("mlp_only_layers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if step != 1 || dense {
                return Err(f.err(
                    "dense MLP layers (decoder_sparse_step != 1 or mlp_only_layers) are not supported yet".into(),
                ));
            }
            let norm = f
                .get("norm_topk_prob")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (f.u32("moe_intermediate_size")?, norm)
        }
        _ => {
            let norm = f
                .get("norm_topk_prob")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (f.u32("intermediate_size")?, norm)
        }
    };
    let config = ModelConfig {
        architecture,
        vocab_size: f.u32("vocab_size")?,
        hidden_size,
        n_layers: f.u32("num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        head_dim,
        expert_ffn_size,
        n_experts,
        n_experts_per_token,
        norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        max_position: f.opt_u32("max_position_embeddings")?.unwrap_or(4096),
        bos_token_id: f.opt_u32("bos_token_id")?,
        eos_token_ids,
        tied_embeddings: f
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        norm_topk_prob,
        clip_qkv: f.opt_f32("clip_qkv")?,
        embedding_multiplier: f.opt_f32("embedding_multiplier")?.unwrap_or(1.0),
        residual_multiplier: f.opt_f32("residual_multiplier")?.unwrap_or(1.0),
        attention_multiplier,
        logits_scaling: f.opt_f32("logits_scaling")?.unwrap_or(1.0),
        shared_expert_ffn_size: match architecture {
            Architecture::Qwen2Moe => f.u32("shared_expert_intermediate_size")?,
            // transformers' Hunyuan sizes its shared MLP like the experts.
            Architecture::HunyuanMoe => f.u32("intermediate_size")?,
            Architecture::GraniteMoeShared => f.u32("shared_intermediate_size")?,
            // DeepSeek's shared experts form one MLP n_shared_experts wide.
            Architecture::DeepseekV2 | Architecture::DeepseekV3 => {
                f.opt_u32("n_shared_experts")?.unwrap_or(0) * expert_ffn_size
            }
            _ => 0,
        },
        router_jitter: match architecture {
            Architecture::PhiMoe => f.opt_f32("router_jitter_noise")?.unwrap_or(0.01),
            _ => 0.0,
        },
        rope_short_factor,
        rope_long_factor,
        mla,
        rope_interleaved: false,
        expert_groups: 1,
        topk_groups: 1,
        routed_scaling_factor: 1.0,
        first_dense_layers: 0,
        dense_ffn_size: 0,
        sliding_window: 0,
        sliding_period: 0,
        swiglu_limit: 0.0,
        swiglu_alpha: 0.0,
    };
    let config = match architecture {
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => deepseek(&f, config)?,
        Architecture::GptOss => gpt_oss(&f, config)?,
        _ => config,
    };
    config.validate().map_err(|e| f.err(e.to_string()))?;
    Ok(config)
}

/// How a checkpoint's weights are stored besides plain floats, from
/// `quantization_config`: block-scaled FP8 (DeepSeek-V3/R1, Kimi K2, the
/// Qwen3 FP8 releases) gives its `weight_block_size`; MXFP4 (gpt-oss)
/// needs nothing (its tensors say so). Anything else is refused.
fn source_quantization(
    f: &Fields<'_>,
    arch: Architecture,
) -> Result<Option<[usize; 2]>, QuantizeError> {
    let Some(q) = f.get("quantization_config") else {
        return Ok(None);
    };
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    match method {
        "fp8" => {
            let fmt = q.get("fmt").and_then(Value::as_str).unwrap_or("e4m3");
            if fmt != "e4m3" {
                return Err(f.err(format!("fp8 format {fmt:?} is not supported (only e4m3)")));
            }
            let block = q
                .get("weight_block_size")
                .and_then(Value::as_array)
                .and_then(|a| match a.as_slice() {
                    [r, c] => Some([r.as_u64()? as usize, c.as_u64()? as usize]),
                    _ => None,
                })
                .filter(|b| b[0] > 0 && b[1] > 0)
                .ok_or_else(|| {
                    f.err("fp8 quantization_config needs weight_block_size [rows, cols] (per-tensor fp8 is not supported)".into())
                })?;
            Ok(Some(block))
        }
        "mxfp4" if arch == Architecture::GptOss => Ok(None),
        other => Err(f.err(format!(
            "quantization_config {other:?} is not supported: mote converts float checkpoints, \
             block-scaled fp8 ones and gpt-oss's mxfp4; dequantize this one to bf16 first"
        ))),
    }
}

/// The FP8 block size of `dir`'s checkpoint (`None`: no FP8 weights).
pub fn fp8_block_size(dir: &Path) -> Result<Option<[usize; 2]>, QuantizeError> {
    let (path, json) = config_json(dir)?;
    let f = Fields {
        path: &path,
        json: &json,
    };
    // The architecture only matters for mxfp4, which has no block size.
    source_quantization(&f, Architecture::GptOss)
}

/// DeepSeek's routing, rope layout and dense first layers.
fn deepseek(f: &Fields<'_>, mut c: ModelConfig) -> Result<ModelConfig, QuantizeError> {
    let v3 = c.architecture == Architecture::DeepseekV3;
    let scoring = f.get("scoring_func").and_then(Value::as_str);
    let want = if v3 { "sigmoid" } else { "softmax" };
    if scoring.is_some_and(|s| s != want) {
        return Err(f.err(format!(
            "scoring_func {scoring:?}: this family routes with {want}"
        )));
    }
    let method = f.get("topk_method").and_then(Value::as_str);
    let grouped = match (v3, method) {
        (false, None | Some("greedy")) => false,
        (false, Some("group_limited_greedy")) | (true, None | Some("noaux_tc")) => true,
        (_, Some(other)) => {
            return Err(f.err(format!(
                "topk_method {other:?} is not supported (DeepSeek-V2: greedy, group_limited_greedy; V3: noaux_tc)"
            )))
        }
    };
    if grouped {
        c.expert_groups = f.opt_u32("n_group")?.unwrap_or(1);
        c.topk_groups = f.opt_u32("topk_group")?.unwrap_or(1);
    }
    c.routed_scaling_factor = f.opt_f32("routed_scaling_factor")?.unwrap_or(1.0);
    // V2 rotates complex pairs; V3 reorders them into halves first, which
    // is the same rotation of the same pairs.
    c.rope_interleaved = !v3
        || f.get("rope_interleave")
            .and_then(Value::as_bool)
            .unwrap_or(true);
    c.first_dense_layers = f
        .opt_u32("first_k_dense_replace")?
        .unwrap_or(0)
        .min(c.n_layers);
    if c.first_dense_layers > 0 {
        c.dense_ffn_size = f.u32("intermediate_size")?;
    }
    if f.opt_u32("moe_layer_freq")?.unwrap_or(1) != 1 {
        return Err(f.err("moe_layer_freq other than 1 is not supported".into()));
    }
    Ok(c)
}

/// gpt-oss's alternating sliding windows and clamped SwiGLU.
fn gpt_oss(f: &Fields<'_>, mut c: ModelConfig) -> Result<ModelConfig, QuantizeError> {
    if f.get("attention_bias").and_then(Value::as_bool) == Some(false) {
        return Err(f.err("gpt-oss without attention_bias is not supported".into()));
    }
    c.sliding_window = f.opt_u32("sliding_window")?.unwrap_or(0);
    // layer_types: every `period`-th layer full, the rest sliding
    // (transformers' default for gpt-oss: even layers slide).
    c.sliding_period = 2;
    if let Some(types) = f.get("layer_types").and_then(Value::as_array) {
        let full: Vec<bool> = types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(true),
                Some("sliding_attention") => Ok(false),
                _ => Err(f.err(format!(
                    "layer_types holds {t}; expected full_attention or sliding_attention"
                ))),
            })
            .collect::<Result<_, _>>()?;
        if full.len() != c.n_layers as usize {
            return Err(f.err(format!(
                "layer_types lists {} layers; num_hidden_layers is {}",
                full.len(),
                c.n_layers
            )));
        }
        c.sliding_period = full.iter().position(|&x| x).map_or(0, |i| i as u32 + 1);
        let periodic = full.iter().enumerate().all(|(i, &x)| {
            x == (c.sliding_period > 0 && (i as u32 + 1).is_multiple_of(c.sliding_period))
        });
        if !periodic {
            return Err(f.err(
                "layer_types must repeat one pattern (every n-th layer full, the others sliding)"
                    .into(),
            ));
        }
    }
    if c.sliding_window == 0 {
        c.sliding_period = 0;
    }
    c.swiglu_limit = f.opt_f32("swiglu_limit")?.unwrap_or(7.0);
    c.swiglu_alpha = f.opt_f32("swiglu_alpha")?.unwrap_or(1.702);
    Ok(c)
}

/// YaRN scaling from a rope-scaling object, as transformers'
/// `_compute_yarn_parameters`, and DeepSeek's softmax-scale factor
/// (`mscale²` of `mscale_all_dim`) when the config gives one.
fn yarn(f: &Fields<'_>, obj: &Value) -> Result<(RopeScaling, Option<f32>), QuantizeError> {
    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
    let original = num("original_max_position_embeddings")
        .or_else(|| {
            f.get("original_max_position_embeddings")
                .and_then(Value::as_f64)
        })
        .or_else(|| f.get("max_position_embeddings").and_then(Value::as_f64))
        .ok_or_else(|| f.err("yarn rope scaling needs original_max_position_embeddings".into()))?;
    // Without a factor transformers extends to max_position_embeddings.
    let extended = f.get("max_position_embeddings").and_then(Value::as_f64);
    let factor = num("factor")
        .or(extended.map(|m| m / original))
        .filter(|v| *v > 0.0)
        .ok_or_else(|| f.err("yarn rope scaling needs a positive \"factor\"".into()))?;
    let get_mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let (mscale, mscale_all_dim) = (num("mscale"), num("mscale_all_dim"));
    let attention_factor = match (num("attention_factor"), mscale, mscale_all_dim) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
            get_mscale(factor, m) / get_mscale(factor, all)
        }
        _ => get_mscale(factor, 1.0),
    };
    let softmax_scale = mscale_all_dim
        .filter(|m| *m != 0.0)
        .map(|m| (get_mscale(factor, m) * get_mscale(factor, m)) as f32);
    Ok((
        RopeScaling::Yarn {
            factor: factor as f32,
            original_max_position: original as u32,
            beta_fast: num("beta_fast").unwrap_or(32.0) as f32,
            beta_slow: num("beta_slow").unwrap_or(1.0) as f32,
            attention_factor: attention_factor as f32,
            truncate: obj.get("truncate").and_then(Value::as_bool).unwrap_or(true),
        },
        softmax_scale,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) {
        std::fs::write(dir.join("config.json"), json).unwrap();
    }

    const BASE: &str = r#""architectures": ["MixtralForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 80,
        "num_local_experts": 4, "num_experts_per_tok": 2, "rms_norm_eps": 1e-6"#;

    #[test]
    fn reads_hub_and_transformers5_rope_layouts_alike() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &format!(
                "{{{BASE}, \"rope_theta\": 5e5, \"rope_scaling\": null, \"eos_token_id\": [2, 7]}}"
            ),
        );
        let a = read_config(dir.path(), &mut Vec::new()).unwrap();
        write(dir.path(), &format!("{{{BASE}, \"rope_parameters\": {{\"rope_theta\": 5e5, \"rope_type\": \"default\"}}, \"eos_token_id\": [2, 7]}}"));
        let b = read_config(dir.path(), &mut Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 5e5);
        assert_eq!(a.head_dim, 16);
        assert_eq!(&a.eos_token_ids[..], &[2, 7]);
    }

    #[test]
    fn unsupported_architecture_lists_the_supported_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), r#"{"architectures": ["BertModel"]}"#);
        let e = read_config(dir.path(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BertModel") && e.contains("MixtralForCausalLM"),
            "{e}"
        );
    }

    #[test]
    fn unknown_rope_scaling_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &format!("{{{BASE}, \"rope_scaling\": {{\"type\": \"dynamic\", \"factor\": 2.0}}}}"),
        );
        let e = read_config(dir.path(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamic"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            r#"{"architectures": ["MixtralForCausalLM"], "vocab_size": 10}"#,
        );
        let e = read_config(dir.path(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }

    const HUNYUAN: &str = r#""architectures": ["HunYuanMoEV1ForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "intermediate_size": 48, "rms_norm_eps": 1e-5, "rope_theta": 10000.0"#;

    #[test]
    fn hunyuan_per_layer_lists_and_ntk_alpha_rope() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &format!(
                "{{{HUNYUAN}, \"num_experts\": [8, 8], \"moe_topk\": [2, 2], \
                 \"rope_scaling\": {{\"type\": \"dynamic\", \"alpha\": 1000.0, \"factor\": 1.0}}}}"
            ),
        );
        let c = read_config(dir.path(), &mut Vec::new()).unwrap();
        assert_eq!((c.n_experts, c.n_experts_per_token), (8, 2));
        assert_eq!(c.shared_expert_ffn_size, 48);
        // theta · alpha^(16/14)
        let want = 10000.0f64 * 1000f64.powf(16.0 / 14.0);
        assert!(
            (c.rope_theta as f64 / want - 1.0).abs() < 1e-6,
            "{}",
            c.rope_theta
        );
        assert_eq!(c.rope_scaling, RopeScaling::None);

        write(
            dir.path(),
            &format!("{{{HUNYUAN}, \"num_experts\": [8, 16], \"moe_topk\": 2}}"),
        );
        let e = read_config(dir.path(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_experts differs between layers"), "{e}");
    }

    const DEEPSEEK_V3: &str = r#""architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 96, "moe_intermediate_size": 48,
        "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
        "kv_lora_rank": 32, "q_lora_rank": 24, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
        "first_k_dense_replace": 1, "routed_scaling_factor": 2.5, "head_dim": 8"#;

    #[test]
    fn deepseek_layout_and_what_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &format!("{{{DEEPSEEK_V3}}}"));
        let c = read_config(dir.path(), &mut Vec::new()).unwrap();
        // head_dim in a DeepSeek config names the rope part.
        assert_eq!((c.head_dim, c.n_kv_heads, c.kv_dim()), (24, 4, 40));
        assert_eq!(
            (c.expert_groups, c.topk_groups, c.first_dense_layers),
            (4, 2, 1)
        );
        assert_eq!((c.dense_ffn_size, c.shared_expert_ffn_size), (96, 48));
        assert!(c.norm_topk_prob && c.rope_interleaved);
        assert_eq!(fp8_block_size(dir.path()).unwrap(), None);

        for (extra, message) in [
            (r#""topk_method": "greedy""#, "topk_method \"greedy\""),
            (r#""scoring_func": "softmax""#, "routes with sigmoid"),
            (
                r#""quantization_config": {"quant_method": "awq"}"#,
                "quantization_config \"awq\"",
            ),
            (
                r#""quantization_config": {"quant_method": "fp8"}"#,
                "weight_block_size",
            ),
            (r#""n_group": 3"#, "expert groups must divide"),
        ] {
            write(dir.path(), &format!("{{{DEEPSEEK_V3}, {extra}}}"));
            let e = read_config(dir.path(), &mut Vec::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(message), "{extra}: {e}");
        }
        // Kimi K2: DeepSeek-V3's layout, 384 experts in one group, both
        // YaRN betas 1 (an empty correction range).
        let kimi = r#""model_type": "kimi_k2", "n_routed_experts": 384, "num_experts_per_tok": 8, "n_group": 1,
            "topk_group": 1, "rope_scaling": {"type": "yarn", "factor": 32.0, "beta_fast": 1.0, "beta_slow": 1.0,
            "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}"#;
        write(dir.path(), &format!("{{{DEEPSEEK_V3}, {kimi}}}"));
        let c = read_config(dir.path(), &mut Vec::new()).unwrap();
        assert_eq!(
            (c.architecture, c.n_experts, c.expert_groups),
            (Architecture::DeepseekV3, 384, 1)
        );
        // softmax scale: qk^-0.5 · (0.1 · ln 32 + 1)²
        let want = (0.1f32 * 32f32.ln() + 1.0).powi(2) / 24f32.sqrt();
        assert!((c.attention_multiplier.unwrap() / want - 1.0).abs() < 1e-6);

        let fp8 = r#""quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}"#;
        write(dir.path(), &format!("{{{DEEPSEEK_V3}, {fp8}}}"));
        assert!(read_config(dir.path(), &mut Vec::new()).is_ok());
        assert_eq!(fp8_block_size(dir.path()).unwrap(), Some([128, 128]));
    }

    const GPT_OSS: &str = r#""architectures": ["GptOssForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "intermediate_size": 32, "num_local_experts": 8, "experts_per_token": 2, "sliding_window": 128,
        "attention_bias": true"#;

    #[test]
    fn gpt_oss_windows_follow_layer_types() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &format!("{{{GPT_OSS}}}"));
        let c = read_config(dir.path(), &mut Vec::new()).unwrap();
        assert_eq!(
            (c.n_experts_per_token, c.sliding_window, c.sliding_period),
            (2, 128, 2)
        );
        assert!(c.slides(0) && !c.slides(1) && c.slides(2) && !c.slides(3));
        assert_eq!((c.swiglu_limit, c.swiglu_alpha), (7.0, 1.702));

        let types = r#""layer_types": ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]"#;
        write(dir.path(), &format!("{{{GPT_OSS}, {types}}}"));
        let e = read_config(dir.path(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("must repeat one pattern"), "{e}");
        let types = r#""layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"]"#;
        write(dir.path(), &format!("{{{GPT_OSS}, {types}}}"));
        let c = read_config(dir.path(), &mut Vec::new()).unwrap();
        assert!((0..4).all(|l| c.slides(l)));
    }
}
