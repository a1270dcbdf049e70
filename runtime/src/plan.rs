//! Memory, planned once before anything runs: pure arithmetic over the
//! config and the limits. [`Plan::arena_bytes`] is every byte a
//! [`Session`](crate::Session) will use; a budget that cannot hold it is an
//! error here, stating the bytes missing, never a failure mid-generation.

use crate::arena::{buffer_bytes, BUFFER_ALIGN};
use crate::error::Error;
use crate::format::config::ModelConfig;
use crate::kv_cache::{KvCacheType, KvShape};
use crate::model::Model;
use crate::quant::BLOCK_LEN;
use crate::reader::READ_STATE_BYTES;
use crate::storage::Storage;

/// Bytes of one entry of a session's tensor table (where a tensor's bytes
/// are, its shape, type and CRC32); the session checks its entry type
/// against it at compile time.
pub const TABLE_ENTRY_BYTES: usize = 24;

/// Positions layer `layer`'s KV cache holds: the whole context, or for a
/// sliding-window layer a ring of the window plus the positions a prefill
/// batch adds beyond its first (all that any token of a batch can see).
pub fn cache_positions(config: &ModelConfig, layer: u32, max_context: u32, batch: usize) -> usize {
    let context = max_context as usize;
    match config.slides(layer) {
        true => context.min(config.sliding_window as usize + batch - 1),
        false => context,
    }
}

/// What the caller allows a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes the arena may take (`None`: no limit).
    pub memory_budget_bytes: Option<u64>,
    /// Most tokens (prompt + generated) a session holds in its KV cache.
    pub max_context: u32,
    /// Worker threads (std builds); 1 runs everything on the caller's thread.
    pub threads: u32,
    /// Prompt tokens computed together by `prefill` (each weight is read
    /// once per batch); 1 keeps scratch memory smallest.
    pub prefill_batch: u32,
    /// Which expert to evict when the expert slots are full.
    pub eviction: crate::experts::EvictionPolicy,
    /// Check each expert's CRC32s every time it is paged in.
    pub verify_experts: bool,
    /// While decoding with paged experts, predict the next layer's experts
    /// and start reading those not in a slot while this layer computes
    /// (where reads overlap computing: std, or
    /// [`Storage::reads_in_background`]).
    pub prefetch: bool,
    /// How the KV cache stores keys and values (f16 by default).
    pub kv_cache: KvCacheType,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_budget_bytes: None,
            max_context: 2048,
            threads: 1,
            prefill_batch: 64,
            eviction: crate::experts::EvictionPolicy::LayerCycle,
            verify_experts: false,
            prefetch: true,
            kv_cache: KvCacheType::F16,
        }
    }
}

/// Sizes of every session buffer, in elements. The session carves them;
/// the plan adds up their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// Tokens computed together in a prefill (1 for step-only sessions).
    pub batch: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query and attention-context width.
    pub q_dim: usize,
    /// Key width (with MLA: the latent and rope key a position caches).
    pub kv_dim: usize,
    /// Value width (0 with MLA).
    pub v_dim: usize,
    /// Compressed query width (MLA's `q_lora_rank`; 0 without).
    pub q_latent: usize,
    /// Per-head attention scratch of MLA: each head's absorbed query and
    /// latent context (0 without MLA).
    pub mla_heads: usize,
    /// Expert hidden width.
    pub ffn: usize,
    /// Largest matrix input, rounded up to whole blocks (int8 activations).
    pub act_len: usize,
    /// Routed experts per layer.
    pub experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Attention scores: one per cached position for every head.
    pub scores: usize,
    /// Output logits.
    pub vocab: usize,
    /// Rope inverse frequencies.
    pub rope: usize,
    /// Positions the layers' caches hold together: Σ over layers of
    /// [`cache_positions`].
    pub cache_positions: usize,
    /// The rows a position caches as keys (with MLA: one, the latent and
    /// rope key).
    pub k_shape: KvShape,
    /// The rows a position caches as values (none with MLA).
    pub v_shape: KvShape,
    /// How the cache stores them.
    pub kv_type: KvCacheType,
    /// Layers (each has a cache start).
    pub layers: usize,
    /// Tensor table entries.
    pub tensors: usize,
}

