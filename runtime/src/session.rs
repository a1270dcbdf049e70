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

use crate::arena::Arena;
use crate::error::Error;
use crate::experts::{checksum_error, CacheStats, ExpertCache, ExpertPlace};
use crate::format::config::{global_tensors, Mla, ModelConfig, QkNorm, RopeScaling, RouterScoring};
use crate::format::tensor::{DType, TensorId, TensorKind};
use crate::kernels::{scalar, BatchActs, Kernels, Matrix};
use crate::model::{layout, Model};
use crate::parallel::{MatmulJob, Parallel, SharedMut};
use crate::plan::Plan;
use crate::quant::{dequantize_row, BLOCK_LEN};
use crate::storage::{MaybeSync, Storage};

/// Epsilon of MLA's latent norms: transformers builds `q_a_layernorm` and
/// `kv_a_layernorm` with its default, not the config's `rms_norm_eps`.
const LATENT_NORM_EPS: f32 = 1e-6;

/// Where a resolved tensor's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In `Session::weights` at `offset`.
    Resident,
    /// In an expert slot; `offset` is the file offset.
    Paged,
    /// Read a row at a time from storage; `offset` is the file offset.
    OnDemand,
}

/// A tensor resolved once at session start: where its bytes are and their shape.
#[derive(Debug, Clone, Copy)]
pub struct WeightRef {
    offset: u64,
    rows: u32,
    cols: u32,
    dtype: DType,
    crc32: u32,
    place: Place,
}

impl WeightRef {
    const EMPTY: WeightRef = WeightRef {
        offset: 0,
        rows: 0,
        cols: 0,
        dtype: DType::F32,
        crc32: 0,
        place: Place::Resident,
    };
}

/// int8 copies of a batch of activation vectors: values, and per block a
/// scale and a scaled sum; `stride` blocks per token.
struct QuantBuf<'a> {
    qs: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [f32],
    stride: usize,
}

impl<'a> QuantBuf<'a> {
    fn new(arena: &mut Arena<'a>, batch: usize, blocks: usize) -> Result<Self, Error> {
        Ok(QuantBuf {
            qs: arena.take(batch * blocks * BLOCK_LEN, 0i8)?,
            scales: arena.take(batch * blocks, 0.0f32)?,
            sums: arena.take(batch * blocks, 0.0f32)?,
            stride: blocks,
        })
    }

    /// Quantizes `n` rows of `cols` values, row `t` at `x[t * x_stride..]`.
    fn quantize(&mut self, k: &Kernels, x: &[f32], x_stride: usize, cols: usize, n: usize) {
        let blocks = cols.div_ceil(BLOCK_LEN);
        for t in 0..n {
            let b = t * self.stride;
            (k.quantize_activations)(
                &x[t * x_stride..][..cols],
                &mut self.qs[b * BLOCK_LEN..][..blocks * BLOCK_LEN],
                &mut self.scales[b..][..blocks],
                &mut self.sums[b..][..blocks],
            );
        }
    }

    /// The batch view of `n` tokens whose f32 rows are `f32s` (stride `f32_stride`).
    fn view<'s>(&'s self, f32s: &'s [f32], f32_stride: usize, n: usize) -> BatchActs<'s> {
        BatchActs {
            tokens: n,
            f32s,
            f32_stride,
            qs: self.qs,
            scales: self.scales,
            sums: self.sums,
            block_stride: self.stride,
        }
    }

