//! Where each mote tensor comes from in a Hugging Face checkpoint: the names
//! each family uses, per-expert or fused, and which rows of a fused tensor
//! belong to one expert's matrix.

use mote::format::config::expected_shape;
use mote::{Architecture, ModelConfig, TensorId, TensorKind};

use crate::error::QuantizeError;
use crate::safetensors::{Checkpoint, TensorEntry};

/// The checkpoint bytes of one mote tensor: rows `row_start..row_start+rows`
/// of slice `expert` (fused 3-D tensors) or of the whole 2-D tensor.
#[derive(Debug, Clone)]
pub struct Source {
    /// Checkpoint tensor name.
    pub name: String,
    /// The tensor's entry.
    pub entry: TensorEntry,
    /// Byte offset of the first row used, from the tensor's start.
    pub skip_bytes: u64,
    /// Rows used.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
}

/// A candidate name and, for fused tensors, (expert, first row): the rows
/// of one matrix inside a 3-D `[experts, 2·rows or rows, cols]` tensor, or,
/// with no expert, inside a 2-D `[2·rows, cols]` gate-and-up tensor.
struct Candidate {
    name: String,
    fused: Option<(Option<usize>, usize)>,
}

fn candidates(config: &ModelConfig, id: TensorId) -> Vec<Candidate> {
    let plain = |name: String| Candidate { name, fused: None };
    let l = id.layer;
    let e = id.expert;
    let f = config.expert_ffn_size as usize;
    // Mixtral's hub checkpoints say `block_sparse_moe` and w1/w3/w2; the
    // other families (and transformers 5 for every family) say `mlp` and
    // gate_proj/up_proj/down_proj, or fuse the experts.
    let per_expert = |w: &str, proj: &str| match config.architecture {
        Architecture::Mixtral => {
            format!("model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight")
        }
        // A dense MLP is expert 0.
        Architecture::Llama => format!("model.layers.{l}.mlp.{proj}.weight"),
        _ => format!("model.layers.{l}.mlp.experts.{e}.{proj}.weight"),
    };
    match id.kind {
        TensorKind::TokenEmbedding => vec![plain("model.embed_tokens.weight".into())],
        TensorKind::OutputNorm => vec![plain("model.norm.weight".into())],
        TensorKind::LmHead => vec![plain("lm_head.weight".into())],
        TensorKind::LmHeadBias => vec![plain("lm_head.bias".into())],
        TensorKind::OutputNormBias => vec![plain("model.norm.bias".into())],
        TensorKind::AttnNormBias => vec![plain(format!("model.layers.{l}.input_layernorm.bias"))],
        TensorKind::FfnNormBias => vec![plain(format!(
            "model.layers.{l}.post_attention_layernorm.bias"
        ))],
        TensorKind::AttnOBias => vec![plain(format!("model.layers.{l}.self_attn.o_proj.bias"))],
        TensorKind::AttnNorm => vec![plain(format!("model.layers.{l}.input_layernorm.weight"))],
        TensorKind::FfnNorm => vec![plain(format!(
            "model.layers.{l}.post_attention_layernorm.weight"
        ))],
        TensorKind::AttnQ => vec![
            plain(format!("model.layers.{l}.self_attn.q_proj.weight")),
            // MLA's query expansion when queries are compressed.
            plain(format!("model.layers.{l}.self_attn.q_b_proj.weight")),
        ],
        TensorKind::AttnK => vec![plain(format!("model.layers.{l}.self_attn.k_proj.weight"))],
        TensorKind::AttnV => vec![plain(format!("model.layers.{l}.self_attn.v_proj.weight"))],
        TensorKind::AttnO => vec![plain(format!("model.layers.{l}.self_attn.o_proj.weight"))],
        TensorKind::AttnQBias => vec![plain(format!("model.layers.{l}.self_attn.q_proj.bias"))],
        TensorKind::AttnKBias => vec![plain(format!("model.layers.{l}.self_attn.k_proj.bias"))],
        TensorKind::AttnVBias => vec![plain(format!("model.layers.{l}.self_attn.v_proj.bias"))],
        // Shared experts: Qwen2-MoE's `shared_expert`, Hunyuan's
        // `shared_mlp`, Granite's layer-level `shared_mlp` with gate and up
        // fused in `input_linear`.
        TensorKind::SharedGate | TensorKind::SharedUp | TensorKind::SharedDown => {
            let (proj, granite, row) = match id.kind {
                TensorKind::SharedGate => ("gate_proj", "input_linear", Some(0)),
                TensorKind::SharedUp => (
                    "up_proj",
                    "input_linear",
                    Some(config.shared_expert_ffn_size as usize),
                ),
                _ => ("down_proj", "output_linear", None),
            };
            if !config.has_experts(l) {
                // A DeepSeek dense layer's MLP.
                return vec![plain(format!("model.layers.{l}.mlp.{proj}.weight"))];
            }
            vec![
                plain(format!("model.layers.{l}.mlp.shared_expert.{proj}.weight")),
                plain(format!("model.layers.{l}.mlp.shared_mlp.{proj}.weight")),
                plain(format!("model.layers.{l}.mlp.shared_experts.{proj}.weight")),
                Candidate {
                    name: format!("model.layers.{l}.shared_mlp.{granite}.weight"),
                    fused: row.map(|r| (None, r)),
                },
            ]
        }
        TensorKind::AttnQNorm => vec![
            plain(format!("model.layers.{l}.self_attn.q_norm.weight")),
            plain(format!("model.layers.{l}.self_attn.query_layernorm.weight")),
        ],
        TensorKind::AttnKNorm => vec![
            plain(format!("model.layers.{l}.self_attn.k_norm.weight")),
            plain(format!("model.layers.{l}.self_attn.key_layernorm.weight")),
        ],
        // DeepSeek's multi-head latent attention.
        TensorKind::AttnQA => vec![plain(format!("model.layers.{l}.self_attn.q_a_proj.weight"))],
        TensorKind::AttnQANorm => vec![plain(format!(
            "model.layers.{l}.self_attn.q_a_layernorm.weight"
        ))],
        TensorKind::AttnKvA => vec![plain(format!(
            "model.layers.{l}.self_attn.kv_a_proj_with_mqa.weight"
        ))],
        TensorKind::AttnKvANorm => vec![plain(format!(
            "model.layers.{l}.self_attn.kv_a_layernorm.weight"
        ))],
        TensorKind::AttnKvB => vec![plain(format!(
            "model.layers.{l}.self_attn.kv_b_proj.weight"
        ))],
        TensorKind::RouterCorrection => vec![plain(format!(
            "model.layers.{l}.mlp.gate.e_score_correction_bias"
        ))],
        // gpt-oss.
        TensorKind::AttnSinks => vec![plain(format!("model.layers.{l}.self_attn.sinks"))],
        TensorKind::RouterBias => vec![plain(format!("model.layers.{l}.mlp.router.bias"))],
        TensorKind::ExpertGateBias | TensorKind::ExpertUpBias | TensorKind::ExpertDownBias => {
            vec![]
        }
        TensorKind::SharedExpertGate => vec![plain(format!(
            "model.layers.{l}.mlp.shared_expert_gate.weight"
        ))],
        TensorKind::Router => vec![
            plain(format!("model.layers.{l}.block_sparse_moe.gate.weight")),
            plain(format!("model.layers.{l}.mlp.gate.weight")),
            plain(format!(
                "model.layers.{l}.block_sparse_moe.router.layer.weight"
            )),
            plain(format!("model.layers.{l}.block_sparse_moe.router.weight")),
            plain(format!("model.layers.{l}.mlp.gate.wg.weight")),
            plain(format!("model.layers.{l}.mlp.router.weight")),
        ],
        TensorKind::ExpertGate | TensorKind::ExpertUp | TensorKind::ExpertDown => {
            let (w, proj, fused, row) = match id.kind {
                TensorKind::ExpertGate => ("w1", "gate_proj", "gate_up_proj", 0),
                TensorKind::ExpertUp => ("w3", "up_proj", "gate_up_proj", f),
                _ => ("w2", "down_proj", "down_proj", 0),
            };
            // Granite's hub checkpoints fuse as input_linear / output_linear.
            let granite = if fused == "gate_up_proj" {
                "input_linear"
            } else {
                "output_linear"
            };
            vec![
                plain(per_expert(w, proj)),
                // Phi-MoE's hub checkpoints use Mixtral's names.
                plain(format!(
                    "model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight"
                )),
                Candidate {
                    name: format!("model.layers.{l}.mlp.experts.{fused}"),
                    fused: Some((Some(e as usize), row)),
                },
                Candidate {
                    name: format!("model.layers.{l}.block_sparse_moe.{granite}.weight"),
                    fused: Some((Some(e as usize), row)),
                },
                Candidate {
                    name: format!("model.layers.{l}.block_sparse_moe.experts.{fused}"),
                    fused: Some((Some(e as usize), row)),
                },
            ]
        }
    }
}

