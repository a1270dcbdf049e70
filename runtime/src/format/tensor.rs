//! Tensor identities, element types and the fixed 64-byte directory record.
//!
//! A record is read in place from the file's bytes (no decoding onto the
//! heap); [`TensorRecord::decode`] checks every field it can on its own, and
//! [`Model::open`](crate::Model::open) checks it against the file's size.

use core::fmt;

use crate::quant::{BLOCK_LEN, MXFP4_BLOCK_BYTES, Q4_BLOCK_BYTES, Q8_BLOCK_BYTES};

/// Layer or expert field of a tensor that has none (a global tensor, a
/// non-expert tensor).
pub const NONE: u32 = u32::MAX;

/// Size of one directory record in bytes.
pub const RECORD_BYTES: usize = 64;

/// What a tensor is for. The numeric values are written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum TensorKind {
    /// Token embedding table, `[vocab, hidden]`.
    TokenEmbedding = 0,
    /// Final RMSNorm weight, `[1, hidden]`.
    OutputNorm = 1,
    /// Output projection to logits, `[vocab, hidden]`.
    LmHead = 2,
    /// The final LayerNorm's bias, `[1, hidden]` (Phi-MoE).
    OutputNormBias = 3,
    /// The output projection's bias, `[1, vocab]` (Phi-MoE).
    LmHeadBias = 4,
    /// RMSNorm before attention, `[1, hidden]`.
    AttnNorm = 10,
    /// Query projection, `[heads * head_dim, hidden]`.
    AttnQ = 11,
    /// Key projection, `[kv_heads * head_dim, hidden]`.
    AttnK = 12,
    /// Value projection, `[kv_heads * head_dim, hidden]`.
    AttnV = 13,
    /// Attention output projection, `[hidden, heads * head_dim]`.
    AttnO = 14,
    /// RMSNorm of the query projection (per head or over the whole projection).
    AttnQNorm = 15,
    /// RMSNorm of the key projection (per head or over the whole projection).
    AttnKNorm = 16,
    /// Bias of the query projection, `[1, heads * head_dim]`.
    AttnQBias = 17,
    /// Bias of the key projection, `[1, kv_heads * head_dim]`.
    AttnKBias = 18,
    /// Bias of the value projection, `[1, kv_heads * head_dim]`.
    AttnVBias = 19,
    /// RMSNorm before the MoE block, `[1, hidden]`.
    FfnNorm = 20,
    /// Router (gate) producing one logit per expert, `[experts, hidden]`.
    Router = 21,
    /// An expert's gate projection (`w1`), `[ffn, hidden]`.
    ExpertGate = 22,
    /// An expert's up projection (`w3`), `[ffn, hidden]`.
    ExpertUp = 23,
    /// An expert's down projection (`w2`), `[hidden, ffn]`.
    ExpertDown = 24,
    /// The shared expert's gate projection, `[shared_ffn, hidden]`.
    SharedGate = 25,
    /// The shared expert's up projection, `[shared_ffn, hidden]`.
    SharedUp = 26,
    /// The shared expert's down projection, `[hidden, shared_ffn]`.
    SharedDown = 27,
    /// The sigmoid gate of the shared expert's output, `[1, hidden]`.
    SharedExpertGate = 28,
    /// The attention output projection's bias, `[1, hidden]` (Phi-MoE).
    AttnOBias = 29,
    /// The attention LayerNorm's bias, `[1, hidden]` (Phi-MoE).
    AttnNormBias = 30,
    /// The FFN LayerNorm's bias, `[1, hidden]` (Phi-MoE).
    FfnNormBias = 31,
    /// Query compression (MLA's `q_a_proj`), `[q_lora_rank, hidden]`.
    AttnQA = 32,
    /// RMSNorm of the compressed query, `[1, q_lora_rank]`.
    AttnQANorm = 33,
    /// Key/value compression and the shared rope key (MLA's
    /// `kv_a_proj_with_mqa`), `[kv_lora_rank + qk_rope_dim, hidden]`.
    AttnKvA = 34,
    /// RMSNorm of the key/value latent, `[1, kv_lora_rank]`.
    AttnKvANorm = 35,
    /// Per-head key (nope part) and value expansion of the latent (MLA's
    /// `kv_b_proj`), `[heads * (qk_nope_dim + v_head_dim), kv_lora_rank]`.
    AttnKvB = 36,
    /// Per-expert bias added to the scores when choosing experts, not to
    /// their weights (DeepSeek-V3's `e_score_correction_bias`), `[1, experts]`.
    RouterCorrection = 37,
    /// Per-head attention sink logits (gpt-oss), `[1, heads]`.
    AttnSinks = 38,
    /// Bias of the router logits (gpt-oss), `[1, experts]`.
    RouterBias = 39,
    /// Every expert's gate-projection bias, row per expert (gpt-oss), `[experts, ffn]`.
    ExpertGateBias = 40,
    /// Every expert's up-projection bias, row per expert, `[experts, ffn]`.
    ExpertUpBias = 41,
    /// Every expert's down-projection bias, row per expert, `[experts, hidden]`.
    ExpertDownBias = 42,
}

