//! Which GGUF tensor each mote tensor is: llama.cpp's names (`blk.N.attn_q`,
//! experts stacked in `ffn_{gate,up,down}_exps`), the expert's slice of a
//! stacked tensor, and the row order to undo where the converter permuted
//! Q and K rows for interleaved rope.

use mote::format::config::expected_shape;
use mote::{Architecture, ModelConfig, TensorId, TensorKind};

use super::config::Family;
use super::{Gguf, TensorInfo};
use crate::error::QuantizeError;

/// The GGUF rows of one mote tensor.
#[derive(Debug, Clone)]
pub struct Source {
    /// GGUF tensor name (with `[expert]` for a slice of stacked experts).
    pub name: String,
    /// Its directory entry.
    pub info: TensorInfo,
    /// First row used (an expert's slice of a stacked tensor).
    pub first_row: usize,
    /// Rows used.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    /// Heads of `head_dim` rows whose halves the converter interleaved:
    /// mote's row `h·d + s·d/2 + i` is the file's row `h·d + 2i + s`.
    pub unpermute_heads: Option<usize>,
    /// DeepSeek's `kv_b` as newer converters split it: `attn_k_b`
    /// (`{nope, kv_lora, heads}`: each head's key rows transposed) and
    /// `attn_v_b` (`{kv_lora, v, heads}`), rebuilt into `kv_b`'s rows
    /// (per head, `nope` key rows then `v` value rows). `info` is `attn_v_b`.
    pub split_kv_b: Option<SplitKvB>,
}

/// The two halves of a split `attn_kv_b`.
#[derive(Debug, Clone)]
pub struct SplitKvB {
    /// `attn_k_b`.
    pub k_b: TensorInfo,
    /// Key (no-rope) width of a head.
    pub nope: usize,
    /// Value width of a head.
    pub v: usize,
}

impl Source {
    /// The file row holding mote's row `r`.
    pub fn file_row(&self, r: usize) -> usize {
        let within = match self.unpermute_heads {
            None => r,
            Some(_) => {
                let d = self.rows / self.unpermute_heads.unwrap_or(1);
                let (h, k) = (r / d, r % d);
                let (s, i) = (k / (d / 2), k % (d / 2));
                h * d + 2 * i + s
            }
        };
        self.first_row + within
    }
}

fn names(config: &ModelConfig, id: TensorId) -> Vec<String> {
    let l = id.layer;
    let b = |s: &str| vec![format!("blk.{l}.{s}")];
    let dense = config.architecture == Architecture::Llama;
    match id.kind {
        TensorKind::TokenEmbedding => vec!["token_embd.weight".into()],
        TensorKind::OutputNorm => vec!["output_norm.weight".into()],
        TensorKind::OutputNormBias => vec!["output_norm.bias".into()],
        TensorKind::LmHead => vec!["output.weight".into()],
        TensorKind::LmHeadBias => vec!["output.bias".into()],
        TensorKind::AttnNorm => b("attn_norm.weight"),
        TensorKind::AttnNormBias => b("attn_norm.bias"),
        TensorKind::AttnQ => vec![
            format!("blk.{l}.attn_q.weight"),
            format!("blk.{l}.attn_q_b.weight"),
        ],
        TensorKind::AttnK => b("attn_k.weight"),
        TensorKind::AttnV => b("attn_v.weight"),
        TensorKind::AttnO => b("attn_output.weight"),
        TensorKind::AttnOBias => b("attn_output.bias"),
        TensorKind::AttnQBias => b("attn_q.bias"),
        TensorKind::AttnKBias => b("attn_k.bias"),
        TensorKind::AttnVBias => b("attn_v.bias"),
        TensorKind::AttnQNorm => b("attn_q_norm.weight"),
        TensorKind::AttnKNorm => b("attn_k_norm.weight"),
        // gpt-oss names its pre-FFN norm post_attention_norm.
        TensorKind::FfnNorm => vec![
            format!("blk.{l}.ffn_norm.weight"),
            format!("blk.{l}.post_attention_norm.weight"),
        ],
        TensorKind::FfnNormBias => b("ffn_norm.bias"),
        TensorKind::Router => b("ffn_gate_inp.weight"),
        TensorKind::RouterBias => b("ffn_gate_inp.bias"),
        TensorKind::RouterCorrection => b("exp_probs_b.bias"),
        TensorKind::SharedExpertGate => b("ffn_gate_inp_shexp.weight"),
        // A DeepSeek dense layer's MLP is held as the shared expert.
        TensorKind::SharedGate if !config.has_experts(l) => b("ffn_gate.weight"),
        TensorKind::SharedUp if !config.has_experts(l) => b("ffn_up.weight"),
        TensorKind::SharedDown if !config.has_experts(l) => b("ffn_down.weight"),
        TensorKind::SharedGate => b("ffn_gate_shexp.weight"),
        TensorKind::SharedUp => b("ffn_up_shexp.weight"),
        TensorKind::SharedDown => b("ffn_down_shexp.weight"),
        TensorKind::ExpertGate if dense => b("ffn_gate.weight"),
        TensorKind::ExpertUp if dense => b("ffn_up.weight"),
        TensorKind::ExpertDown if dense => b("ffn_down.weight"),
        // Stacked, or one tensor an expert (Mixtral GGUFs from before
        // llama.cpp stacked them).
        TensorKind::ExpertGate | TensorKind::ExpertUp | TensorKind::ExpertDown => {
            let w = match id.kind {
                TensorKind::ExpertGate => "gate",
                TensorKind::ExpertUp => "up",
                _ => "down",
            };
            vec![
                format!("blk.{l}.ffn_{w}_exps.weight"),
                format!("blk.{l}.ffn_{w}.{}.weight", id.expert),
            ]
        }
        TensorKind::AttnSinks => b("attn_sinks.weight"),
        TensorKind::ExpertGateBias => b("ffn_gate_exps.bias"),
        TensorKind::ExpertUpBias => b("ffn_up_exps.bias"),
        TensorKind::ExpertDownBias => b("ffn_down_exps.bias"),
        TensorKind::AttnQA => b("attn_q_a.weight"),
        TensorKind::AttnQANorm => b("attn_q_a_norm.weight"),
        TensorKind::AttnKvA => b("attn_kv_a_mqa.weight"),
        TensorKind::AttnKvANorm => b("attn_kv_a_norm.weight"),
        TensorKind::AttnKvB => b("attn_kv_b.weight"),
    }
}