/// Finds the source of `id` and checks its shape against the config.
pub fn find(ck: &Checkpoint, config: &ModelConfig, id: TensorId) -> Result<Source, QuantizeError> {
    let [rows, cols] = expected_shape(config, id).map(|d| d as usize);
    let cands = candidates(config, id);
    for c in &cands {
        let Some(entry) = ck.tensors.get(&c.name) else {
            continue;
        };
        let shape = &entry.shape;
        let elem = entry.dtype.size() as u64;
        return match c.fused {
            None => {
                // Norms are 1-D in checkpoints and [1, hidden] in mote.
                // Vectors (norms, biases) are 1-D; a one-row Linear is [1, cols].
                let ok = if rows == 1 {
                    shape[..] == [cols] || shape[..] == [1, cols]
                } else {
                    shape[..] == [rows, cols]
                };
                if !ok {
                    let expected = if rows == 1 {
                        vec![cols]
                    } else {
                        vec![rows, cols]
                    };
                    return Err(QuantizeError::Shape {
                        tensor: c.name.clone(),
                        expected,
                        found: shape.clone(),
                    });
                }
                Ok(Source {
                    name: c.name.clone(),
                    entry: entry.clone(),
                    skip_bytes: 0,
                    rows,
                    cols,
                })
            }
            Some((expert, row)) => {
                let per_expert_rows = match id.kind {
                    TensorKind::ExpertDown => rows,
                    _ => 2 * rows,
                };
                let expected = match expert {
                    Some(_) => vec![config.n_experts as usize, per_expert_rows, cols],
                    None => vec![per_expert_rows, cols],
                };
                let expert = expert.unwrap_or(0);
                if *shape != expected {
                    return Err(QuantizeError::Shape {
                        tensor: c.name.clone(),
                        expected,
                        found: shape.clone(),
                    });
                }
                let skip_rows = (expert * per_expert_rows + row) as u64;
                let name = match c.fused {
                    Some((Some(_), _)) => format!("{}[{expert}][{row}..{}]", c.name, row + rows),
                    _ => format!("{}[{row}..{}]", c.name, row + rows),
                };
                Ok(Source {
                    name,
                    entry: entry.clone(),
                    skip_bytes: skip_rows * cols as u64 * elem,
                    rows,
                    cols,
                })
            }
        };
    }
    Err(QuantizeError::MissingTensor {
        name: id.to_string(),
        looked_for: cands
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}