// Kind codes index fixed tables of 64 (model::layout::Index).
const _: () = {
    let mut i = 0;
    while i < TensorKind::ALL.len() {
        assert!((TensorKind::ALL[i] as u16) < 64);
        i += 1;
    }
};

impl TensorKind {
    /// Every kind, for decoding.
    pub const ALL: [TensorKind; 38] = [
        TensorKind::TokenEmbedding,
        TensorKind::OutputNorm,
        TensorKind::LmHead,
        TensorKind::OutputNormBias,
        TensorKind::LmHeadBias,
        TensorKind::AttnNorm,
        TensorKind::AttnQ,
        TensorKind::AttnK,
        TensorKind::AttnV,
        TensorKind::AttnO,
        TensorKind::AttnQNorm,
        TensorKind::AttnKNorm,
        TensorKind::AttnQBias,
        TensorKind::AttnKBias,
        TensorKind::AttnVBias,
        TensorKind::FfnNorm,
        TensorKind::Router,
        TensorKind::ExpertGate,
        TensorKind::ExpertUp,
        TensorKind::ExpertDown,
        TensorKind::SharedGate,
        TensorKind::SharedUp,
        TensorKind::SharedDown,
        TensorKind::SharedExpertGate,
        TensorKind::AttnOBias,
        TensorKind::AttnNormBias,
        TensorKind::FfnNormBias,
        TensorKind::AttnQA,
        TensorKind::AttnQANorm,
        TensorKind::AttnKvA,
        TensorKind::AttnKvANorm,
        TensorKind::AttnKvB,
        TensorKind::RouterCorrection,
        TensorKind::AttnSinks,
        TensorKind::RouterBias,
        TensorKind::ExpertGateBias,
        TensorKind::ExpertUpBias,
        TensorKind::ExpertDownBias,
    ];

