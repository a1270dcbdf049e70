//! The model configuration stored in the file: dimensions, routing and rope,
//! one description of the architecture's choices that both the quantizer and
//! the runtime read. Serialised with postcard (compact, no_std, no heap).

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::format::tensor::{TensorId, TensorKind};

/// Most experts per layer this build plans for (fixed-capacity routing lists).
pub const MAX_EXPERTS: u32 = 512;
/// Most experts chosen per token.
pub const MAX_EXPERTS_PER_TOKEN: u32 = 16;
/// Most end-of-sequence token ids a config may list.
pub const MAX_EOS_TOKENS: usize = 8;
/// Most LongRoPE factors (`head_dim / 2`) a config holds.
pub const MAX_ROPE_FACTORS: usize = 256;

/// The model family: decides which tensors each layer has and how the layer
/// computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Architecture {
    /// Mixtral: pre-norm attention with GQA and half-rotation rope, then a
    /// softmax top-k router over SwiGLU experts with renormalised weights.
    Mixtral,
    /// Qwen3-MoE: Mixtral's shape with an RMSNorm on each query and key
    /// head (before rope), explicit `head_dim`, `norm_topk_prob` either way.
    Qwen3Moe,
    /// OLMoE: an RMSNorm over the whole query and key projections (before
    /// rope), many small experts, top-k weights not renormalised by default.
    Olmoe,
    /// Llama (dense): one always-on expert (the MLP), no router.
    Llama,
    /// Qwen2-MoE: q/k/v biases, and a shared expert beside the routed ones
    /// whose output is scaled by a sigmoid gate.
    Qwen2Moe,
    /// Granite MoE: Mixtral's shape with embedding, residual, attention
    /// and logits multipliers, experts stored fused.
    GraniteMoe,
    /// Tencent Hunyuan MoE: an ungated shared MLP beside the routed
    /// experts, RMSNorm on each query and key head after rope, renormalised
    /// top-k weights.
    HunyuanMoe,
    /// Granite MoE with an ungated shared MLP beside the routed experts.
    GraniteMoeShared,
    /// Phi-MoE: LayerNorm with biases, biases on every attention projection
    /// and on the output head, sparsemixer top-2 routing.
    PhiMoe,
    /// DeepSeek-V2: multi-head latent attention ([`Mla`]), shared experts,
    /// dense first layers, softmax routing limited to the best expert
    /// groups (a group scores its best expert).
    DeepseekV2,
    /// DeepSeek-V3 (and Kimi K2): V2's layout with sigmoid routing, a
    /// per-expert correction bias that steers the choice but not the
    /// weights, and groups scored by their two best experts.
    DeepseekV3,
    /// gpt-oss: attention sinks, sliding-window layers alternating with
    /// full ones, biases on every projection and expert, a biased router
    /// (softmax over the top-k logits) and clamped SwiGLU experts.
    GptOss,
}