    /// Copies token `from` of `src` into token `to` of `self`.
    fn copy_token(&mut self, to: usize, src: &QuantBuf<'_>, from: usize) {
        let (a, b) = (to * self.stride, from * src.stride);
        let n = self.stride.min(src.stride);
        self.qs[a * BLOCK_LEN..][..n * BLOCK_LEN]
            .copy_from_slice(&src.qs[b * BLOCK_LEN..][..n * BLOCK_LEN]);
        self.scales[a..][..n].copy_from_slice(&src.scales[b..][..n]);
        self.sums[a..][..n].copy_from_slice(&src.sums[b..][..n]);
    }
}

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
    verify_experts: bool,
    prefetch: bool,
    /// Experts predicted for a layer, double-buffered by layer parity: the
    /// prediction for layer L+1 is made before layer L's MoE and checked in
    /// layer L+1's, after the prediction for L+2 was made.
    predicted: &'a mut [u32],
    /// The layer each half of `predicted` is for (NONE: none).
    predicted_layer: [u32; 2],
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
    k_cache: &'a mut [f32],
    v_cache: &'a mut [f32],
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
        let mut cursor = 0usize;
        for (i, slot) in table.iter_mut().enumerate() {
            let rec = model.record(i)?;
            let mut w = WeightRef {
                offset: rec.offset,
                rows: rec.rows,
                cols: rec.cols,
                dtype: rec.dtype,
                crc32: rec.crc32,
                place: Place::Resident,
            };
            if in_place.is_none() {
                if rec.id.kind.is_expert() {
                    w.place = Place::Paged;
                } else if rec.id.kind == TensorKind::TokenEmbedding && !config.tied_embeddings {
                    w.place = Place::OnDemand;
                } else {
                    let len = rec.length as usize;
                    let end = cursor + len;
                    if end > resident.len() {
                        return Err(Error::BadLimits {
                            reason: "resident weights exceed the plan",
                        });
                    }
                    model
                        .storage()
                        .read_at(rec.offset, &mut resident[cursor..end])?;
                    w.offset = cursor as u64;
                    cursor =
                        crate::format::align_up(end as u64, crate::format::TENSOR_ALIGN) as usize;
                }
            }
            *slot = w;
        }
        let weights: &'a [u8] = match in_place {
            Some(bytes) => bytes,
            None => resident,
        };
        let cache = match plan.experts {
            Some(ep) => Some(ExpertCache::new(
                ep.slot_bytes,
                arena.take_raw(ep.slots * ep.slot_bytes)?,
                arena.take(ep.slots, 0u32)?,
                arena.take(ep.slots, 0u64)?,
                arena.take(ep.slots, 0u32)?,
                arena.take(ep.slots, 0u64)?,
                arena.take(ep.experts, 0u32)?,
                plan.limits.eviction,
            )),
            None => None,
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
            verify_experts: plan.limits.verify_experts,
            prefetch: plan.limits.prefetch,
            predicted: arena.take(2 * b.top_k, 0u32)?,
            predicted_layer: [crate::format::tensor::NONE; 2],
            embedding_row: arena.take_raw(plan.embedding_row_bytes)?,
            max_context: plan.limits.max_context,
            batch: n,
            pos: 0,
            k_cache: arena.take(b.kv_cache, 0.0f32)?,
            v_cache: arena.take(b.v_cache, 0.0f32)?,
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
        session.rope_scale = rope_frequencies(config, session.max_context, session.inv_freq);
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

    /// What the expert cache did (all zero when experts are used in place).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map_or(CacheStats::default(), |c| c.stats)
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

    fn weight(&self, id: TensorId) -> Matrix<'a> {
        // Every id the forward pass asks for exists: Model::open checked the
        // directory against the architecture, and the table mirrors it.
        let index = self.index.of(id).unwrap_or(0);
        let w = self.table[index];
        let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
        let weights: &'a [u8] = self.weights;
        Matrix {
            dtype: w.dtype,
            rows: w.rows as usize,
            cols: w.cols as usize,
            data: &weights[w.offset as usize..w.offset as usize + len],
        }
    }

    /// Dequantizes `token`'s embedding row into row `t` of `x`, reading it
    /// from storage when the table is not resident.
    fn embed(&mut self, t: usize, token: u32) -> Result<(), Error> {
        let h = self.config.hidden_size as usize;
        let index = self
            .index
            .of(TensorId::global(TensorKind::TokenEmbedding))
            .unwrap_or(0);
        let w = self.table[index];
        let row_bytes = w.dtype.row_bytes(w.cols as usize);
        let row: &[u8] = if w.place == Place::OnDemand {
            let offset = w.offset + token as u64 * row_bytes as u64;
            self.model
                .storage()
                .read_at(offset, &mut self.embedding_row[..row_bytes])?;
            &self.embedding_row[..row_bytes]
        } else {
            let start = w.offset as usize + token as usize * row_bytes;
            &self.weights[start..start + row_bytes]
        };
        let out = &mut self.x[t * h..(t + 1) * h];
        dequantize_row(w.dtype, row, out);
        if self.config.embedding_multiplier != 1.0 {
            out.iter_mut()
                .for_each(|x| *x *= self.config.embedding_multiplier);
        }
        Ok(())
    }

    /// One expert's gate, up and down matrices: in place, or from its slot
    /// (paged in on a miss). The slot stays pinned for this step.
    fn expert(&mut self, layer: u32, expert: u32) -> Result<[Matrix<'a>; 3], Error> {
        let ids = [
            TensorKind::ExpertGate,
            TensorKind::ExpertUp,
            TensorKind::ExpertDown,
        ]
        .map(|k| TensorId::expert(k, layer, expert));
        let Some(cache) = self.cache.as_mut() else {
            return Ok(ids.map(|id| self.weight(id)));
        };
        let refs = ids.map(|id| self.table[self.index.of(id).unwrap_or(0)]);
        let start = refs[0].offset;
        let end = refs[2].offset
            + refs[2].dtype.row_bytes(refs[2].cols as usize) as u64 * refs[2].rows as u64;
        let place = ExpertPlace {
            key: layer * self.config.n_experts + expert,
            offset: start,
            len: (end - start) as usize,
        };
        let verify = self.verify_experts;
        // Only the expert in use is pinned: experts are computed one at a
        // time, so a batch may route to more experts than there are slots.
        cache.next_step();
        let (storage, par) = (self.model.storage(), &self.par);
        let read = |offset: u64, dst: &mut [u8]| read_parallel(par, storage, offset, dst);
        let bytes = cache.get(read, place, |bytes| {
            if verify {
                for (id, w) in ids.iter().zip(&refs) {
                    let at = (w.offset - start) as usize;
                    let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
                    let found = crc32fast::hash(&bytes[at..at + len]);
                    if found != w.crc32 {
                        return Err(checksum_error(*id, w.crc32, found));
                    }
                }
            }
            Ok(())
        })?;
        // SAFETY: the slot's bytes live in the arena for 'a. The slot is
        // pinned for this step and is only rewritten by a later `get` of a
        // different expert, which the forward pass makes only after it has
        // finished with these matrices (experts are computed one at a time).
        let bytes: &'a [u8] = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        Ok(refs.map(|w| {
            let at = (w.offset - start) as usize;
            let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
            Matrix {
                dtype: w.dtype,
                rows: w.rows as usize,
                cols: w.cols as usize,
                data: &bytes[at..at + len],
            }
        }))
    }

    /// Runs `tokens` (at most `batch`) at positions `pos..`; computes the
    /// logits of the last one when `logits` is set.
    fn forward(&mut self, tokens: &[u32], logits: bool) -> Result<(), Error> {
        let c = self.config;
        let h = c.hidden_size as usize;
        let n = tokens.len();
        for (t, &token) in tokens.iter().enumerate() {
            self.embed(t, token)?;
        }
        for layer in 0..c.n_layers {
            self.attention(layer, n);
            let predictable = c.architecture.has_router() && self.cache.is_some();
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

    /// Qwen2's q/k/v projection biases.
    fn add_qkv_biases(&mut self, layer: u32, n: usize) {
        let c = self.config;
        if !c
            .architecture
            .layer_tensors()
            .contains(&TensorKind::AttnQBias)
        {
            return;
        }
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let qb = self.weight(TensorId::layer(TensorKind::AttnQBias, layer));
        let kb = self.weight(TensorId::layer(TensorKind::AttnKBias, layer));
        let vb = self.weight(TensorId::layer(TensorKind::AttnVBias, layer));
        for (rows, width, bias) in [
            (&mut *self.q, q_dim, qb),
            (&mut *self.k, kv_dim, kb),
            (&mut *self.v, kv_dim, vb),
        ] {
            for row in rows[..n * width].chunks_exact_mut(width) {
                add_bias(row, bias.data);
            }
        }
    }

    /// `expert_out = down(silu(gate · x) * (up · x))` for `n` rows of `input`,
    /// the MLP of every expert (routed or shared); with gpt-oss's biases
    /// (f32 gate, up and down rows) and its clamped activation where the
    /// config has them.
    fn swiglu(
        &mut self,
        [wg, wu, wd]: [Matrix<'a>; 3],
        biases: Option<[&'a [u8]; 3]>,
        input: Input,
        n: usize,
    ) {
        let c = self.config;
        let f = wg.rows;
        let outs = (self.gate.as_mut_ptr(), self.up.as_mut_ptr());
        self.product(&[(wg, outs.0), (wu, outs.1)], input, n);
        for t in 0..n {
            let (gate, up) = (
                &mut self.gate[t * f..(t + 1) * f],
                &mut self.up[t * f..(t + 1) * f],
            );
            if let Some([bg, bu, _]) = biases {
                add_bias(gate, bg);
                add_bias(up, bu);
            }
            if c.swiglu_alpha != 0.0 {
                clamped_swiglu(gate, up, c.swiglu_limit, c.swiglu_alpha);
            } else {
                scalar::silu_mul(gate, up);
            }
        }
        let out = self.expert_out.as_mut_ptr();
        self.product(&[(wd, out)], Input::Hidden, n);
        if let Some([_, _, bd]) = biases {
            let h = wd.rows;
            for row in self.expert_out[..n * h].chunks_exact_mut(h) {
                add_bias(row, bd);
            }
        }
    }

    /// Expert `expert`'s gate, up and down bias rows (gpt-oss), if the
    /// family has them.
    fn expert_biases(&self, layer: u32, expert: u32) -> Option<[&'a [u8]; 3]> {
        let row = |kind| {
            let w = self.weight(TensorId::layer(kind, layer));
            let bytes = 4 * w.cols;
            &w.data[expert as usize * bytes..(expert as usize + 1) * bytes]
        };
        self.index
            .of(TensorId::layer(TensorKind::ExpertGateBias, layer))
            .map(|_| {
                [
                    row(TensorKind::ExpertGateBias),
                    row(TensorKind::ExpertUpBias),
                    row(TensorKind::ExpertDownBias),
                ]
            })
    }

    /// The shared expert (Qwen2-MoE, Hunyuan, Granite shared, DeepSeek; a
    /// DeepSeek dense layer's MLP): a SwiGLU MLP
    /// every token goes through, its output scaled by
    /// `sigmoid(shared_expert_gate · x)` where the family gates it, and
    /// added to the routed experts' sum in `moe`.
    fn shared_expert(&mut self, layer: u32, n: usize) {
        let c = self.config;
        let h = c.hidden_size as usize;
        let wg = self.weight(TensorId::layer(TensorKind::SharedGate, layer));
        let wu = self.weight(TensorId::layer(TensorKind::SharedUp, layer));
        let wd = self.weight(TensorId::layer(TensorKind::SharedDown, layer));
        let gated = c.architecture.shared_expert_gated();
        let gate = gated.then(|| self.weight(TensorId::layer(TensorKind::SharedExpertGate, layer)));
        self.swiglu([wg, wu, wd], None, Input::Normed, n);
        for t in 0..n {
            let xn = &self.xn[t * h..(t + 1) * h];
            let g = gate.map_or(1.0, |gate| {
                let logit: f32 = (0..h).map(|i| scalar::f32_at(gate.data, i) * xn[i]).sum();
                1.0 / (1.0 + libm::expf(-logit))
            });
            scalar::axpy(
                &mut self.moe[t * h..(t + 1) * h],
                g,
                &self.expert_out[t * h..(t + 1) * h],
            );
        }
    }

    /// `xn = norm(x)` for the first `n` rows, with layer `layer`'s norm
    /// (`bias` only for LayerNorm families).
    fn norm_rows(&mut self, weight: TensorKind, bias: TensorKind, layer: u32, n: usize) {
        let h = self.config.hidden_size as usize;
        let norm = self.norm_weights(weight, bias, Some(layer));
        for (xn, x) in self.xn[..n * h]
            .chunks_exact_mut(h)
            .zip(self.x[..n * h].chunks_exact(h))
        {
            norm.apply(xn, x, self.config.norm_eps);
        }
    }

    /// The weights of a norm: `bias` only for LayerNorm families.
    fn norm_weights(&self, weight: TensorKind, bias: TensorKind, layer: Option<u32>) -> Norm<'a> {
        let id = |kind| match layer {
            Some(l) => TensorId::layer(kind, l),
            None => TensorId::global(kind),
        };
        Norm {
            weight: self.weight(id(weight)).data,
            bias: self
                .config
                .architecture
                .layer_norm()
                .then(|| self.weight(id(bias)).data),
        }
    }

    /// The family's query/key normalisation before rope (`after_rope`
    /// false) or after it, then OLMoE's clamp (before rope).
    fn normalize_qk(&mut self, layer: u32, n: usize, after_rope: bool) {
        let c = self.config;
        let (q_dim, kv_dim, head_dim) = (c.q_dim(), c.kv_dim(), c.head_dim as usize);
        let qk = c.architecture.qk_norm();
        if qk != QkNorm::None && (qk == QkNorm::PerHeadAfterRope) == after_rope {
            let qn = self.weight(TensorId::layer(TensorKind::AttnQNorm, layer));
            let kn = self.weight(TensorId::layer(TensorKind::AttnKNorm, layer));
            let width = if qk != QkNorm::Whole {
                head_dim
            } else {
                usize::MAX
            };
            for row in self.q[..n * q_dim].chunks_exact_mut(q_dim) {
                row.chunks_mut(width)
                    .for_each(|x| scalar::rmsnorm_in_place(x, qn.data, c.norm_eps));
            }
            for row in self.k[..n * kv_dim].chunks_exact_mut(kv_dim) {
                row.chunks_mut(width)
                    .for_each(|x| scalar::rmsnorm_in_place(x, kn.data, c.norm_eps));
            }
        }
        if let Some(clip) = c.clip_qkv.filter(|_| !after_rope) {
            for v in self.q[..n * q_dim]
                .iter_mut()
                .chain(&mut self.k[..n * kv_dim])
                .chain(&mut self.v[..n * kv_dim])
            {
                *v = scalar::clamp(*v, -clip, clip);
            }
        }
    }

    /// Grouped-query attention of the normed rows into `ctx`, caching
    /// each position's keys and values.
    fn multi_head_attention(&mut self, layer: u32, n: usize) {
        let c = self.config;
        let wq = self.weight(TensorId::layer(TensorKind::AttnQ, layer));
        let wk = self.weight(TensorId::layer(TensorKind::AttnK, layer));
        let wv = self.weight(TensorId::layer(TensorKind::AttnV, layer));
        let outs = (
            self.q.as_mut_ptr(),
            self.k.as_mut_ptr(),
            self.v.as_mut_ptr(),
        );
        self.product(
            &[(wq, outs.0), (wk, outs.1), (wv, outs.2)],
            Input::Normed,
            n,
        );

        let head_dim = c.head_dim as usize;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        self.add_qkv_biases(layer, n);
        self.normalize_qk(layer, n, false);
        let max_context = self.max_context as usize;
        let (start, slots) = self.cache_slots(layer);
        let layer_base = start * kv_dim;
        for t in 0..n {
            let p = self.rope_position(self.pos as usize + t);
            let (q, k) = (
                &mut self.q[t * q_dim..(t + 1) * q_dim],
                &mut self.k[t * kv_dim..(t + 1) * kv_dim],
            );
            rotate(c, q, head_dim, p, self.inv_freq, self.rope_scale);
            rotate(c, k, head_dim, p, self.inv_freq, self.rope_scale);
        }
        self.normalize_qk(layer, n, true);
        for t in 0..n {
            let pos = self.pos as usize + t;
            let here = layer_base + pos % slots * kv_dim;
            self.k_cache[here..here + kv_dim]
                .copy_from_slice(&self.k[t * kv_dim..(t + 1) * kv_dim]);
            self.v_cache[here..here + kv_dim]
                .copy_from_slice(&self.v[t * kv_dim..(t + 1) * kv_dim]);
        }

        // Causal attention, token by token; each token's heads are split
        // across threads and write disjoint parts of `ctx` and `scores`.
        // A sliding layer sees the last `sliding_window` positions; sinks
        // (gpt-oss) add one logit per head to the softmax's denominator.
        let group = (c.n_heads / c.n_kv_heads) as usize;
        let scale = c
            .attention_multiplier
            .unwrap_or(1.0 / libm::sqrtf(head_dim as f32));
        let window = match c.slides(layer) {
            true => c.sliding_window as usize,
            false => usize::MAX,
        };
        let sinks = self.optional(TensorId::layer(TensorKind::AttnSinks, layer));
        let k_cache: &[f32] = &self.k_cache[layer_base..layer_base + slots * kv_dim];
        let v_cache: &[f32] = &self.v_cache[layer_base..layer_base + slots * kv_dim];
        for t in 0..n {
            let end = self.pos as usize + t + 1;
            let first = end.saturating_sub(window);
            let visible = end - first;
            let q: &[f32] = &self.q[t * q_dim..(t + 1) * q_dim];
            // SAFETY of the pointers: see the block below.
            let ctx = SharedMut(self.ctx[t * q_dim..].as_mut_ptr());
            let scores = SharedMut(self.scores.as_mut_ptr());
            self.par.for_each(c.n_heads as usize, &|head| {
                let kv_off = (head / group) * head_dim;
                // SAFETY: head `head` alone writes ctx[head*head_dim..][..head_dim]
                // (inside token t's q_dim row) and scores[head*max_context..][..visible]
                // (visible <= max_context); the region ends before either is read.
                let (out, sc) = unsafe {
                    (
                        core::slice::from_raw_parts_mut(ctx.get().add(head * head_dim), head_dim),
                        core::slice::from_raw_parts_mut(
                            scores.get().add(head * max_context),
                            visible,
                        ),
                    )
                };
                let qh = &q[head * head_dim..(head + 1) * head_dim];
                let cache = scalar::CacheView {
                    k: &k_cache[kv_off..],
                    v: &v_cache[kv_off..],
                    stride: kv_dim,
                    slots,
                    first: first % slots,
                };
                let sink = sinks.map(|s| scalar::f32_at(s, head));
                scalar::attend(qh, cache, scale, sink, sc, out);
            });
        }
    }

    /// Multi-head latent attention (DeepSeek) of the normed rows into
    /// `ctx`, with the key and value expansions absorbed: each head's query
    /// is mapped into the latent space (`W_kᵀ q_nope`), attends over the
    /// cached latents and the shared rope keys, and its latent context is
    /// expanded by `W_v`. A position caches `kv_lora_rank + qk_rope_dim`
    /// floats per layer instead of per-head keys and values.
    fn latent_attention(&mut self, layer: u32, n: usize, m: Mla) {
        let c = self.config;
        let id = |kind| TensorId::layer(kind, layer);
        let heads = c.n_heads as usize;
        let (nope, rope) = (m.qk_nope_dim as usize, m.qk_rope_dim as usize);
        let (v_dim, lora) = (m.v_head_dim as usize, m.kv_lora_rank as usize);
        let qk = nope + rope;
        let q_dim = heads * qk;
        let width = m.cache_width();
        // Queries (directly, or through the normed compressed query) and
        // the latent with the rope key.
        let wq = self.weight(id(TensorKind::AttnQ));
        let wkv = self.weight(id(TensorKind::AttnKvA));
        if m.q_lora_rank > 0 {
            let wqa = self.weight(id(TensorKind::AttnQA));
            let outs = (self.q_latent.as_mut_ptr(), self.k.as_mut_ptr());
            self.product(&[(wqa, outs.0), (wkv, outs.1)], Input::Normed, n);
            let norm = self.weight(id(TensorKind::AttnQANorm));
            let r = m.q_lora_rank as usize;
            for row in self.q_latent[..n * r].chunks_exact_mut(r) {
                scalar::rmsnorm_in_place(row, norm.data, LATENT_NORM_EPS);
            }
            let out = self.q.as_mut_ptr();
            self.product(&[(wq, out)], Input::Latent, n);
        } else {
            let outs = (self.q.as_mut_ptr(), self.k.as_mut_ptr());
            self.product(&[(wq, outs.0), (wkv, outs.1)], Input::Normed, n);
        }
        let kv_norm = self.weight(id(TensorKind::AttnKvANorm));
        let max_context = self.max_context as usize;
        // Latent attention never slides: the layer holds every position.
        let layer_base = self.cache_slots(layer).0 * width;
        for t in 0..n {
            let pos = self.pos as usize + t;
            let p = self.rope_position(pos);
            let kv = &mut self.k[t * width..(t + 1) * width];
            scalar::rmsnorm_in_place(&mut kv[..lora], kv_norm.data, LATENT_NORM_EPS);
            rotate(c, &mut kv[lora..], rope, p, self.inv_freq, self.rope_scale);
            for head in self.q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(qk) {
                rotate(
                    c,
                    &mut head[nope..],
                    rope,
                    p,
                    self.inv_freq,
                    self.rope_scale,
                );
            }
            let here = layer_base + pos * width;
            self.k_cache[here..here + width].copy_from_slice(kv);
        }

        let kvb = self.weight(id(TensorKind::AttnKvB));
        let row_bytes = kvb.dtype.row_bytes(lora);
        let scale = c
            .attention_multiplier
            .unwrap_or(1.0 / libm::sqrtf(qk as f32));
        let cache: &[f32] = &self.k_cache[layer_base..];
        let out_dim = heads * v_dim;
        for t in 0..n {
            let visible = self.pos as usize + t + 1;
            let q: &[f32] = &self.q[t * q_dim..(t + 1) * q_dim];
            // SAFETY of the pointers: see the block below.
            let ctx = SharedMut(self.ctx[t * out_dim..].as_mut_ptr());
            let scores = SharedMut(self.scores.as_mut_ptr());
            let scratch = SharedMut(self.mla_heads.as_mut_ptr());
            self.par.for_each(heads, &|head| {
                // SAFETY: head `head` alone writes ctx[head*v_dim..][..v_dim]
                // (inside token t's row of heads*v_dim), scores[head*max_context..]
                // [..visible] (visible <= max_context) and its own
                // width + lora floats of mla_heads (heads * (width + lora)
                // long); the region ends before any of them is read.
                let (out, sc, absorbed, latent) = unsafe {
                    let mine = scratch.get().add(head * (width + lora));
                    (
                        core::slice::from_raw_parts_mut(ctx.get().add(head * v_dim), v_dim),
                        core::slice::from_raw_parts_mut(
                            scores.get().add(head * max_context),
                            visible,
                        ),
                        core::slice::from_raw_parts_mut(mine, width),
                        core::slice::from_raw_parts_mut(mine.add(width), lora),
                    )
                };
                // This head's rows of kv_b: nope key rows, then v_dim value rows.
                let rows = &kvb.data[head * (nope + v_dim) * row_bytes..];
                let row = |r: usize| &rows[r * row_bytes..(r + 1) * row_bytes];
                let qh = &q[head * qk..(head + 1) * qk];
                absorbed.fill(0.0);
                for (i, &qi) in qh[..nope].iter().enumerate() {
                    dequantize_row(kvb.dtype, row(i), latent);
                    scalar::axpy(&mut absorbed[..lora], qi, latent);
                }
                absorbed[lora..].copy_from_slice(&qh[nope..]);
                let view = scalar::CacheView {
                    k: cache,
                    v: cache,
                    stride: width,
                    slots: max_context,
                    first: 0,
                };
                scalar::attend(absorbed, view, scale, None, sc, latent);
                for (r, o) in out.iter_mut().enumerate() {
                    dequantize_row(kvb.dtype, row(nope + r), &mut absorbed[..lora]);
                    *o = scalar::dot(&absorbed[..lora], latent);
                }
            });
        }
    }

    /// Layer `layer`'s first cache slot and its slot count.
    fn cache_slots(&self, layer: u32) -> (usize, usize) {
        let l = layer as usize;
        (
            self.cache_start[l],
            self.cache_start[l + 1] - self.cache_start[l],
        )
    }

    /// Position `pos` as rope sees it (divided by a linear scaling factor).
    fn rope_position(&self, pos: usize) -> f32 {
        match self.config.rope_scaling {
            RopeScaling::Linear { factor } => pos as f32 / factor,
            _ => pos as f32,
        }
    }

    /// Attention with its residual: norm, the family's attention into
    /// `ctx`, the output projection.
    fn attention(&mut self, layer: u32, n: usize) {
        let c = self.config;
        let h = c.hidden_size as usize;
        self.norm_rows(TensorKind::AttnNorm, TensorKind::AttnNormBias, layer, n);
        match c.mla {
            Some(m) => self.latent_attention(layer, n, m),
            None => self.multi_head_attention(layer, n),
        }
        let wo = self.weight(TensorId::layer(TensorKind::AttnO, layer));
        let out = self.proj.as_mut_ptr();
        self.product(&[(wo, out)], Input::Context, n);
        if c.architecture
            .layer_tensors()
            .contains(&TensorKind::AttnOBias)
        {
            let bias = self.weight(TensorId::layer(TensorKind::AttnOBias, layer));
            for row in self.proj[..n * h].chunks_exact_mut(h) {
                add_bias(row, bias.data);
            }
        }
        let m = c.residual_multiplier;
        self.x[..n * h]
            .iter_mut()
            .zip(self.proj.iter())
            .for_each(|(x, a)| *x += a * m);
    }

    /// Predicts the experts of `layer` from the hidden state after the
    /// previous layer's attention (that layer's norm and router applied to
    /// it), and starts reading those not cached. Decoding only; uses the
    /// first rows of `xn` and `router`, which the next MoE recomputes.
    fn predict(&mut self, layer: u32) {
        let c = self.config;
        let (h, e_count, top_k) = (
            c.hidden_size as usize,
            c.n_experts as usize,
            c.n_experts_per_token as usize,
        );
        let norm = self.norm_weights(TensorKind::FfnNorm, TensorKind::FfnNormBias, Some(layer));
        let router = self.weight(TensorId::layer(TensorKind::Router, layer));
        let bias = self.router_correction(layer);
        norm.apply(&mut self.xn[..h], &self.x[..h], c.norm_eps);
        for (p, row) in self.router[..e_count]
            .iter_mut()
            .zip(router.data.chunks_exact(4 * h))
        {
            *p = (0..h).map(|i| scalar::f32_at(row, i) * self.xn[i]).sum();
        }
        if let Some(b) = self.optional(TensorId::layer(TensorKind::RouterBias, layer)) {
            add_bias(&mut self.router[..e_count], b);
        }
        let mut weights = [0.0f32; crate::format::config::MAX_EXPERTS_PER_TOKEN as usize];
        let half = layer as usize % 2;
        let predicted = &mut self.predicted[half * top_k..(half + 1) * top_k];
        route(
            c,
            &mut self.router[..e_count],
            bias,
            predicted,
            &mut weights[..top_k],
        );
        self.predicted_layer[half] = layer;
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        cache.stats.predicted += top_k as u64;
        for &expert in self.predicted[half * top_k..(half + 1) * top_k].iter() {
            if cache.lookup(layer * c.n_experts + expert).is_some() {
                continue;
            }
            let first = TensorId::expert(TensorKind::ExpertGate, layer, expert);
            let last = TensorId::expert(TensorKind::ExpertDown, layer, expert);
            let (a, b) = (
                self.table[self.index.of(first).unwrap_or(0)],
                self.table[self.index.of(last).unwrap_or(0)],
            );
            let end = b.offset + b.dtype.row_bytes(b.cols as usize) as u64 * b.rows as u64;
            self.model.storage().prefetch(a.offset, end - a.offset);
            cache.stats.prefetch_hints += 1;
        }
    }

    fn moe(&mut self, layer: u32, n: usize) -> Result<(), Error> {
        let c = self.config;
        let h = c.hidden_size as usize;
        let (e_count, top_k) = (c.n_experts as usize, c.n_experts_per_token as usize);
        self.norm_rows(TensorKind::FfnNorm, TensorKind::FfnNormBias, layer, n);
        if !c.has_experts(layer) {
            // A dense first layer: its MLP is held as the shared expert.
            self.moe[..n * h].fill(0.0);
            self.shared_expert(layer, n);
            self.add_moe_output(n);
            return Ok(());
        }
        if c.architecture.has_router() {
            let router = self.weight(TensorId::layer(TensorKind::Router, layer));
            let bias = self.router_correction(layer);
            let out = self.router.as_mut_ptr();
            self.product(&[(router, out)], Input::Normed, n);
            if let Some(b) = self.optional(TensorId::layer(TensorKind::RouterBias, layer)) {
                for row in self.router[..n * e_count].chunks_exact_mut(e_count) {
                    add_bias(row, b);
                }
            }
            for t in 0..n {
                route(
                    c,
                    &mut self.router[t * e_count..(t + 1) * e_count],
                    bias,
                    &mut self.route_expert[t * top_k..(t + 1) * top_k],
                    &mut self.route_weight[t * top_k..(t + 1) * top_k],
                );
            }
        } else {
            // Dense: the MLP is expert 0, always on, weight 1.
            self.route_expert[..n].fill(0);
            self.route_weight[..n].fill(1.0);
        }
        let half = layer as usize % 2;
        if self.predicted_layer[half] == layer {
            let chosen = &self.route_expert[..top_k];
            let predicted = &self.predicted[half * top_k..(half + 1) * top_k];
            let used = predicted.iter().filter(|e| chosen.contains(e)).count();
            if let Some(cache) = self.cache.as_mut() {
                cache.stats.predicted_used += used as u64;
            }
            self.predicted_layer[half] = crate::format::tensor::NONE;
        }

        // The normed inputs, quantized once for every expert.
        let gate0 = self.table[self
            .index
            .of(TensorId::expert(TensorKind::ExpertGate, layer, 0))
            .unwrap_or(0)];
        if gate0.dtype.is_quantized() {
            self.act.quantize(&self.kernels, self.xn, h, h, n);
        }
        self.moe[..n * h].fill(0.0);
        // Experts in index order (as transformers sums them), each over the
        // tokens routed to it.
        for expert in 0..e_count as u32 {
            let mut m = 0;
            for t in 0..n {
                if let Some(k) = self.route_expert[t * top_k..(t + 1) * top_k]
                    .iter()
                    .position(|&e| e == expert)
                {
                    self.members[m] = t as u32;
                    self.member_weight[m] = self.route_weight[t * top_k + k];
                    m += 1;
                }
            }
            if m == 0 {
                continue;
            }
            for j in 0..m {
                let t = self.members[j] as usize;
                self.expert_in[j * h..(j + 1) * h].copy_from_slice(&self.xn[t * h..(t + 1) * h]);
                self.act_e.copy_token(j, &self.act, t);
            }
            let weights = self.expert(layer, expert)?;
            let biases = self.expert_biases(layer, expert);
            self.swiglu(weights, biases, Input::Expert, m);
            for j in 0..m {
                let t = self.members[j] as usize;
                let w = self.member_weight[j];
                scalar::axpy(
                    &mut self.moe[t * h..(t + 1) * h],
                    w,
                    &self.expert_out[j * h..(j + 1) * h],
                );
            }
        }
        if c.shared_expert_ffn_size > 0 {
            self.shared_expert(layer, n);
        }
        self.add_moe_output(n);
        Ok(())
    }

    /// Adds the MLP block's output `moe` to the residual stream.
    fn add_moe_output(&mut self, n: usize) {
        let h = self.config.hidden_size as usize;
        let mult = self.config.residual_multiplier;
        self.x[..n * h]
            .iter_mut()
            .zip(self.moe.iter())
            .for_each(|(x, m)| *x += m * mult);
    }

    /// The router's score correction bias (DeepSeek-V3), if the family has one.
    fn router_correction(&self, layer: u32) -> Option<&'a [u8]> {
        self.optional(TensorId::layer(TensorKind::RouterCorrection, layer))
    }

    /// The bytes of tensor `id` if the model has it.
    fn optional(&self, id: TensorId) -> Option<&'a [u8]> {
        self.index.of(id).map(|_| self.weight(id).data)
    }
}