    /// The kind with this file code, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as u16 == code)
    }

    /// A short stable name (`attn_q`, `expert_down`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::TokenEmbedding => "token_embedding",
            TensorKind::OutputNorm => "output_norm",
            TensorKind::LmHead => "lm_head",
            TensorKind::OutputNormBias => "output_norm_bias",
            TensorKind::LmHeadBias => "lm_head_bias",
            TensorKind::AttnOBias => "attn_o_bias",
            TensorKind::AttnNormBias => "attn_norm_bias",
            TensorKind::FfnNormBias => "ffn_norm_bias",
            TensorKind::AttnNorm => "attn_norm",
            TensorKind::AttnQ => "attn_q",
            TensorKind::AttnK => "attn_k",
            TensorKind::AttnV => "attn_v",
            TensorKind::AttnO => "attn_o",
            TensorKind::AttnQNorm => "attn_q_norm",
            TensorKind::AttnKNorm => "attn_k_norm",
            TensorKind::AttnQBias => "attn_q_bias",
            TensorKind::AttnKBias => "attn_k_bias",
            TensorKind::AttnVBias => "attn_v_bias",
            TensorKind::SharedGate => "shared_gate",
            TensorKind::SharedUp => "shared_up",
            TensorKind::SharedDown => "shared_down",
            TensorKind::SharedExpertGate => "shared_expert_gate",
            TensorKind::FfnNorm => "ffn_norm",
            TensorKind::Router => "router",
            TensorKind::ExpertGate => "expert_gate",
            TensorKind::ExpertUp => "expert_up",
            TensorKind::ExpertDown => "expert_down",
            TensorKind::AttnQA => "attn_q_a",
            TensorKind::AttnQANorm => "attn_q_a_norm",
            TensorKind::AttnKvA => "attn_kv_a",
            TensorKind::AttnKvANorm => "attn_kv_a_norm",
            TensorKind::AttnKvB => "attn_kv_b",
            TensorKind::RouterCorrection => "router_correction",
            TensorKind::AttnSinks => "attn_sinks",
            TensorKind::RouterBias => "router_bias",
            TensorKind::ExpertGateBias => "expert_gate_bias",
            TensorKind::ExpertUpBias => "expert_up_bias",
            TensorKind::ExpertDownBias => "expert_down_bias",
        }
    }

    /// True for the three matrices of one expert.
    pub fn is_expert(self) -> bool {
        matches!(
            self,
            TensorKind::ExpertGate | TensorKind::ExpertUp | TensorKind::ExpertDown
        )
    }

    /// True for the matrices the runtime reads a row at a time (the
    /// embedding lookup, MLA's absorbed `kv_b`): they must be planar.
    pub fn read_by_rows(self) -> bool {
        matches!(self, TensorKind::TokenEmbedding | TensorKind::AttnKvB)
    }

    /// True for tensors that are kept in f32 whatever the file's weight type
    /// (norms and routers: small, and precision-critical).
    pub fn stays_f32(self) -> bool {
        matches!(
            self,
            TensorKind::OutputNorm
                | TensorKind::AttnNorm
                | TensorKind::AttnQNorm
                | TensorKind::AttnKNorm
                | TensorKind::AttnQBias
                | TensorKind::AttnKBias
                | TensorKind::AttnVBias
                | TensorKind::SharedExpertGate
                | TensorKind::FfnNorm
                | TensorKind::Router
                | TensorKind::OutputNormBias
                | TensorKind::LmHeadBias
                | TensorKind::AttnOBias
                | TensorKind::AttnNormBias
                | TensorKind::FfnNormBias
                | TensorKind::AttnQANorm
                | TensorKind::AttnKvANorm
                | TensorKind::RouterCorrection
                | TensorKind::AttnSinks
                | TensorKind::RouterBias
                | TensorKind::ExpertGateBias
                | TensorKind::ExpertUpBias
                | TensorKind::ExpertDownBias
        )
    }
}

/// Element type of a tensor's bytes. The numeric values are written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// IEEE f32, little-endian.
    F32 = 0,
    /// IEEE f16, little-endian.
    F16 = 1,
    /// Blocks of 32 × i8 with one f16 scale (34 bytes a block).
    Q8 = 8,
    /// Blocks of 32 × 4-bit with one f16 scale (18 bytes a block).
    Q4 = 9,
    /// OCP MXFP4 (gpt-oss's experts, kept as shipped): blocks of 32 × FP4
    /// E2M1 with one power-of-two E8M0 scale (17 bytes a block).
    Mxfp4 = 10,
}

impl DType {
    /// The type with this file code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        [DType::F32, DType::F16, DType::Q8, DType::Q4, DType::Mxfp4]
            .into_iter()
            .find(|d| *d as u8 == code)
    }

    /// Bytes one row of `cols` logical elements occupies. Block types pad
    /// the row to a whole number of 32-element blocks.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            DType::F32 => cols * 4,
            DType::F16 => cols * 2,
            DType::Q8 => cols.div_ceil(BLOCK_LEN) * Q8_BLOCK_BYTES,
            DType::Q4 => cols.div_ceil(BLOCK_LEN) * Q4_BLOCK_BYTES,
            DType::Mxfp4 => cols.div_ceil(BLOCK_LEN) * MXFP4_BLOCK_BYTES,
        }
    }

    /// Bytes of a `rows × cols` tensor, or `None` on overflow. Computed in
    /// u64 so that shapes read from a file cannot overflow on 32-bit targets.
    pub fn tensor_bytes(self, rows: u64, cols: u64) -> Option<u64> {
        let blocks = cols.div_ceil(BLOCK_LEN as u64);
        let row = match self {
            DType::F32 => cols.checked_mul(4)?,
            DType::F16 => cols.checked_mul(2)?,
            DType::Q8 => blocks * Q8_BLOCK_BYTES as u64,
            DType::Q4 => blocks * Q4_BLOCK_BYTES as u64,
            DType::Mxfp4 => blocks * MXFP4_BLOCK_BYTES as u64,
        };
        row.checked_mul(rows)
    }

    /// True for the block-quantized types (their kernels read int8 activations).
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8 | DType::Q4 | DType::Mxfp4)
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Q8 => "int8",
            DType::Q4 => "int4",
            DType::Mxfp4 => "mxfp4",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a quantized matrix's rows sit in its bytes. The numeric values are