impl Architecture {
    /// The name `mote inspect` prints.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Mixtral => "mixtral",
            Architecture::Qwen3Moe => "qwen3_moe",
            Architecture::Olmoe => "olmoe",
            Architecture::Llama => "llama",
            Architecture::GraniteMoe => "granitemoe",
            Architecture::Qwen2Moe => "qwen2_moe",
            Architecture::HunyuanMoe => "hunyuan_v1_moe",
            Architecture::GraniteMoeShared => "granitemoeshared",
            Architecture::PhiMoe => "phimoe",
            Architecture::DeepseekV2 => "deepseek_v2",
            Architecture::DeepseekV3 => "deepseek_v3",
            Architecture::GptOss => "gpt_oss",
        }
    }

    /// False for dense families: every token goes to expert 0 with weight 1.
    pub fn has_router(self) -> bool {
        !matches!(self, Architecture::Llama)
    }

    /// How the query and key projections are normalised.
    pub fn qk_norm(self) -> QkNorm {
        match self {
            Architecture::Mixtral => QkNorm::None,
            Architecture::Qwen3Moe => QkNorm::PerHead,
            Architecture::Olmoe => QkNorm::Whole,
            Architecture::HunyuanMoe => QkNorm::PerHeadAfterRope,
            Architecture::Llama
            | Architecture::GraniteMoe
            | Architecture::GraniteMoeShared
            | Architecture::Qwen2Moe
            | Architecture::PhiMoe
            | Architecture::DeepseekV2
            | Architecture::DeepseekV3
            | Architecture::GptOss => QkNorm::None,
        }
    }

    /// LayerNorm with a bias (Phi-MoE) instead of RMSNorm.
    pub fn layer_norm(self) -> bool {
        self == Architecture::PhiMoe
    }

    /// Phi-MoE's sparsemixer routing instead of a softmax over all experts.
    pub fn sparsemixer(self) -> bool {
        self == Architecture::PhiMoe
    }

    /// Whether a shared expert's output is scaled by a sigmoid gate (Qwen2-MoE).
    pub fn shared_expert_gated(self) -> bool {
        self == Architecture::Qwen2Moe
    }

    /// Multi-head latent attention (DeepSeek): the layer caches a
    /// compressed latent and one rope key instead of per-head keys and values.
    pub fn latent_attention(self) -> bool {
        matches!(self, Architecture::DeepseekV2 | Architecture::DeepseekV3)
    }

    /// How the router's logits become expert scores.
    pub fn router_scoring(self) -> RouterScoring {
        match self {
            Architecture::DeepseekV3 => RouterScoring::Sigmoid,
            _ => RouterScoring::Softmax,
        }
    }

    /// Tensors each layer has once (not per expert), in forward order.
    pub fn layer_tensors(self) -> &'static [TensorKind] {
        const PLAIN: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
        ];
        const QK_NORMED: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnQNorm,
            TensorKind::AttnKNorm,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
        ];
        const DENSE: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
        ];
        const QWEN2: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnQBias,
            TensorKind::AttnKBias,
            TensorKind::AttnVBias,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
            TensorKind::SharedGate,
            TensorKind::SharedUp,
            TensorKind::SharedDown,
            TensorKind::SharedExpertGate,
        ];
        const HUNYUAN: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnQNorm,
            TensorKind::AttnKNorm,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
            TensorKind::SharedGate,
            TensorKind::SharedUp,
            TensorKind::SharedDown,
        ];
        const SHARED: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
            TensorKind::SharedGate,
            TensorKind::SharedUp,
            TensorKind::SharedDown,
        ];
        // Kinds are listed in forward order; `ModelConfig::layer_kinds`
        // drops the query compression without `q_lora_rank`, the router in
        // dense layers (where the shared MLP is the layer's MLP), and the
        // correction bias unless the scores are sigmoids (V3).
        const DEEPSEEK: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQA,
            TensorKind::AttnQANorm,
            TensorKind::AttnQ,
            TensorKind::AttnKvA,
            TensorKind::AttnKvANorm,
            TensorKind::AttnKvB,
            TensorKind::AttnO,
            TensorKind::FfnNorm,
            TensorKind::Router,
            TensorKind::RouterCorrection,
            TensorKind::SharedGate,
            TensorKind::SharedUp,
            TensorKind::SharedDown,
        ];
        const GPT_OSS: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnQBias,
            TensorKind::AttnKBias,
            TensorKind::AttnVBias,
            TensorKind::AttnSinks,
            TensorKind::AttnO,
            TensorKind::AttnOBias,
            TensorKind::FfnNorm,
            TensorKind::Router,
            TensorKind::RouterBias,
            TensorKind::ExpertGateBias,
            TensorKind::ExpertUpBias,
            TensorKind::ExpertDownBias,
        ];
        const PHI: &[TensorKind] = &[
            TensorKind::AttnNorm,
            TensorKind::AttnNormBias,
            TensorKind::AttnQ,
            TensorKind::AttnK,
            TensorKind::AttnV,
            TensorKind::AttnQBias,
            TensorKind::AttnKBias,
            TensorKind::AttnVBias,
            TensorKind::AttnO,
            TensorKind::AttnOBias,
            TensorKind::FfnNorm,
            TensorKind::FfnNormBias,
            TensorKind::Router,
        ];
        match self {
            Architecture::DeepseekV2 | Architecture::DeepseekV3 => return DEEPSEEK,
            Architecture::PhiMoe => return PHI,
            Architecture::GptOss => return GPT_OSS,
            Architecture::Qwen2Moe => return QWEN2,
            Architecture::HunyuanMoe => return HUNYUAN,
            Architecture::GraniteMoeShared => return SHARED,
            _ => {}
        }
        match (self.has_router(), self.qk_norm()) {
            (false, _) => DENSE,
            (true, QkNorm::None) => PLAIN,
            (true, _) => QK_NORMED,
        }
    }

    /// Tensors each expert has, in the order they are stored (one contiguous group).
    pub fn expert_tensors(self) -> &'static [TensorKind] {
        &[
            TensorKind::ExpertGate,
            TensorKind::ExpertUp,
            TensorKind::ExpertDown,
        ]
    }
}

