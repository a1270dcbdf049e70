//! One generation: the KV cache, the scratch buffers and the forward pass.
//!
//! Everything a token touches was carved from the caller's arena by
//! [`Session::new`]; `prefill` and `step` only write into it. This module
//! must never allocate.
//!
//! One forward pass serves both: it runs a batch of `n` tokens at
//! consecutive positions (`step` is a batch of one). Per-token buffers hold
//! `batch` rows; matrix products run as matrix-vector products for one
//! token (rows split across threads) and as batched products otherwise
//! (tokens split across threads, each weight row read once per batch).
//!
//! This file holds the session's buffers, its public calls, the loop over
//! layers (`forward`) and `product`, the one way any
//! step runs a matrix product. The steps are one file each:
//!
//! | module | step |
//! |---|---|
//! | `weights` | where each tensor's bytes are (resolved once at start); embedding rows |
//! | `attention` | grouped-query attention: projections, q/k norms, rope, KV cache, sinks, windows |
//! | `latent` | DeepSeek's multi-head latent attention (absorbed expansions) |
//! | `moe` | the MLP block: routed experts, shared expert or dense MLP, SwiGLU variants |
//! | `route` | routing rules: softmax/sigmoid top-k, groups, correction bias, sparsemixer |
//! | `paging` | experts from storage into slots; predicting the next layer's experts |
//! | `rope`, `norm` | rotary embeddings (frequencies, scaling, rotation); RMSNorm / LayerNorm |
//! | `acts` | int8 copies of the activations that quantized products read |
//!
//! Families differ only through the config (`format::config`): each step
//! reads the choices it needs and nothing else.

mod acts;
mod attention;
mod latent;
mod moe;
mod norm;
mod paging;
mod rope;
mod route;
mod weights;

use crate::arena::Arena;
use crate::error::Error;
use crate::experts::{CacheBuffers, CacheStats, ExpertCache};
use crate::format::config::{global_tensors, ModelConfig};
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::{scalar, Kernels, Matrix};
use crate::kv_cache::{KvShape, KvStore};
use crate::model::{layout, Model};
use crate::parallel::{MatmulJob, Parallel};
use crate::plan::{Plan, SLOT_ALIGN};
use crate::reader::Reader;
use crate::storage::{MaybeSync, Storage};

use acts::QuantBuf;
use weights::{resolve, WeightRef};

