//! Where each mote tensor comes from in a Hugging Face checkpoint: the names
//! each family uses, per-expert or fused, and which rows of a fused tensor
//! belong to one expert's matrix.

use mote::format::config::expected_shape;
use mote::{Architecture, ModelConfig, TensorId, TensorKind};

use crate::error::QuantizeError;
use crate::safetensors::{Checkpoint, SourceDType, TensorEntry};

/// The checkpoint bytes of one mote tensor: rows `row_start..row_start+rows`
/// of slice `expert` (fused 3-D tensors) or of the whole 2-D tensor, or a
/// strided or MXFP4 view (gpt-oss).
#[derive(Debug, Clone)]
pub struct Source {
    /// Checkpoint tensor name.
    pub name: String,
    /// The tensor's entry.
    pub entry: TensorEntry,
    /// Byte offset of the first element used, from the tensor's start.
    pub skip_bytes: u64,
    /// Rows used.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    /// How the rows sit in the checkpoint tensor.
    pub view: View,
}

/// Where a mote tensor's elements are in its checkpoint tensor.
#[derive(Debug, Clone)]
pub enum View {
    /// Whole rows in order from `skip_bytes`.
    Rows,
    /// Whole FP8 rows in order, element `(r, c)` multiplied by
    /// `scales[r / block[0]][c / block[1]]` (the `*_scale_inv` tensor of
    /// block-scaled FP8 checkpoints).
    BlockScaled {
        /// The `_scale_inv` tensor, `[⌈rows/b0⌉, ⌈cols/b1⌉]` f32 or bf16.
        scales: TensorEntry,
        /// `weight_block_size`.
        block: [usize; 2],
    },
    /// Element `(r, c)` is element `r·row_step + c·col_step` after
    /// `skip_bytes` (gpt-oss's transposed, gate/up-interleaved experts).
    Strided {
        /// Elements between consecutive rows.
        row_step: usize,
        /// Elements between consecutive columns.
        col_step: usize,
    },
    /// MXFP4 rows copied as they are: row `r` is row `first + r·step` of
    /// expert `expert` in `entry` (`_blocks`, `[E, R, cols/32, 16]` bytes)
    /// and in `scales` (`_scales`, `[E, R, cols/32]` E8M0 bytes).
    Mxfp4 {
        /// The `_scales` tensor.
        scales: TensorEntry,
        /// Rows per expert in the checkpoint tensors.
        rows_per_expert: usize,
        /// Expert slice.
        expert: usize,
        /// First row used.
        first: usize,
        /// Rows between consecutive rows used.
        step: usize,
    },
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
        // Found by gpt_oss_source; named here for the missing-tensor error.
        TensorKind::ExpertGateBias | TensorKind::ExpertUpBias => vec![plain(format!(
            "model.layers.{l}.mlp.experts.gate_up_proj_bias"
        ))],
        TensorKind::ExpertDownBias => vec![plain(format!(
            "model.layers.{l}.mlp.experts.down_proj_bias"
        ))],
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

/// gpt-oss's experts: `mlp.experts.gate_up_proj` `[E, H, 2F]` (input-major,
/// gate and up interleaved along the last axis) and `down_proj` `[E, F, H]`,
/// or the hub's MXFP4 `*_blocks` / `*_scales` (output-major, gate and up
/// interleaved by rows); biases `gate_up_proj_bias` `[E, 2F]` (interleaved)
/// and `down_proj_bias` `[E, H]`.
fn gpt_oss_source(
    ck: &Checkpoint,
    config: &ModelConfig,
    id: TensorId,
) -> Option<Result<Source, QuantizeError>> {
    let [rows, cols] = expected_shape(config, id).map(|d| d as usize);
    let (e_count, l, e) = (config.n_experts as usize, id.layer, id.expert as usize);
    let (h, f) = (config.hidden_size as usize, config.expert_ffn_size as usize);
    let experts = format!("model.layers.{l}.mlp.experts");
    let interleaved = match id.kind {
        TensorKind::ExpertGate | TensorKind::ExpertGateBias => Some(0),
        TensorKind::ExpertUp | TensorKind::ExpertUpBias => Some(1),
        TensorKind::ExpertDown | TensorKind::ExpertDownBias => None,
        _ => return None,
    };
    let fused = if interleaved.is_some() {
        "gate_up_proj"
    } else {
        "down_proj"
    };
    let shape_err = |name: &str, expected: Vec<usize>, found: &[usize]| {
        Err(QuantizeError::Shape {
            tensor: name.to_string(),
            expected,
            found: found.to_vec(),
        })
    };
    if id.kind.is_expert() {
        // The hub's MXFP4 tensors, kept 4-bit.
        let blocks = format!("{experts}.{fused}_blocks");
        let scales = format!("{experts}.{fused}_scales");
        if let (Some(b), Some(s)) = (ck.tensors.get(&blocks), ck.tensors.get(&scales)) {
            let src_rows = if interleaved.is_some() {
                2 * rows
            } else {
                rows
            };
            let nb = cols / mote::quant::BLOCK_LEN;
            let want_b = vec![e_count, src_rows, nb, 16];
            let want_s = vec![e_count, src_rows, nb];
            if cols % mote::quant::BLOCK_LEN != 0 || b.shape != want_b {
                return Some(shape_err(&blocks, want_b, &b.shape));
            }
            if s.shape != want_s {
                return Some(shape_err(&scales, want_s, &s.shape));
            }
            if b.dtype.is_float() || s.dtype.is_float() {
                return Some(Err(QuantizeError::DType {
                    tensor: blocks,
                    found: "a float type (MXFP4 blocks and scales are U8)".into(),
                }));
            }
            let (first, step) = match interleaved {
                Some(offset) => (offset, 2),
                None => (0, 1),
            };
            return Some(Ok(Source {
                name: format!("{blocks}[{e}]"),
                entry: b.clone(),
                skip_bytes: 0,
                rows,
                cols,
                view: View::Mxfp4 {
                    scales: s.clone(),
                    rows_per_expert: src_rows,
                    expert: e,
                    first,
                    step,
                },
            }));
        }
    }
    let (name, want, skip, row_step, col_step) = match (id.kind.is_expert(), interleaved) {
        // gate/up row r, input c: gate_up_proj[e][c][2r + offset].
        (true, Some(offset)) => (
            format!("{experts}.gate_up_proj"),
            vec![e_count, h, 2 * f],
            e * h * 2 * f + offset,
            2,
            2 * f,
        ),
        // down row r (hidden), input c (ffn): down_proj[e][c][r].
        (true, None) => (
            format!("{experts}.down_proj"),
            vec![e_count, f, h],
            e * f * h,
            1,
            h,
        ),
        // bias row = expert, column c: gate_up_proj_bias[e][2c + offset].
        (false, Some(offset)) => (
            format!("{experts}.gate_up_proj_bias"),
            vec![e_count, 2 * f],
            offset,
            2 * f,
            2,
        ),
        (false, None) => (
            format!("{experts}.down_proj_bias"),
            vec![e_count, h],
            0,
            h,
            1,
        ),
    };
    let entry = ck.tensors.get(&name)?;
    if entry.shape != want {
        return Some(shape_err(&name, want, &entry.shape));
    }
    if !entry.dtype.is_float() || entry.dtype == SourceDType::F8E4M3 {
        return Some(Err(QuantizeError::DType {
            tensor: name,
            found: format!(
                "{:?} (gpt-oss's experts are read from floats or MXFP4)",
                entry.dtype
            ),
        }));
    }
    Some(Ok(Source {
        name: if id.kind.is_expert() {
            format!("{name}[{e}]")
        } else {
            name
        },
        skip_bytes: (skip * entry.dtype.size()) as u64,
        entry: entry.clone(),
        rows,
        cols,
        view: View::Strided { row_step, col_step },
    }))
}

/// The block scales of an FP8 checkpoint tensor `name`: `name_scale_inv`,
/// one per `block` of its `[rows, cols]`.
fn fp8_view(
    ck: &Checkpoint,
    name: &str,
    rows: usize,
    cols: usize,
    block: Option<[usize; 2]>,
) -> Result<View, QuantizeError> {
    let missing = |what: String| QuantizeError::DType {
        tensor: name.to_string(),
        found: format!("F8_E4M3 {what}"),
    };
    let block =
        block.ok_or_else(|| missing("without an fp8 quantization_config in config.json".into()))?;
    let scale_name = format!("{name}_scale_inv");
    let scales = ck
        .tensors
        .get(&scale_name)
        .ok_or_else(|| missing(format!("without its {scale_name}")))?;
    let want = vec![rows.div_ceil(block[0]), cols.div_ceil(block[1])];
    if scales.shape != want || !scales.dtype.is_float() || scales.dtype == SourceDType::F8E4M3 {
        return Err(QuantizeError::Shape {
            tensor: scale_name,
            expected: want,
            found: scales.shape.clone(),
        });
    }
    Ok(View::BlockScaled {
        scales: scales.clone(),
        block,
    })
}

/// Finds the source of `id` and checks its shape against the config;
/// `fp8_block` is the checkpoint's FP8 `weight_block_size`, if any.
pub fn find(
    ck: &Checkpoint,
    config: &ModelConfig,
    id: TensorId,
    fp8_block: Option<[usize; 2]>,
) -> Result<Source, QuantizeError> {
    if config.architecture == Architecture::GptOss {
        if let Some(found) = gpt_oss_source(ck, config, id) {
            return found;
        }
    }
    let [rows, cols] = expected_shape(config, id).map(|d| d as usize);
    let cands = candidates(config, id);
    for c in &cands {
        let Some(entry) = ck.tensors.get(&c.name) else {
            continue;
        };
        let shape = &entry.shape;
        let elem = entry.dtype.size() as u64;
        if !entry.dtype.is_float() {
            return Err(QuantizeError::DType {
                tensor: c.name.clone(),
                found: "U8".into(),
            });
        }
        let fp8 = entry.dtype == SourceDType::F8E4M3;
        if fp8 && c.fused.is_some() {
            return Err(QuantizeError::DType {
                tensor: c.name.clone(),
                found: "F8_E4M3 in fused experts (only per-tensor names are read as FP8)".into(),
            });
        }
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
                let view = match fp8 {
                    true => fp8_view(ck, &c.name, rows, cols, fp8_block)?,
                    false => View::Rows,
                };
                Ok(Source {
                    name: c.name.clone(),
                    entry: entry.clone(),
                    skip_bytes: 0,
                    rows,
                    cols,
                    view,
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
                    view: View::Rows,
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