/// How router logits become the scores experts are chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterScoring {
    /// Softmax over every expert.
    Softmax,
    /// A sigmoid per expert (DeepSeek-V3).
    Sigmoid,
}

/// Dimensions of multi-head latent attention (DeepSeek-V2/V3). Keys and
/// values are expanded per head from a `kv_lora_rank` latent; a layer
/// caches that latent and one shared `qk_rope_dim` rope key per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mla {
    /// Width of the compressed query (0: queries are projected directly).
    pub q_lora_rank: u32,
    /// Width of the compressed key/value latent.
    pub kv_lora_rank: u32,
    /// Per-head query/key width without rope.
    pub qk_nope_dim: u32,
    /// Per-head query/key width with rope (the key part shared by all heads).
    pub qk_rope_dim: u32,
    /// Per-head value width.
    pub v_head_dim: u32,
}

impl Mla {
    /// Query/key width of one head.
    pub fn qk_head_dim(&self) -> usize {
        (self.qk_nope_dim + self.qk_rope_dim) as usize
    }

    /// Cached floats per position and layer: the latent and the rope key.
    pub fn cache_width(&self) -> usize {
        (self.kv_lora_rank + self.qk_rope_dim) as usize
    }
}

/// Normalisation of the query and key projections (before rope, or after
/// it for Hunyuan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// None (Mixtral).
    None,
    /// RMSNorm over each head's `head_dim` values, one weight vector shared
    /// by the heads (Qwen3).
    PerHead,
    /// RMSNorm over the whole projection (OLMoE).
    Whole,
    /// RMSNorm over each head after rope (Hunyuan).
    PerHeadAfterRope,
}

/// How rope positions are scaled for longer contexts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain rope.
    None,
    /// Positions divided by `factor` (transformers' `"linear"`).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling (transformers' `"llama3"`):
    /// long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelengths above `original_max_position / low_freq_factor` are scaled.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// Context of the model before scaling.
        original_max_position: u32,
    },
    /// Phi's LongRoPE: each frequency divided by its own factor
    /// (`ModelConfig::rope_short_factor` for contexts up to
    /// `original_max_position`, `rope_long_factor` beyond), and rotated
    /// queries and keys multiplied by the matching mscale.
    LongRope {
        /// Context the short factors are for.
        original_max_position: u32,
        /// Scale of cos/sin with the short factors.
        short_mscale: f32,
        /// Scale of cos/sin with the long factors.
        long_mscale: f32,
    },
    /// YaRN (transformers' `"yarn"`): frequencies with wavelengths longer
    /// than the original context divided by `factor`, short ones kept, a
    /// linear ramp between the correction range of `beta_fast` and
    /// `beta_slow` rotations; rotated queries and keys scaled by
    /// `attention_factor`.
    Yarn {
        /// Context extension factor.
        factor: f32,
        /// Context of the model before scaling.
        original_max_position: u32,
        /// Rotations over the original context above which a frequency is kept.
        beta_fast: f32,
        /// Rotations below which a frequency is interpolated.
        beta_slow: f32,
        /// Scale of cos/sin (the quantizer computes it from the config's mscales).
        attention_factor: f32,
        /// Round the correction range to whole dimensions (transformers'
        /// default; gpt-oss turns it off).
        truncate: bool,
    },
}