/// A running generation over one model.
pub struct Session<'a, S: Storage + MaybeSync> {
    model: &'a Model<S>,
    config: &'a ModelConfig,
    kernels: Kernels,
    par: Parallel,
    /// Weight bytes: the whole file in place, or the data region copied in.
    weights: &'a [u8],
    table: &'a [WeightRef],
    /// Where each tensor's record (and table entry) is.
    index: layout::Index,
    cache: Option<ExpertCache<'a>>,
    /// Reads into the cache's slots (with the cache).
    reader: Option<Reader<'a>>,
    verify_experts: bool,
    prefetch: bool,
    /// Experts predicted for a layer, double-buffered by layer parity: the
    /// prediction for layer L+1 is made before layer L's MoE and checked in
    /// layer L+1's, after the prediction for L+2 was made.
    predicted: &'a mut [u32],
    /// The layer each half of `predicted` is for (NONE: none).
    predicted_layer: [u32; 2],
    /// Per half of `predicted`: bit k set when a read was started ahead
    /// for its k-th expert.
    prefetched: [u32; 2],
    /// The experts the current layer's tokens chose, in index order (the
    /// order they are computed in): `layer_experts[..layer_expert_count]`.
    layer_experts: &'a mut [u32],
    layer_expert_count: usize,
    embedding_row: &'a mut [u8],
    max_context: u32,
    batch: usize,
    pos: u32,
    // Per-token rows, `batch` of each.
    x: &'a mut [f32],
    xn: &'a mut [f32],
    proj: &'a mut [f32],
    moe: &'a mut [f32],
    expert_in: &'a mut [f32],
    expert_out: &'a mut [f32],
    q: &'a mut [f32],
    /// Compressed queries (MLA with `q_lora_rank`).
    q_latent: &'a mut [f32],
    ctx: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    gate: &'a mut [f32],
    up: &'a mut [f32],
    act: QuantBuf<'a>,
    act_e: QuantBuf<'a>,
    act_h: QuantBuf<'a>,
    router: &'a mut [f32],
    route_expert: &'a mut [u32],
    route_weight: &'a mut [f32],
    members: &'a mut [u32],
    member_weight: &'a mut [f32],
    // Shared.
    scores: &'a mut [f32],
    logits: &'a mut [f32],
    inv_freq: &'a mut [f32],
    /// Factor on rotated queries and keys (LongRoPE's mscale, YaRN's
    /// attention factor; else 1).
    rope_scale: f32,
    /// MLA's per-head scratch: absorbed query and latent context.
    mla_heads: &'a mut [f32],
    k_cache: KvStore<'a>,
    v_cache: KvStore<'a>,
    /// The rows a position caches as keys and as values.
    k_shape: KvShape,
    v_shape: KvShape,
    /// Layer `l`'s cache: positions (slots) `cache_start[l]..cache_start[l + 1]`.
    cache_start: &'a mut [usize],
}

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// Carves every buffer of `plan` out of `arena`, resolves the tensors
    /// and, when the storage is not addressable, copies the weights in.
    pub fn new(model: &'a Model<S>, plan: &Plan, arena: &'a mut [u8]) -> Result<Self, Error> {
        let needed = plan.arena_bytes();
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall {
                needed,
                provided: arena.len(),
            });
        }
        let config = model.config();
        let b = plan.buffers;
        let mut arena = Arena::new(arena, needed);

        // Resolve every tensor: in place, copied into the resident region,
        // paged (experts) or read by rows (an untied embedding table).
        let table = arena.take(b.tensors, WeightRef::EMPTY)?;
        let in_place = match model.storage().as_slice() {
            Some(bytes) if plan.weights_in_place => Some(bytes),
            _ => None,
        };
        let resident = arena.take_raw(plan.resident_weight_bytes)?;
        resolve(model, table, in_place.is_some(), resident)?;
        let weights: &'a [u8] = match in_place {
            Some(bytes) => bytes,
            None => resident,
        };
        let (cache, reader) = match plan.experts {
            Some(ep) => {
                let buffers = CacheBuffers {
                    data: arena.take_aligned(ep.slots * ep.slot_bytes, SLOT_ALIGN)?,
                    key: arena.take(ep.slots, 0u32)?,
                    stamp: arena.take(ep.slots, 0u64)?,
                    freq: arena.take(ep.slots, 0u32)?,
                    reading: arena.take(ep.slots, false)?,
                    index: arena.take(ep.experts, 0u32)?,
                };
                let cache = ExpertCache::new(
                    ep.slot_bytes,
                    buffers,
                    plan.limits.eviction,
                    config.n_layers,
                    config.n_experts,
                );
                let states = arena.take(ep.slots, crate::reader::ReadState::Idle)?;
                (Some(cache), Some(Reader::new(states, model.storage())?))
            }
            None => (None, None),
        };

        let n = b.batch;
        let mut session = Session {
            model,
            config,
            kernels: Kernels::detect(),
            par: Parallel::new(plan.limits.threads)?,
            weights,
            table,
            index: layout::Index::new(config),
            cache,
            reader,
            verify_experts: plan.limits.verify_experts,
            prefetch: plan.limits.prefetch,
            predicted: arena.take(2 * b.top_k, 0u32)?,
            predicted_layer: [crate::format::tensor::NONE; 2],
            prefetched: [0; 2],
            layer_experts: arena.take(b.experts, 0u32)?,
            layer_expert_count: 0,
            embedding_row: arena.take_raw(plan.embedding_row_bytes)?,
            max_context: plan.limits.max_context,
            batch: n,
            pos: 0,
            k_cache: KvStore::take(&mut arena, b.kv_type, b.cache_positions, b.k_shape)?,
            v_cache: KvStore::take(&mut arena, b.kv_type, b.cache_positions, b.v_shape)?,
            k_shape: b.k_shape,
            v_shape: b.v_shape,
            x: arena.take(n * b.hidden, 0.0f32)?,
            xn: arena.take(n * b.hidden, 0.0f32)?,
            proj: arena.take(n * b.hidden, 0.0f32)?,
            moe: arena.take(n * b.hidden, 0.0f32)?,
            expert_in: arena.take(n * b.hidden, 0.0f32)?,
            expert_out: arena.take(n * b.hidden, 0.0f32)?,
            q: arena.take(n * b.q_dim, 0.0f32)?,
            q_latent: arena.take(n * b.q_latent, 0.0f32)?,
            ctx: arena.take(n * b.q_dim, 0.0f32)?,
            k: arena.take(n * b.kv_dim, 0.0f32)?,
            v: arena.take(n * b.v_dim, 0.0f32)?,
            gate: arena.take(n * b.ffn, 0.0f32)?,
            up: arena.take(n * b.ffn, 0.0f32)?,
            act: QuantBuf::new(&mut arena, n, b.act_blocks())?,
            act_e: QuantBuf::new(&mut arena, n, b.act_blocks())?,
            act_h: QuantBuf::new(&mut arena, n, b.act_blocks())?,
            router: arena.take(n * b.experts, 0.0f32)?,
            route_expert: arena.take(n * b.top_k, 0u32)?,
            route_weight: arena.take(n * b.top_k, 0.0f32)?,
            members: arena.take(n, 0u32)?,
            member_weight: arena.take(n, 0.0f32)?,
            scores: arena.take(b.scores, 0.0f32)?,
            logits: arena.take(b.vocab, 0.0f32)?,
            inv_freq: arena.take(b.rope, 0.0f32)?,
            rope_scale: 1.0,
            mla_heads: arena.take(b.mla_heads, 0.0f32)?,
            cache_start: arena.take(b.layers + 1, 0usize)?,
        };
        for l in 0..config.n_layers {
            let slots = crate::plan::cache_positions(config, l, plan.limits.max_context, n);
            let l = l as usize;
            session.cache_start[l + 1] = session.cache_start[l] + slots;
        }
        session.rope_scale = rope::frequencies(config, session.max_context, session.inv_freq);
        Ok(session)
    }

    /// The kernels this session chose.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Threads this session computes with.
    pub fn threads(&self) -> usize {
        self.par.threads()
    }

    /// Replaces the kernel table (for A/B runs and tests).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Tokens processed so far (the next token's position).
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Forgets the context: the next token starts at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// The model this session runs.
    pub fn model(&self) -> &'a Model<S> {
        self.model
    }

    /// What the expert cache and its reader did (all zero when experts are
    /// used in place).
    pub fn cache_stats(&self) -> CacheStats {
        let mut stats = self
            .cache
            .as_ref()
            .map_or(CacheStats::default(), |c| c.stats);
        stats.blocked_ns = self.reader.as_ref().map_or(0, |r| r.blocked_ns);
        stats
    }

    /// Expert slots (0 when experts are used in place).
    pub fn expert_slots(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.slots())
    }

    /// Runs every token of `tokens` and returns the logits after the last.
    /// Checks every id and the context room before computing anything;
    /// computes the prompt in batches of the plan's `prefill_batch`.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], Error> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if let Some(&token) = tokens.iter().find(|&&t| t >= self.config.vocab_size) {
            return Err(Error::TokenOutOfRange {
                token,
                vocab_size: self.config.vocab_size,
            });
        }
        let last = self.pos as u64 + tokens.len() as u64 - 1;
        if last >= self.max_context as u64 {
            let position = last.min(u32::MAX as u64) as u32;
            return Err(Error::ContextFull {
                position,
                max_context: self.max_context,
            });
        }
        let chunks = tokens.len().div_ceil(self.batch);
        for (i, chunk) in tokens.chunks(self.batch).enumerate() {
            self.forward(chunk, i + 1 == chunks)?;
        }
        Ok(self.logits)
    }

    /// Runs one token at the next position and returns its logits (a slice
    /// into the session's scratch, valid until the next call).
    pub fn step(&mut self, token: u32) -> Result<&[f32], Error> {
        if token >= self.config.vocab_size {
            return Err(Error::TokenOutOfRange {
                token,
                vocab_size: self.config.vocab_size,
            });
        }
        if self.pos >= self.max_context {
            return Err(Error::ContextFull {
                position: self.pos,
                max_context: self.max_context,
            });
        }
        self.forward(&[token], true)?;
        Ok(self.logits)
    }

    /// Runs `tokens` (at most `batch`) at positions `pos..`; computes the
    /// logits of the last one when `logits` is set. Every expert read it
    /// started has been collected when it returns, error or not (and when
    /// a panic unwinds out of it).
    fn forward(&mut self, tokens: &[u32], logits: bool) -> Result<(), Error> {
        #[cfg(feature = "std")]
        let _guard = self.reader.as_ref().and_then(|r| r.guard());
        let result = self.forward_layers(tokens, logits);
        self.drain_reads();
        result
    }

    fn forward_layers(&mut self, tokens: &[u32], logits: bool) -> Result<(), Error> {
        let c = self.config;
        let h = c.hidden_size as usize;
        let n = tokens.len();
        for (t, &token) in tokens.iter().enumerate() {
            self.embed(t, token)?;
        }
        for layer in 0..c.n_layers {
            self.attention(layer, n);
            let predictable =
                c.architecture.has_router() && self.reader.as_ref().is_some_and(|r| r.overlaps());
            if n == 1
                && self.prefetch
                && predictable
                && layer + 1 < c.n_layers
                && c.has_experts(layer + 1)
            {
                self.predict(layer + 1);
            }
            self.moe(layer, n)?;
        }
        if logits {
            let norm = self.norm_weights(TensorKind::OutputNorm, TensorKind::OutputNormBias, None);
            let last = &self.x[(n - 1) * h..n * h];
            norm.apply(&mut self.xn[..h], last, c.norm_eps);
            let head = if c.tied_embeddings {
                TensorKind::TokenEmbedding
            } else {
                TensorKind::LmHead
            };
            let head = self.weight(TensorId::global(head));
            let out = self.logits.as_mut_ptr();
            self.product(&[(head, out)], Input::Normed, 1);
            if global_tensors(c).contains(&TensorKind::LmHeadBias) {
                let bias = self.weight(TensorId::global(TensorKind::LmHeadBias));
                add_bias(self.logits, bias.data);
            }
            if c.logits_scaling != 1.0 {
                self.logits.iter_mut().for_each(|l| *l /= c.logits_scaling);
            }
        }
        self.pos += n as u32;
        Ok(())
    }

    /// Runs `w · input` for `n` tokens into each job's output (`n × rows`,
    /// token-major), quantizing the input first if any weight needs it.
    fn product(&mut self, jobs: &[(Matrix<'a>, *mut f32)], input: Input, n: usize) {
        let (f32s, stride, cols) = match input {
            Input::Normed => (&*self.xn, self.config.hidden_size as usize, jobs[0].0.cols),
            Input::Context => (&*self.ctx, jobs[0].0.cols, jobs[0].0.cols),
            Input::Latent => (&*self.q_latent, jobs[0].0.cols, jobs[0].0.cols),
            Input::Expert => (
                &*self.expert_in,
                self.config.hidden_size as usize,
                jobs[0].0.cols,
            ),
            Input::Hidden => (&*self.gate, jobs[0].0.cols, jobs[0].0.cols),
        };
        let buf = match input {
            Input::Normed | Input::Context | Input::Latent => &mut self.act,
            Input::Expert => &mut self.act_e,
            Input::Hidden => &mut self.act_h,
        };
        // Expert inputs were gathered already quantized.
        if jobs.iter().any(|(w, _)| w.dtype.is_quantized()) && !matches!(input, Input::Expert) {
            buf.quantize(&self.kernels, f32s, stride, cols, n);
        }
        let x = buf.view(f32s, stride, n);
        let mut batch: heapless::Vec<MatmulJob<'_>, 4> = heapless::Vec::new();
        for &(w, out) in jobs {
            let _ = batch.push(MatmulJob { w, x, out });
        }
        if n == 1 {
            let single: heapless::Vec<crate::parallel::MatvecJob<'_>, 4> = batch
                .iter()
                .map(|j| crate::parallel::MatvecJob {
                    w: j.w,
                    x: j.x.token(0, j.w.cols),
                    out: j.out,
                })
                .collect();
            self.par.run(&self.kernels, &single);
        } else {
            self.par.run_batch(&self.kernels, &batch);
        }
    }
}

/// Adds a bias vector (f32 bytes) to `row`.
fn add_bias(row: &mut [f32], bias: &[u8]) {
    row.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x += scalar::f32_at(bias, i));
}

/// Which activation rows a product reads.
#[derive(Clone, Copy)]
enum Input {
    /// `xn`: the normed residual stream.
    Normed,
    /// `ctx`: the attention context.
    Context,
    /// `q_latent`: MLA's compressed queries.
    Latent,
    /// `expert_in` / `act_e`: the normed rows of the tokens routed to one expert.
    Expert,
    /// `gate`: one expert's SwiGLU hidden rows (as wide as the down
    /// projection's input).
    Hidden,
}