/// Rope inverse frequencies `θ^(-2i/d)` for a session of `max_context`
/// positions, with Llama 3.1's scaling (as transformers'
/// `_compute_llama3_parameters`), YaRN's (`_compute_yarn_parameters`) or
/// LongRoPE's per-frequency factors applied where the config asks for them;
/// returns the factor rotated queries and keys are scaled by (LongRoPE's
/// mscale, YaRN's attention factor, else 1).
fn rope_frequencies(config: &ModelConfig, max_context: u32, inv_freq: &mut [f32]) -> f32 {
    let dim = config.rope_dim() as f32;
    for (i, f) in inv_freq.iter_mut().enumerate() {
        *f = 1.0 / libm::powf(config.rope_theta, (2 * i) as f32 / dim);
    }
    if let RopeScaling::Yarn {
        factor,
        original_max_position,
        beta_fast,
        beta_slow,
        attention_factor,
        truncate,
    } = config.rope_scaling
    {
        // The dimension at which a frequency turns `rotations` times over
        // the original context (f32: no double-precision code on MCUs).
        let correction = |rotations: f32| {
            let turns = original_max_position as f32 / (rotations * 2.0 * core::f32::consts::PI);
            dim * libm::logf(turns) / (2.0 * libm::logf(config.rope_theta))
        };
        let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
        if truncate {
            (low, high) = (libm::floorf(low), libm::ceilf(high));
        }
        let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
        if low == high {
            high += 0.001;
        }
        for (i, f) in inv_freq.iter_mut().enumerate() {
            // 1 keeps the frequency (extrapolation), 0 divides it by `factor`.
            let keep = 1.0 - scalar::clamp((i as f32 - low) / (high - low), 0.0, 1.0);
            *f = (*f / factor) * (1.0 - keep) + *f * keep;
        }
        return attention_factor;
    }
    if let RopeScaling::LongRope {
        original_max_position,
        short_mscale,
        long_mscale,
    } = config.rope_scaling
    {
        // transformers picks the factors by the current length; a session
        // picks them once, by the context it plans for.
        let long = max_context > original_max_position;
        let (factors, mscale) = match long {
            true => (&config.rope_long_factor, long_mscale),
            false => (&config.rope_short_factor, short_mscale),
        };
        for (f, d) in inv_freq.iter_mut().zip(factors.iter()) {
            *f /= d;
        }
        return mscale;
    }
    if let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position,
    } = config.rope_scaling
    {
        let old = original_max_position as f32;
        let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
        for f in inv_freq.iter_mut() {
            let wavelen = 2.0 * core::f32::consts::PI / *f;
            let scaled = if wavelen > low_wavelen {
                *f / factor
            } else {
                *f
            };
            *f = if wavelen < high_wavelen || wavelen > low_wavelen {
                scaled
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            };
        }
    }
    1.0
}