/// Everything the runtime needs to know about a model besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model family.
    pub architecture: Architecture,
    /// Number of token ids.
    pub vocab_size: u32,
    /// Width of the residual stream.
    pub hidden_size: u32,
    /// Number of transformer layers.
    pub n_layers: u32,
    /// Query heads.
    pub n_heads: u32,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: u32,
    /// Width of one head.
    pub head_dim: u32,
    /// Hidden width of one expert's SwiGLU.
    pub expert_ffn_size: u32,
    /// Routed experts per layer.
    pub n_experts: u32,
    /// Experts chosen per token.
    pub n_experts_per_token: u32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Rope base frequency.
    pub rope_theta: f32,
    /// Rope position scaling.
    pub rope_scaling: RopeScaling,
    /// Context length the model was trained for (informational; the session
    /// plans its own `max_context`).
    pub max_position: u32,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens: generation stops at any of them.
    pub eos_token_ids: heapless::Vec<u32, MAX_EOS_TOKENS>,
    /// True when the logits reuse the embedding table (no `lm_head` tensor).
    pub tied_embeddings: bool,
    /// Renormalise the chosen experts' router probabilities to sum to one.
    pub norm_topk_prob: bool,
    /// Clamp queries, keys and values to ±this after the projections (OLMoE's `clip_qkv`).
    pub clip_qkv: Option<f32>,
    /// Multiplies the token embeddings (Granite; 1 elsewhere).
    pub embedding_multiplier: f32,
    /// Multiplies each block's output before it joins the residual stream
    /// (Granite; 1 elsewhere).
    pub residual_multiplier: f32,
    /// Attention score scale (Granite's `attention_multiplier`); `None`:
    /// 1/√head_dim.
    pub attention_multiplier: Option<f32>,
    /// Divides the logits (Granite's `logits_scaling`; 1 elsewhere).
    pub logits_scaling: f32,
    /// Hidden width of the shared expert (0: none).
    pub shared_expert_ffn_size: u32,
    /// Sparsemixer's jitter epsilon: experts whose logit is more than
    /// `2·eps` (relative) below the best are masked (Phi-MoE; 0 elsewhere).
    pub router_jitter: f32,
    /// LongRoPE per-frequency divisors for short contexts (`head_dim / 2`
    /// values; empty unless `rope_scaling` is `LongRope`).
    pub rope_short_factor: heapless::Vec<f32, MAX_ROPE_FACTORS>,
    /// LongRoPE divisors past `original_max_position`.
    pub rope_long_factor: heapless::Vec<f32, MAX_ROPE_FACTORS>,
    // Format 4 added the fields below; a format-3 file means
    // `FORMAT3_TAIL`'s values.
    /// Multi-head latent attention's dimensions (DeepSeek; `None` elsewhere).
    /// With it, `n_kv_heads` equals `n_heads` and `head_dim` is the
    /// query/key head width (nope + rope).
    pub mla: Option<Mla>,
    /// Rope rotates adjacent pairs `(x[2i], x[2i+1])` (DeepSeek) instead of
    /// the two halves of a head.
    pub rope_interleaved: bool,
    /// Expert groups the router first chooses among (1: no groups).
    pub expert_groups: u32,
    /// Groups kept per token (the experts of the others are masked).
    pub topk_groups: u32,
    /// Multiplies the routed experts' weights (DeepSeek; 1 elsewhere).
    pub routed_scaling_factor: f32,
    /// Leading layers with a dense MLP (held as the shared-expert tensors)
    /// instead of experts (DeepSeek's `first_k_dense_replace`).
    pub first_dense_layers: u32,
    /// Hidden width of those dense MLPs.
    pub dense_ffn_size: u32,
    /// Keys a sliding-window layer attends to, its own included (0: none).
    pub sliding_window: u32,
    /// Every `sliding_period`-th layer (counting from 1) attends to the
    /// whole context, the others slide (gpt-oss: 2; 0: every layer slides).
    pub sliding_period: u32,
    /// gpt-oss's SwiGLU clamp: gates clamped above at this, ups to ±this
    /// (0: plain SwiGLU).
    pub swiglu_limit: f32,
    /// gpt-oss's SwiGLU slope: `gate · sigmoid(alpha · gate) · (up + 1)`.
    pub swiglu_alpha: f32,
}