impl Buffers {
    /// Buffer sizes for `config` with a context of `max_context` tokens,
    /// prefill batches of `batch` tokens and a KV cache of `kv_type`.
    pub fn new(config: &ModelConfig, max_context: u32, batch: u32, kv_type: KvCacheType) -> Self {
        let hidden = config.hidden_size as usize;
        let q_dim = config.q_dim().max(config.attn_out_dim());
        let ffn = config.widest_ffn();
        let q_latent = config.mla.map_or(0, |m| m.q_lora_rank as usize);
        let mla_heads = config.mla.map_or(0, |m| {
            config.n_heads as usize * (m.cache_width() + m.kv_lora_rank as usize)
        });
        let widest = hidden.max(q_dim).max(ffn).max(q_latent);
        let batch = batch.clamp(1, max_context) as usize;
        let cache: usize = (0..config.n_layers)
            .map(|l| cache_positions(config, l, max_context, batch))
            .sum();
        let k_shape = match config.mla {
            Some(m) => KvShape {
                heads: 1,
                width: m.cache_width(),
            },
            None => KvShape {
                heads: config.n_kv_heads as usize,
                width: config.head_dim as usize,
            },
        };
        let v_shape = match config.mla {
            Some(_) => KvShape { heads: 0, width: 0 },
            None => k_shape,
        };
        Buffers {
            batch,
            hidden,
            q_dim,
            kv_dim: config.kv_dim(),
            v_dim: config.v_cache_dim(),
            q_latent,
            mla_heads,
            ffn,
            act_len: widest.div_ceil(BLOCK_LEN) * BLOCK_LEN,
            experts: config.n_experts as usize,
            top_k: config.n_experts_per_token as usize,
            scores: config.n_heads as usize * max_context as usize,
            vocab: config.vocab_size as usize,
            rope: config.rope_dim() / 2,
            cache_positions: cache,
            k_shape,
            v_shape,
            kv_type,
            layers: config.n_layers as usize,
            tensors: crate::model::layout::tensor_count(config),
        }
    }

    /// Blocks of int8 activations reserved per token.
    pub fn act_blocks(&self) -> usize {
        self.act_len / BLOCK_LEN
    }

    /// Bytes of the KV cache (K and V).
    pub fn kv_cache_bytes(&self) -> usize {
        let (t, slots) = (self.kv_type, self.cache_positions);
        t.cache_bytes(slots, self.k_shape.heads, self.k_shape.width)
            + t.cache_bytes(slots, self.v_shape.heads, self.v_shape.width)
    }

    /// Bytes of activations, int8 activations, routing, scores, logits and
    /// the tensor table.
    pub fn scratch_bytes(&self) -> usize {
        let b = self.batch;
        let quant =
            buffer_bytes::<i8>(b * self.act_len) + 2 * buffer_bytes::<f32>(b * self.act_blocks());
        6 * buffer_bytes::<f32>(b * self.hidden)
            + 2 * buffer_bytes::<f32>(b * self.q_dim)
            + buffer_bytes::<f32>(b * self.kv_dim)
            + buffer_bytes::<f32>(b * self.v_dim)
            + buffer_bytes::<f32>(b * self.q_latent)
            + buffer_bytes::<f32>(self.mla_heads)
            + 2 * buffer_bytes::<f32>(b * self.ffn)
            + 3 * quant
            + buffer_bytes::<f32>(b * self.experts)
            + buffer_bytes::<u32>(b * self.top_k)
            + buffer_bytes::<f32>(b * self.top_k)
            + buffer_bytes::<u32>(2 * self.top_k)
            + buffer_bytes::<u32>(self.experts)
            + buffer_bytes::<u32>(b)
            + buffer_bytes::<f32>(b)
            + buffer_bytes::<f32>(self.scores)
            + buffer_bytes::<f32>(self.vocab)
            + buffer_bytes::<f32>(self.rope)
            + buffer_bytes::<usize>(self.layers + 1)
            + buffer_bytes::<u8>(self.tensors * TABLE_ENTRY_BYTES)
    }
}