/// written in the file (the record's byte 3; files before layouts have 0).
///
/// A layout moves bytes, never numbers: every row holds the same block
/// values and scales in any layout, so a file can be converted from one to
/// another losslessly. It is chosen offline (`mote quantize --layout`), so
/// a kernel reads its tiles straight from the mapping, flash or an expert
/// slot, and nothing is repacked at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Layout {
    /// Each row whole: its scales, then its blocks' values (`quant` module docs).
    #[default]
    Planar = 0,
    /// int4/int8 only: rows in groups of [`ROWS4`], each group stored block
    /// by block as the four rows' f16 scales (8 bytes), then the four
    /// rows' value bytes interleaved in 4-byte grains (grain `j` of rows
    /// 0, 1, 2, 3, then grain `j + 1`, ...), so one 16-byte load holds the
    /// same four positions of four rows: the operand of `sdot` by element.
    /// int4 bytes are stored XOR `0x88` (each nibble as a two's-complement
    /// `q`, not `q + 8`). The last `rows % 4` rows stay planar, after the
    /// groups. A group takes exactly four planar rows' bytes.
    Rows4 = 1,
}

/// Rows in one [`Layout::Rows4`] group.
pub const ROWS4: usize = 4;

impl Layout {
    /// The layout with this file code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        [Layout::Planar, Layout::Rows4]
            .into_iter()
            .find(|l| *l as u8 == code)
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Planar => "planar",
            Layout::Rows4 => "rows4",
        }
    }

    /// The layout with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Layout::Planar, Layout::Rows4]
            .into_iter()
            .find(|l| l.name() == name)
    }

    /// Rows that must stay together: a split of the rows (across threads)
    /// starts at a multiple of this.
    pub fn row_group(self) -> usize {
        match self {
            Layout::Planar => 1,
            Layout::Rows4 => ROWS4,
        }
    }

    /// True if weights of `dtype` can be stored in this layout.
    pub fn fits(self, dtype: DType) -> bool {
        match self {
            Layout::Planar => true,
            Layout::Rows4 => matches!(dtype, DType::Q4 | DType::Q8),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names one tensor: its kind, layer and expert ([`NONE`] where not applicable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorId {
    /// What the tensor is for.
    pub kind: TensorKind,
    /// Layer index, or [`NONE`].
    pub layer: u32,
    /// Expert index, or [`NONE`].
    pub expert: u32,
}

impl TensorId {
    /// A tensor outside the layers (embedding, output norm, lm_head).
    pub const fn global(kind: TensorKind) -> Self {
        TensorId {
            kind,
            layer: NONE,
            expert: NONE,
        }
    }

    /// A per-layer tensor that belongs to no expert.
    pub const fn layer(kind: TensorKind, layer: u32) -> Self {
        TensorId {
            kind,
            layer,
            expert: NONE,
        }
    }

    /// One expert's tensor.
    pub const fn expert(kind: TensorKind, layer: u32, expert: u32) -> Self {
        TensorId {
            kind,
            layer,
            expert,
        }
    }

    /// Sort key of the directory: records are stored in increasing key order.
    pub fn sort_key(&self) -> (u32, u16, u32) {
        (self.layer, self.kind as u16, self.expert)
    }
}

impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if self.layer != NONE {
            write!(f, " (layer {}", self.layer)?;
            if self.expert != NONE {
                write!(f, ", expert {}", self.expert)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// One directory record: a tensor's identity, type, shape, place and CRC32.
///
/// Layout (64 bytes, little-endian):
///
/// | offset | field | type |
/// |---|---|---|
/// | 0 | kind | u16 |
/// | 2 | dtype | u8 |
/// | 3 | layout ([`Layout`]; 0 = planar) | u8 |
/// | 4 | layer | u32 |
/// | 8 | expert | u32 |
/// | 12 | rows | u32 |
/// | 16 | cols | u32 |
/// | 20 | crc32 of the data | u32 |
/// | 24 | offset from file start | u64 |
/// | 32 | length in bytes | u64 |
/// | 40 | reserved (0) | 24 bytes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorRecord {
    /// Which tensor.
    pub id: TensorId,
    /// Element type.
    pub dtype: DType,
    /// How the rows sit in the bytes.
    pub layout: Layout,
    /// Number of rows (output features).
    pub rows: u32,
    /// Logical number of columns (input features), before block padding.
    pub cols: u32,
    /// CRC32 (IEEE) of the tensor's `length` bytes.
    pub crc32: u32,
    /// Absolute offset of the first byte in the file.
    pub offset: u64,
    /// Length in bytes; always `dtype.tensor_bytes(rows, cols)`.
    pub length: u64,
}

impl TensorRecord {
    /// Writes the record into its 64 bytes.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..2].copy_from_slice(&(self.id.kind as u16).to_le_bytes());
        b[2] = self.dtype as u8;
        b[3] = self.layout as u8;
        b[4..8].copy_from_slice(&self.id.layer.to_le_bytes());
        b[8..12].copy_from_slice(&self.id.expert.to_le_bytes());
        b[12..16].copy_from_slice(&self.rows.to_le_bytes());
        b[16..20].copy_from_slice(&self.cols.to_le_bytes());
        b[20..24].copy_from_slice(&self.crc32.to_le_bytes());
        b[24..32].copy_from_slice(&self.offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.length.to_le_bytes());
        b
    }

    /// Reads a record, checking the fields that can be checked alone. The
    /// error's `&str` says which field is wrong.
    pub fn decode(b: &[u8; RECORD_BYTES]) -> Result<Self, &'static str> {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let kind = TensorKind::from_code(u16_at(0)).ok_or("unknown tensor kind")?;
        let dtype = DType::from_code(b[2]).ok_or("unknown dtype")?;
        let layout = Layout::from_code(b[3]).ok_or("unknown layout")?;
        if !layout.fits(dtype) {
            return Err("layout does not fit the dtype");
        }
        let rec = TensorRecord {
            id: TensorId {
                kind,
                layer: u32_at(4),
                expert: u32_at(8),
            },
            dtype,
            layout,
            rows: u32_at(12),
            cols: u32_at(16),
            crc32: u32_at(20),
            offset: u64_at(24),
            length: u64_at(32),
        };
        if rec.rows == 0 || rec.cols == 0 {
            return Err("empty shape");
        }
        if dtype.tensor_bytes(rec.rows.into(), rec.cols.into()) != Some(rec.length) {
            return Err("length does not match dtype and shape");
        }
        if !rec.offset.is_multiple_of(64) {
            return Err("data offset is not 64-byte aligned");
        }
        if kind.is_expert() != (rec.id.expert != NONE) {
            return Err("expert index does not match tensor kind");
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = TensorRecord {
            id: TensorId::expert(TensorKind::ExpertDown, 3, 7),
            dtype: DType::Q4,
            layout: Layout::Rows4,
            rows: 64,
            cols: 80,
            crc32: 0xdead_beef,
            offset: 4096,
            length: 64 * 3 * 18,
        };
        assert_eq!(TensorRecord::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn record_rejects_a_layout_the_dtype_cannot_take() {
        let mut r = TensorRecord {
            id: TensorId::layer(TensorKind::AttnQ, 0),
            dtype: DType::F16,
            layout: Layout::Planar,
            rows: 4,
            cols: 4,
            crc32: 0,
            offset: 0,
            length: 32,
        };
        assert_eq!(TensorRecord::decode(&r.encode()), Ok(r));
        r.layout = Layout::Rows4;
        assert_eq!(
            TensorRecord::decode(&r.encode()),
            Err("layout does not fit the dtype")
        );
        let mut b = r.encode();
        b[3] = 7;
        assert_eq!(TensorRecord::decode(&b), Err("unknown layout"));
    }

    #[test]
    fn record_rejects_inconsistent_length() {
        let r = TensorRecord {
            id: TensorId::layer(TensorKind::AttnQ, 0),
            dtype: DType::F32,
            layout: Layout::Planar,
            rows: 4,
            cols: 4,
            crc32: 0,
            offset: 0,
            length: 63,
        };
        assert!(TensorRecord::decode(&r.encode()).is_err());
    }

    #[test]
    fn padded_rows_take_whole_blocks() {
        assert_eq!(DType::Q8.row_bytes(80), 3 * 34);
        assert_eq!(DType::Q4.row_bytes(32), 18);
        assert_eq!(DType::F16.row_bytes(80), 160);
    }
}