/// The postcard bytes of the fields format 4 appended to the config, with
/// the values a format-3 file means: no MLA (`None`), half-rotation rope
/// (`false`), one group of which one is kept (varints 1, 1), scale 1.0
/// (f32 LE), no dense layers (0, 0), no sliding window (0, 0), plain
/// SwiGLU (0.0, 0.0).
pub const FORMAT3_TAIL: [u8; 20] = [
    0, 0, 1, 1, 0x00, 0x00, 0x80, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

impl ModelConfig {
    /// Query projection width (`n_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_heads as usize * self.head_dim as usize
    }

    /// Key/value projection width (`n_kv_heads * head_dim`; with MLA, the
    /// latent and rope key one position caches).
    pub fn kv_dim(&self) -> usize {
        match self.mla {
            Some(m) => m.cache_width(),
            None => self.n_kv_heads as usize * self.head_dim as usize,
        }
    }

    /// Floats one position holds in the value cache (0 with MLA, whose
    /// values are expanded from the latent in the key cache).
    pub fn v_cache_dim(&self) -> usize {
        if self.mla.is_some() {
            0
        } else {
            self.kv_dim()
        }
    }

    /// Width of the attention output, the output projection's input.
    pub fn attn_out_dim(&self) -> usize {
        match self.mla {
            Some(m) => self.n_heads as usize * m.v_head_dim as usize,
            None => self.q_dim(),
        }
    }

    /// Dimensions rope rotates in each head.
    pub fn rope_dim(&self) -> usize {
        match self.mla {
            Some(m) => m.qk_rope_dim as usize,
            None => self.head_dim as usize,
        }
    }

    /// True if `layer` holds expert tensors: routed experts, or a dense
    /// model's one always-on expert; false for DeepSeek's dense first layers.
    pub fn has_experts(&self, layer: u32) -> bool {
        layer >= self.first_dense_layers
    }

    /// Layers holding experts (all but DeepSeek's dense first layers).
    pub fn expert_layers(&self) -> u32 {
        self.n_layers - self.first_dense_layers.min(self.n_layers)
    }

    /// True if `layer` attends only to the last `sliding_window` positions.
    pub fn slides(&self, layer: u32) -> bool {
        self.sliding_window > 0
            && (self.sliding_period == 0 || !(layer + 1).is_multiple_of(self.sliding_period))
    }

    /// Widest MLP hidden layer: experts, shared expert or dense layers.
    pub fn widest_ffn(&self) -> usize {
        self.expert_ffn_size
            .max(self.shared_expert_ffn_size)
            .max(self.dense_ffn_size) as usize
    }

    /// Kinds of `layer` in forward order, and whether each is per expert.
    pub fn layer_kinds(&self, layer: u32) -> heapless::Vec<(TensorKind, bool), 32> {
        let moe = self.has_experts(layer);
        let q_lora = self.mla.is_some_and(|m| m.q_lora_rank > 0);
        let mut kinds: heapless::Vec<(TensorKind, bool), 32> = heapless::Vec::new();
        for &k in self.architecture.layer_tensors() {
            let keep = match k {
                TensorKind::AttnQA | TensorKind::AttnQANorm => q_lora,
                TensorKind::RouterCorrection => {
                    moe && self.architecture.router_scoring() == RouterScoring::Sigmoid
                }
                TensorKind::Router
                | TensorKind::RouterBias
                | TensorKind::ExpertGateBias
                | TensorKind::ExpertUpBias
                | TensorKind::ExpertDownBias => moe,
                TensorKind::SharedGate | TensorKind::SharedUp | TensorKind::SharedDown => {
                    !moe || self.shared_expert_ffn_size > 0
                }
                _ => true,
            };
            if keep {
                let _ = kinds.push((k, false));
            }
        }
        if moe {
            for &k in self.architecture.expert_tensors() {
                let _ = kinds.push((k, true));
            }
        }
        kinds
    }

    /// True if `token` ends generation.
    pub fn is_eos(&self, token: u32) -> bool {
        self.eos_token_ids.contains(&token)
    }

    /// Checks that the dimensions are usable: nonzero, consistent and within
    /// this build's fixed capacities.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason| Err(Error::BadConfig { reason });
        if self.vocab_size == 0 || self.hidden_size == 0 || self.n_layers == 0 {
            return bad("vocab_size, hidden_size and n_layers must be nonzero");
        }
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.head_dim == 0 {
            return bad("n_heads, n_kv_heads and head_dim must be nonzero");
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad("n_heads must be a multiple of n_kv_heads");
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even for rope");
        }
        if self.expert_ffn_size == 0 || self.n_experts == 0 {
            return bad("expert_ffn_size and n_experts must be nonzero");
        }
        if self.n_experts > MAX_EXPERTS {
            return bad("more experts per layer than this build supports (512)");
        }
        if self.n_experts_per_token == 0
            || self.n_experts_per_token > self.n_experts
            || self.n_experts_per_token > MAX_EXPERTS_PER_TOKEN
        {
            return bad("n_experts_per_token must be in 1..=min(n_experts, 16)");
        }
        // Bound every dimension so sizes computed from them cannot overflow.
        let limit = 1 << 24;
        if [
            self.vocab_size,
            self.hidden_size,
            self.head_dim,
            self.expert_ffn_size,
        ]
        .iter()
        .any(|&d| d > limit)
            || self.n_layers > 4096
            || self.n_heads > 4096
            || self.n_heads as u64 * self.head_dim as u64 > limit as u64
        {
            return bad("a dimension is implausibly large");
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad("norm_eps must be finite and non-negative");
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rope_theta must be finite and positive");
        }
        let multipliers = [
            self.embedding_multiplier,
            self.residual_multiplier,
            self.logits_scaling,
        ];
        if multipliers
            .iter()
            .chain(self.attention_multiplier.iter())
            .any(|m| !(m.is_finite() && *m != 0.0))
        {
            return bad("multipliers must be finite and nonzero");
        }
        if !self.architecture.has_router() && (self.n_experts != 1 || self.n_experts_per_token != 1)
        {
            return bad("a dense model has exactly one expert");
        }
        let shared = self
            .architecture
            .layer_tensors()
            .contains(&TensorKind::SharedGate);
        // DeepSeek's shared experts are optional (`n_shared_experts`).
        let optional = self.architecture.latent_attention();
        if (shared != (self.shared_expert_ffn_size > 0) && !optional)
            || self.shared_expert_ffn_size > limit
        {
            return bad(
                "shared_expert_ffn_size must be nonzero exactly for families with a shared expert",
            );
        }
        if let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } = self.rope_scaling
        {
            let ok = [factor, low_freq_factor, high_freq_factor]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0)
                && high_freq_factor > low_freq_factor
                && original_max_position > 0;
            if !ok {
                return bad("llama3 rope scaling needs positive factors, high_freq_factor > low_freq_factor");
            }
        }
        if let Some(c) = self.clip_qkv {
            if !(c.is_finite() && c > 0.0) {
                return bad("clip_qkv must be finite and positive");
            }
        }
        if let RopeScaling::LongRope {
            original_max_position,
            short_mscale,
            long_mscale,
        } = self.rope_scaling
        {
            let half = self.head_dim as usize / 2;
            let factors_ok = [&self.rope_short_factor, &self.rope_long_factor]
                .iter()
                .all(|f| f.len() == half && f.iter().all(|v| v.is_finite() && *v > 0.0));
            let scales_ok = [short_mscale, long_mscale]
                .iter()
                .all(|m| m.is_finite() && *m > 0.0);
            if !factors_ok || !scales_ok || original_max_position == 0 {
                return bad("longrope needs head_dim/2 positive short and long factors and positive mscales");
            }
        } else if !self.rope_short_factor.is_empty() || !self.rope_long_factor.is_empty() {
            return bad("rope factors are only for longrope scaling");
        }
        if self.architecture.sparsemixer() && self.n_experts_per_token != 2 {
            return bad("sparsemixer routing chooses exactly 2 experts");
        }
        if !(self.router_jitter.is_finite() && self.router_jitter >= 0.0) {
            return bad("router_jitter must be finite and non-negative");
        }
        if self.architecture == Architecture::PhiMoe && self.tied_embeddings {
            return bad("Phi-MoE has a biased lm_head, so it cannot tie it to the embeddings");
        }
        self.validate_deepseek()?;
        if !(self.swiglu_limit.is_finite()
            && self.swiglu_limit >= 0.0
            && self.swiglu_alpha.is_finite())
        {
            return bad("swiglu_limit must be finite and non-negative, swiglu_alpha finite");
        }
        if (self.architecture == Architecture::GptOss) != (self.swiglu_alpha != 0.0) {
            return bad("swiglu_alpha is nonzero exactly for gpt-oss");
        }
        if let RopeScaling::Yarn {
            factor,
            original_max_position,
            beta_fast,
            beta_slow,
            attention_factor,
            ..
        } = self.rope_scaling
        {
            let positive = [factor, beta_fast, beta_slow, attention_factor]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0);
            if !positive || original_max_position == 0 {
                return bad("yarn rope scaling needs positive factor, betas, attention_factor and original context");
            }
        }
        if let RopeScaling::Linear { factor } = self.rope_scaling {
            if !(factor.is_finite() && factor > 0.0) {
                return bad("linear rope scaling factor must be finite and positive");
            }
        }
        Ok(())
    }

    /// Checks latent attention, expert groups, the routed scale and dense
    /// first layers.
    fn validate_deepseek(&self) -> Result<(), Error> {
        let bad = |reason| Err(Error::BadConfig { reason });
        let limit = 1 << 20;
        if self.mla.is_some() != self.architecture.latent_attention() {
            return bad("latent attention dimensions are for DeepSeek families only");
        }
        if let Some(m) = self.mla {
            let dims = [m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim, m.v_head_dim];
            if dims.iter().any(|&d| d == 0 || d > limit) || m.q_lora_rank > limit {
                return bad("latent attention dimensions must be nonzero (q_lora_rank may be 0) and plausible");
            }
            if !m.qk_rope_dim.is_multiple_of(2) {
                return bad("qk_rope_head_dim must be even for rope");
            }
            if self.n_kv_heads != self.n_heads || self.head_dim as usize != m.qk_head_dim() {
                return bad(
                    "latent attention has n_kv_heads == n_heads and head_dim == qk_nope + qk_rope",
                );
            }
        }
        let groups = self.expert_groups;
        if groups == 0
            || !self.n_experts.is_multiple_of(groups)
            || self.topk_groups == 0
            || self.topk_groups > groups
            || (self.n_experts / groups) * self.topk_groups < self.n_experts_per_token
        {
            return bad("expert groups must divide n_experts, and the kept groups must hold n_experts_per_token experts");
        }
        if !(self.routed_scaling_factor.is_finite() && self.routed_scaling_factor > 0.0) {
            return bad("routed_scaling_factor must be finite and positive");
        }
        if self.first_dense_layers > self.n_layers
            || (self.first_dense_layers > 0) != (self.dense_ffn_size > 0)
            || (self.first_dense_layers > 0 && !self.architecture.latent_attention())
            || self.dense_ffn_size > limit
        {
            return bad(
                "dense first layers (DeepSeek) need a dense_ffn_size, and no more than n_layers",
            );
        }
        Ok(())
    }

    /// Encodes the config into `buf`, returning the bytes written.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
        postcard::to_slice(self, buf).map_err(|_| Error::BadConfig {
            reason: "config does not fit in 4096 bytes",
        })
    }

    /// Decodes and validates a config (a format-3 one with
    /// [`FORMAT3_TAIL`] appended).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (config, rest): (ModelConfig, _) =
            postcard::take_from_bytes(bytes).map_err(|_| Error::BadConfig {
                reason: "config bytes do not decode",
            })?;
        if !rest.is_empty() {
            return Err(Error::BadConfig {
                reason: "trailing bytes after the config",
            });
        }
        config.validate()?;
        Ok(config)
    }
}