/// Alignment of the expert slots: a page with `std` (the reads that bypass
/// the page cache need it: [`FileStorage`](crate::FileStorage)), a cache
/// line without (DMA engines ask for less, and MCU memory is dear).
pub const SLOT_ALIGN: usize = if cfg!(feature = "std") {
    4096
} else {
    BUFFER_ALIGN
};

/// How the experts of a model whose storage is not addressable are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertPlan {
    /// Bytes from one slot to the next: the largest expert's gate/up/down
    /// group, rounded up to [`SLOT_ALIGN`].
    pub slot_bytes: usize,
    /// Slots: every expert when the budget allows, else what fits (at least
    /// one layer's top-k).
    pub slots: usize,
    /// Experts in the model (layers × experts per layer).
    pub experts: usize,
}

impl ExpertPlan {
    /// Bytes of the slots and their bookkeeping (key, use count, last use,
    /// reading flag, the reader's state).
    pub fn bytes(&self) -> usize {
        (SLOT_ALIGN - BUFFER_ALIGN)
            + buffer_bytes::<u8>(self.slots * self.slot_bytes)
            + 2 * buffer_bytes::<u32>(self.slots)
            + buffer_bytes::<u64>(self.slots)
            + buffer_bytes::<bool>(self.slots)
            + buffer_bytes::<u8>(self.slots * READ_STATE_BYTES)
            + buffer_bytes::<u32>(self.experts)
    }

    /// Bytes of one more slot, bookkeeping included (an upper bound).
    fn per_slot(&self) -> usize {
        self.slot_bytes + 2 * 4 + 8 + 1 + READ_STATE_BYTES
    }
}

/// The memory plan of one session: fixed before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The limits it was made for.
    pub limits: Limits,
    /// Buffer sizes.
    pub buffers: Buffers,
    /// True when weights are read in place from addressable storage.
    pub weights_in_place: bool,
    /// Bytes of non-expert weights copied into the arena (0 in place).
    pub resident_weight_bytes: usize,
    /// Bytes of one token-embedding row, read on demand instead of holding
    /// the table (0 when the table is used in place or is resident).
    pub embedding_row_bytes: usize,
    /// Expert slots (`None` when experts are used in place).
    pub experts: Option<ExpertPlan>,
}