/// Rotates every `dim`-wide head of `x` to position `p` in the family's
/// pair layout, and scales it by `scale` (1: unchanged).
fn rotate(c: &ModelConfig, x: &mut [f32], dim: usize, p: f32, inv_freq: &[f32], scale: f32) {
    match c.rope_interleaved {
        true => scalar::rope_interleaved(x, dim, p, inv_freq),
        false => scalar::rope(x, dim, p, inv_freq),
    }
    if scale != 1.0 {
        x.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Reads `dst` from `offset`, split across the session's threads when it
/// is large (paging in an expert is a copy the cores can share).
fn read_parallel<S: Storage + MaybeSync>(
    par: &Parallel,
    storage: &S,
    offset: u64,
    dst: &mut [u8],
) -> Result<(), Error> {
    const MIN_SPLIT: usize = 256 * 1024;
    let parts = par.threads();
    if parts == 1 || dst.len() < MIN_SPLIT {
        return Ok(storage.read_at(offset, dst)?);
    }
    #[cfg(feature = "std")]
    {
        let len = dst.len();
        let base = SharedMut(dst.as_mut_ptr());
        let failed = core::sync::atomic::AtomicU32::new(0);
        par.for_each(parts, &|part| {
            let range = (len * part / parts)..(len * (part + 1) / parts);
            // SAFETY: the parts' ranges are disjoint and inside `dst`, which
            // nothing else touches until `for_each` returns.
            let piece = unsafe {
                core::slice::from_raw_parts_mut(base.get().add(range.start), range.len())
            };
            if storage.read_at(offset + range.start as u64, piece).is_err() {
                failed.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        });
        if failed.load(core::sync::atomic::Ordering::Relaxed) > 0 {
            // Read again on this thread to report the storage's own error.
            return Ok(storage.read_at(offset, dst)?);
        }
        Ok(())
    }
    #[cfg(not(feature = "std"))]
    Ok(storage.read_at(offset, dst)?)
}

/// gpt-oss's activation, in place in `gate`: the gate clamped above at
/// `limit` and the up to ±`limit` (no clamp when `limit` is 0), then
/// `gate · sigmoid(alpha · gate) · (up + 1)`.
fn clamped_swiglu(gate: &mut [f32], up: &[f32], limit: f32, alpha: f32) {
    let limit = if limit > 0.0 { limit } else { f32::INFINITY };
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(limit);
        let u = scalar::clamp(u, -limit, limit);
        *g = x / (1.0 + libm::expf(-alpha * x)) * (u + 1.0);
    }
}

/// Adds a bias vector (f32 bytes) to `row`.
fn add_bias(row: &mut [f32], bias: &[u8]) {
    row.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x += scalar::f32_at(bias, i));
}

/// A norm's weights: RMSNorm, or LayerNorm with its bias.
struct Norm<'w> {
    weight: &'w [u8],
    bias: Option<&'w [u8]>,
}