/// `[rows, cols]` tensor `id` must have under `config`.
pub fn expected_shape(config: &ModelConfig, id: TensorId) -> [u32; 2] {
    let h = config.hidden_size;
    let q = config.n_heads * config.head_dim;
    let kv = config.n_kv_heads * config.head_dim;
    let f = config.expert_ffn_size;
    // A dense layer's MLP is held in the shared expert's tensors.
    let shared = match id.layer < config.first_dense_layers {
        true => config.dense_ffn_size,
        false => config.shared_expert_ffn_size,
    };
    let heads = config.n_heads;
    if let Some(m) = config.mla {
        let q_in = if m.q_lora_rank > 0 { m.q_lora_rank } else { h };
        match id.kind {
            TensorKind::AttnQA => return [m.q_lora_rank, h],
            TensorKind::AttnQANorm => return [1, m.q_lora_rank],
            TensorKind::AttnQ => return [q, q_in],
            TensorKind::AttnKvA => return [m.kv_lora_rank + m.qk_rope_dim, h],
            TensorKind::AttnKvANorm => return [1, m.kv_lora_rank],
            TensorKind::AttnKvB => return [heads * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank],
            TensorKind::AttnO => return [h, heads * m.v_head_dim],
            _ => {}
        }
    }
    match id.kind {
        // Only latent-attention families have these (above).
        TensorKind::AttnQA
        | TensorKind::AttnQANorm
        | TensorKind::AttnKvA
        | TensorKind::AttnKvANorm
        | TensorKind::AttnKvB => [0, 0],
        TensorKind::RouterCorrection | TensorKind::RouterBias => [1, config.n_experts],
        TensorKind::AttnSinks => [1, config.n_heads],
        TensorKind::ExpertGateBias | TensorKind::ExpertUpBias => [config.n_experts, f],
        TensorKind::ExpertDownBias => [config.n_experts, h],
        TensorKind::TokenEmbedding | TensorKind::LmHead => [config.vocab_size, h],
        TensorKind::OutputNorm
        | TensorKind::AttnNorm
        | TensorKind::FfnNorm
        | TensorKind::OutputNormBias
        | TensorKind::AttnNormBias
        | TensorKind::FfnNormBias
        | TensorKind::AttnOBias => [1, h],
        TensorKind::LmHeadBias => [1, config.vocab_size],
        TensorKind::AttnQNorm | TensorKind::AttnKNorm
            if matches!(
                config.architecture.qk_norm(),
                QkNorm::PerHead | QkNorm::PerHeadAfterRope
            ) =>
        {
            [1, config.head_dim]
        }
        TensorKind::AttnQNorm | TensorKind::AttnQBias => [1, q],
        TensorKind::AttnKNorm | TensorKind::AttnKBias | TensorKind::AttnVBias => [1, kv],
        TensorKind::SharedGate | TensorKind::SharedUp => [shared, h],
        TensorKind::SharedDown => [h, shared],
        TensorKind::SharedExpertGate => [1, h],
        TensorKind::AttnQ => [q, h],
        TensorKind::AttnK | TensorKind::AttnV => [kv, h],
        TensorKind::AttnO => [h, q],
        TensorKind::Router => [config.n_experts, h],
        TensorKind::ExpertGate | TensorKind::ExpertUp => [f, h],
        TensorKind::ExpertDown => [h, f],
    }
}