impl Plan {
    /// Plans a session of `model` under `limits`.
    ///
    /// Addressable storage (a memory map, XIP flash, a slice) is used in
    /// place. Otherwise the non-expert weights are copied into the arena
    /// (the embedding table only if the logits reuse it; else its rows are
    /// read per token) and the rest of the budget becomes expert slots.
    pub fn new<S: Storage>(model: &Model<S>, limits: &Limits) -> Result<Self, Error> {
        if limits.max_context == 0 {
            return Err(Error::BadLimits {
                reason: "max_context must be at least 1",
            });
        }
        if limits.threads == 0 {
            return Err(Error::BadLimits {
                reason: "threads must be at least 1",
            });
        }
        // Every buffer size must fit this target's address space (32-bit MCUs).
        let c = model.config();
        let kv = c.n_layers as u64 * limits.max_context as u64 * c.kv_dim() as u64;
        let widest = [
            c.vocab_size,
            c.hidden_size,
            c.expert_ffn_size,
            c.n_heads.saturating_mul(c.head_dim),
            c.widest_ffn() as u32,
            c.mla.map_or(0, |m| m.q_lora_rank),
        ];
        let batch = limits.prefill_batch.max(1) as u64;
        if kv.saturating_mul(8) > isize::MAX as u64
            || widest
                .iter()
                .any(|&d| d as u64 * 64 * batch > isize::MAX as u64)
        {
            return Err(Error::BadLimits {
                reason: "buffers for this context do not fit the address space",
            });
        }
        let too_big = |_| Error::BadLimits {
            reason: "weights do not fit in this address space",
        };
        let weights_in_place = model.storage().as_slice().is_some();
        let mut plan = Plan {
            limits: *limits,
            buffers: Buffers::new(c, limits.max_context, limits.prefill_batch, limits.kv_cache),
            weights_in_place,
            resident_weight_bytes: 0,
            embedding_row_bytes: 0,
            experts: None,
        };
        if !weights_in_place {
            let mut resident = 0u64;
            let mut slot_bytes = 0u64;
            for i in 0..model.tensor_count() {
                let rec = model.record(i)?;
                if rec.id.kind.is_expert() {
                    continue;
                }
                if rec.id.kind == crate::TensorKind::TokenEmbedding && !c.tied_embeddings {
                    plan.embedding_row_bytes = rec.dtype.row_bytes(rec.cols as usize);
                    continue;
                }
                resident += crate::format::align_up(rec.length, crate::format::TENSOR_ALIGN);
            }
            for layer in (0..c.n_layers).filter(|&l| c.has_experts(l)) {
                for expert in 0..c.n_experts {
                    slot_bytes = slot_bytes.max(model.expert_range(layer, expert)?.1);
                }
            }
            plan.resident_weight_bytes = usize::try_from(resident).map_err(too_big)?;
            // Keys are layer * n_experts + expert over every layer; dense
            // layers have no experts to hold.
            let experts = (c.n_layers * c.n_experts) as usize;
            let existing = (c.expert_layers() * c.n_experts) as usize;
            let mut ep = ExpertPlan {
                slot_bytes: usize::try_from(crate::format::align_up(slot_bytes, SLOT_ALIGN as u64))
                    .map_err(too_big)?,
                slots: existing,
                experts,
            };
            if let Some(budget) = limits.memory_budget_bytes {
                // What the budget holds beyond everything else, in slots.
                ep.slots = 0;
                plan.experts = Some(ep);
                let fixed = plan.arena_bytes() as u64;
                let room = budget.saturating_sub(fixed) / ep.per_slot() as u64;
                ep.slots = (room as usize).min(existing);
                // Bookkeeping is rounded up per buffer: trim to the exact fit.
                loop {
                    plan.experts = Some(ep);
                    if ep.slots == 0 || plan.arena_bytes() as u64 <= budget {
                        break;
                    }
                    ep.slots -= 1;
                }
                let minimum = c.n_experts_per_token as usize;
                if ep.slots < minimum {
                    ep.slots = minimum;
                    plan.experts = Some(ep);
                    return Err(Error::BudgetTooSmall {
                        needed: plan.arena_bytes() as u64,
                        budget,
                    });
                }
            }
            plan.experts = Some(ep);
        }
        if let Some(budget) = limits.memory_budget_bytes {
            let needed = plan.arena_bytes() as u64;
            if needed > budget {
                return Err(Error::BudgetTooSmall { needed, budget });
            }
        }
        Ok(plan)
    }

    /// Bytes of the KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.buffers.kv_cache_bytes()
    }

    /// Bytes of scratch buffers.
    pub fn scratch_bytes(&self) -> usize {
        self.buffers.scratch_bytes() + buffer_bytes::<u8>(self.embedding_row_bytes)
    }

    /// Bytes of expert slots and their bookkeeping.
    pub fn expert_cache_bytes(&self) -> usize {
        self.experts.map_or(0, |e| e.bytes())
    }

    /// Total bytes the caller must hand to [`Session::new`](crate::Session::new)
    /// (one alignment's slack included, so any start address works).
    pub fn arena_bytes(&self) -> usize {
        BUFFER_ALIGN
            + buffer_bytes::<u8>(self.resident_weight_bytes)
            + self.kv_cache_bytes()
            + self.scratch_bytes()
            + self.expert_cache_bytes()
    }
}