impl Norm<'_> {
    fn apply(&self, out: &mut [f32], x: &[f32], eps: f32) {
        match self.bias {
            Some(bias) => scalar::layernorm(out, x, self.weight, bias, eps),
            None => scalar::rmsnorm(out, x, self.weight, eps),
        }
    }
}

/// Phi-MoE's sparsemixer at inference, on router `logits`: the best expert,
/// weighted by its softmax among the experts within `2·eps` (relative) of
/// it; then the best of the rest, weighted likewise among the rest. The
/// weights are not renormalised.
fn sparsemixer(logits: &[f32], chosen: &mut [u32], weights: &mut [f32], eps: f32) {
    for k in 0..2 {
        let mut best = usize::MAX;
        for (e, &s) in logits.iter().enumerate() {
            if !chosen[..k].contains(&(e as u32)) && (best == usize::MAX || s > logits[best]) {
                best = e;
            }
        }
        let top = logits[best];
        // softmax over the unmasked experts, read at `best`.
        let kept = |e: usize, s: f32| {
            let factor = libm::fabsf(s).max(top);
            // As in torch, a NaN ratio (0/0) does not mask.
            let masked = (top - s) / factor > 2.0 * eps;
            !chosen[..k].contains(&(e as u32)) && !masked
        };
        let total: f32 = logits
            .iter()
            .enumerate()
            .filter(|&(e, &s)| kept(e, s))
            .map(|(_, &s)| libm::expf(s - top))
            .sum();
        chosen[k] = best as u32;
        weights[k] = 1.0 / total;
    }
}