/// Global (non-layer) tensors of a model, in directory order.
pub fn global_tensors(config: &ModelConfig) -> &'static [TensorKind] {
    if config.architecture == Architecture::PhiMoe {
        return &[
            TensorKind::TokenEmbedding,
            TensorKind::OutputNorm,
            TensorKind::LmHead,
            TensorKind::OutputNormBias,
            TensorKind::LmHeadBias,
        ];
    }
    if config.tied_embeddings {
        &[TensorKind::TokenEmbedding, TensorKind::OutputNorm]
    } else {
        &[
            TensorKind::TokenEmbedding,
            TensorKind::OutputNorm,
            TensorKind::LmHead,
        ]
    }
}

#[cfg(test)]
pub(crate) fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Mixtral,
        vocab_size: 64,
        hidden_size: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        expert_ffn_size: 40,
        n_experts: 4,
        n_experts_per_token: 2,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        max_position: 128,
        bos_token_id: Some(1),
        eos_token_ids: heapless::Vec::from_slice(&[2]).unwrap(),
        tied_embeddings: false,
        norm_topk_prob: true,
        clip_qkv: None,
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        attention_multiplier: None,
        logits_scaling: 1.0,
        shared_expert_ffn_size: 0,
        router_jitter: 0.0,
        rope_short_factor: heapless::Vec::new(),
        rope_long_factor: heapless::Vec::new(),
        mla: None,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let c = tiny_config();
        let mut buf = [0u8; 512];
        let n = c.encode(&mut buf).unwrap().len();
        assert_eq!(ModelConfig::decode(&buf[..n]).unwrap(), c);
    }

    #[test]
    fn a_format_3_config_decodes_with_the_format_3_meaning() {
        let c = tiny_config();
        let mut buf = [0u8; 512];
        let n = c.encode(&mut buf).unwrap().len();
        // The format-4 fields of a format-3 meaning encode as FORMAT3_TAIL.
        assert_eq!(&buf[n - FORMAT3_TAIL.len()..n], &FORMAT3_TAIL);
        // A format-3 writer stopped before them: alone its bytes do not
        // decode; Model::open appends the tail (the built-in model is format 3).
        assert!(ModelConfig::decode(&buf[..n - FORMAT3_TAIL.len()]).is_err());
    }

    #[test]
    fn config_rejects_bad_dims() {
        let mut c = tiny_config();
        c.n_experts_per_token = 5;
        assert!(matches!(c.validate(), Err(Error::BadConfig { .. })));
        let mut c = tiny_config();
        c.n_kv_heads = 3;
        assert!(c.validate().is_err());
    }
}