/// Finds the GGUF rows of `id` and checks their shape against the config.
pub fn find(
    g: &Gguf,
    config: &ModelConfig,
    family: Family,
    id: TensorId,
) -> Result<Source, QuantizeError> {
    let [rows, cols] = expected_shape(config, id).map(|d| d as usize);
    let cands = names(config, id);
    if id.kind == TensorKind::AttnKvB && !g.tensors.contains_key(&cands[0]) {
        if let Some(found) = split_kv_b(g, config, id, rows, cols) {
            return found;
        }
    }
    let Some((name, info)) = cands.iter().find_map(|n| g.tensors.get(n).map(|t| (n, t))) else {
        return Err(QuantizeError::MissingTensor {
            name: id.to_string(),
            looked_for: cands.join(", "),
        });
    };
    let stacked = id.kind.is_expert() && name.ends_with("_exps.weight");
    let experts = config.n_experts as u64;
    // The PyTorch-order shape config.json implies, for messages.
    let expected: Vec<u64> = match (stacked, rows) {
        (true, _) => vec![cols as u64, rows as u64, experts],
        (false, 1) => vec![cols as u64],
        (false, _) => vec![cols as u64, rows as u64],
    };
    // A one-row tensor may be stored 1-D or as [cols, 1].
    let ok = info.ne == expected || (rows == 1 && !stacked && info.ne == [cols as u64, 1]);
    if !ok {
        return Err(QuantizeError::Shape {
            tensor: name.clone(),
            expected: expected.iter().rev().map(|&d| d as usize).collect(),
            found: info.torch_shape(),
        });
    }
    let heads = match id.kind {
        TensorKind::AttnQ | TensorKind::AttnQBias if family.permuted_qk => {
            Some(config.n_heads as usize)
        }
        TensorKind::AttnK | TensorKind::AttnKBias if family.permuted_qk => {
            Some(config.n_kv_heads as usize)
        }
        _ => None,
    };
    // A bias is one row in mote but one value a head row in the file: its
    // permutation is of columns, not rows; no family here has Q/K biases
    // with permuted rows.
    if heads.is_some() && rows == 1 {
        return Err(QuantizeError::GgufType {
            tensor: name.clone(),
            ggml_type: info.ggml_type.name().into(),
            message: "a Q/K bias of an interleaved-rope family is not supported".into(),
        });
    }
    let (name, first_row) = match stacked {
        true => (format!("{name}[{}]", id.expert), id.expert as usize * rows),
        false => (name.clone(), 0),
    };
    Ok(Source {
        name,
        info: info.clone(),
        first_row,
        rows,
        cols,
        unpermute_heads: heads,
        split_kv_b: None,
    })
}

/// `attn_kv_b` from `attn_k_b` and `attn_v_b`, if the file has them.
fn split_kv_b(
    g: &Gguf,
    config: &ModelConfig,
    id: TensorId,
    rows: usize,
    cols: usize,
) -> Option<Result<Source, QuantizeError>> {
    let l = id.layer;
    let (k_name, v_name) = (
        format!("blk.{l}.attn_k_b.weight"),
        format!("blk.{l}.attn_v_b.weight"),
    );
    let (k_b, v_b) = (g.tensors.get(&k_name)?, g.tensors.get(&v_name)?);
    let m = config.mla?;
    let (nope, v, heads) = (
        m.qk_nope_dim as usize,
        m.v_head_dim as usize,
        config.n_heads as usize,
    );
    let shape_err = |name: &str, want: [usize; 3], t: &TensorInfo| {
        Err(QuantizeError::Shape {
            tensor: name.to_string(),
            expected: want.iter().rev().copied().collect(),
            found: t.torch_shape(),
        })
    };
    let (kw, vw) = ([nope, cols, heads], [cols, v, heads]);
    if k_b.ne.iter().map(|&d| d as usize).ne(kw) {
        return Some(shape_err(&k_name, kw, k_b));
    }
    if v_b.ne.iter().map(|&d| d as usize).ne(vw) {
        return Some(shape_err(&v_name, vw, v_b));
    }
    debug_assert_eq!(rows, heads * (nope + v));
    Some(Ok(Source {
        name: format!("{k_name} + {v_name}"),
        info: v_b.clone(),
        first_row: 0,
        rows,
        cols,
        unpermute_heads: None,
        split_kv_b: Some(SplitKvB {
            k_b: k_b.clone(),
            nope,
            v,
        }),
    }))
}