/// Chooses `chosen.len()` experts from router `logits` (turned into
/// scores in place) and their weights, by the family's rule: sparsemixer;
/// or softmax or sigmoid scores, the best `topk_groups` expert groups kept
/// (a group scores its best expert, or with a correction bias its best
/// two), the top-k of the kept by score plus `bias`, ties to the lower
/// index; weights are the scores, renormalised if the config says so, times
/// `routed_scaling_factor`.
fn route(
    c: &ModelConfig,
    logits: &mut [f32],
    bias: Option<&[u8]>,
    chosen: &mut [u32],
    weights: &mut [f32],
) {
    if c.architecture.sparsemixer() {
        return sparsemixer(logits, chosen, weights, c.router_jitter);
    }
    let scores = logits;
    match c.architecture.router_scoring() {
        RouterScoring::Softmax => scalar::softmax(scores),
        RouterScoring::Sigmoid => scores
            .iter_mut()
            .for_each(|s| *s = 1.0 / (1.0 + libm::expf(-*s))),
    }
    let key = |e: usize| scores[e] + bias.map_or(0.0, |b| scalar::f32_at(b, e));
    // Group limit: experts outside the kept groups cannot be chosen.
    // Group limit: experts outside the kept groups cannot be chosen. One
    // bit per group (at most MAX_EXPERTS groups; a few words of stack).
    let groups = c.expert_groups as usize;
    let size = scores.len() / groups;
    let mut kept_groups = [0u64; (crate::format::config::MAX_EXPERTS as usize).div_ceil(64)];
    let group_kept = |bits: &[u64], g: usize| bits[g / 64] >> (g % 64) & 1 == 1;
    if groups > 1 {
        let group_score = |g: usize| {
            let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for e in g * size..(g + 1) * size {
                let k = key(e);
                if k > first {
                    (first, second) = (k, first);
                } else if k > second {
                    second = k;
                }
            }
            match bias {
                Some(_) => first + second,
                None => first,
            }
        };
        for _ in 0..c.topk_groups {
            let (mut best, mut best_score) = (usize::MAX, f32::NEG_INFINITY);
            for g in (0..groups).filter(|&g| !group_kept(&kept_groups, g)) {
                let s = group_score(g);
                if best == usize::MAX || s > best_score {
                    (best, best_score) = (g, s);
                }
            }
            kept_groups[best / 64] |= 1 << (best % 64);
        }
    }
    let kept = |e: usize| groups <= 1 || group_kept(&kept_groups, e / size);
    for k in 0..chosen.len() {
        let mut best = usize::MAX;
        for e in 0..scores.len() {
            if kept(e)
                && !chosen[..k].contains(&(e as u32))
                && (best == usize::MAX || key(e) > key(best))
            {
                best = e;
            }
        }
        chosen[k] = best as u32;
        weights[k] = scores[best];
    }
    if c.norm_topk_prob {
        let total: f32 = weights.iter().sum::<f32>() + 1e-20;
        weights.iter_mut().for_each(|w| *w /= total);
    }
    if c.routed_scaling_factor != 1.0 {
        weights
            .iter_mut()
            .for_each(|w| *w *= c.routed_scaling_factor);
    }
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
