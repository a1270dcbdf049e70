//! One generation: the KV cache, the scratch buffers and the forward pass.
//!
//! Everything a token touches was carved from the caller's arena by
//! [`Session::new`]; `prefill` and `step` only write into it. This module
//! must never allocate.

use crate::arena::Arena;
use crate::error::{Error, StorageError};
use crate::format::config::{ModelConfig, RopeScaling, MAX_EXPERTS_PER_TOKEN};
use crate::format::tensor::{DType, TensorId, TensorKind};
use crate::kernels::{scalar, Activations, Kernels, Matrix};
use crate::model::{layout, Model};
use crate::parallel::{MatvecJob, Parallel, SharedMut};
use crate::plan::Plan;
use crate::quant::{dequantize_row_q4, dequantize_row_q8, BLOCK_LEN};
use crate::storage::Storage;

/// A tensor resolved once at session start: where its bytes are and their shape.
#[derive(Debug, Clone, Copy)]
pub struct WeightRef {
    offset: u64,
    rows: u32,
    cols: u32,
    dtype: DType,
}

impl WeightRef {
    const EMPTY: WeightRef = WeightRef {
        offset: 0,
        rows: 0,
        cols: 0,
        dtype: DType::F32,
    };
}

/// An int8 copy of an activation vector: values and one scale per block.
struct QuantBuf<'a> {
    qs: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [f32],
}

/// A running generation over one model.
pub struct Session<'a, S: Storage> {
    model: &'a Model<S>,
    config: &'a ModelConfig,
    kernels: Kernels,
    par: Parallel,
    /// Weight bytes: the whole file in place, or the data region copied in.
    weights: &'a [u8],
    /// File offset of `weights[0]`.
    weights_base: u64,
    table: &'a [WeightRef],
    max_context: u32,
    pos: u32,
    // Activations.
    x: &'a mut [f32],
    xn: &'a mut [f32],
    attn: &'a mut [f32],
    moe: &'a mut [f32],
    q: &'a mut [f32],
    ctx: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    gate: &'a mut [f32],
    up: &'a mut [f32],
    act: QuantBuf<'a>,
    act_h: QuantBuf<'a>,
    router: &'a mut [f32],
    scores: &'a mut [f32],
    logits: &'a mut [f32],
    inv_freq: &'a mut [f32],
    k_cache: &'a mut [f32],
    v_cache: &'a mut [f32],
}

impl<'a, S: Storage> Session<'a, S> {
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

        let (weights, weights_base): (&'a [u8], u64) = match model.storage().as_slice() {
            Some(bytes) if plan.weights_in_place => (bytes, 0),
            _ => {
                let dst = arena.take_raw(plan.resident_weight_bytes)?;
                model.storage().read_at(model.preamble().data_offset, dst)?;
                (dst, model.preamble().data_offset)
            }
        };
        let table = arena.take(b.tensors, WeightRef::EMPTY)?;
        for (i, slot) in table.iter_mut().enumerate() {
            let rec = model.record(i)?;
            if rec.offset < weights_base
                || rec.offset - weights_base + rec.length > weights.len() as u64
            {
                return Err(Error::Storage(StorageError::OutOfRange {
                    offset: rec.offset,
                    len: rec.length,
                    storage_len: weights_base + weights.len() as u64,
                }));
            }
            *slot = WeightRef {
                offset: rec.offset - weights_base,
                rows: rec.rows,
                cols: rec.cols,
                dtype: rec.dtype,
            };
        }

        let act_blocks = b.act_len / BLOCK_LEN;
        let session = Session {
            model,
            config,
            kernels: Kernels::detect(),
            par: Parallel::new(plan.limits.threads)?,
            weights,
            weights_base,
            table,
            max_context: plan.limits.max_context,
            pos: 0,
            k_cache: arena.take(b.kv_cache, 0.0f32)?,
            v_cache: arena.take(b.kv_cache, 0.0f32)?,
            x: arena.take(b.hidden, 0.0f32)?,
            xn: arena.take(b.hidden, 0.0f32)?,
            attn: arena.take(b.hidden, 0.0f32)?,
            moe: arena.take(b.hidden, 0.0f32)?,
            q: arena.take(b.q_dim, 0.0f32)?,
            ctx: arena.take(b.q_dim, 0.0f32)?,
            k: arena.take(b.kv_dim, 0.0f32)?,
            v: arena.take(b.kv_dim, 0.0f32)?,
            gate: arena.take(b.ffn, 0.0f32)?,
            up: arena.take(b.ffn, 0.0f32)?,
            act: QuantBuf {
                qs: arena.take(b.act_len, 0i8)?,
                scales: arena.take(act_blocks, 0.0f32)?,
                sums: arena.take(act_blocks, 0.0f32)?,
            },
            act_h: QuantBuf {
                qs: arena.take(b.act_len, 0i8)?,
                scales: arena.take(act_blocks, 0.0f32)?,
                sums: arena.take(act_blocks, 0.0f32)?,
            },
            router: arena.take(b.experts, 0.0f32)?,
            scores: arena.take(b.scores, 0.0f32)?,
            logits: arena.take(b.vocab, 0.0f32)?,
            inv_freq: arena.take(b.rope, 0.0f32)?,
        };
        let head_dim = config.head_dim as f32;
        for (i, f) in session.inv_freq.iter_mut().enumerate() {
            *f = 1.0 / libm::powf(config.rope_theta, (2 * i) as f32 / head_dim);
        }
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

    /// File offset of the first weight byte the session holds (0 in place).
    pub fn weights_base(&self) -> u64 {
        self.weights_base
    }

    /// Runs every token of `tokens` and returns the logits after the last.
    /// Checks every id and the context room before computing anything.
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
        for &t in tokens {
            self.forward(t)?;
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
        self.forward(token)?;
        Ok(self.logits)
    }

    fn weight(&self, id: TensorId) -> Matrix<'a> {
        // Every id the forward pass asks for exists: Model::open checked the
        // directory against the architecture, and the table mirrors it.
        let index = layout::record_index(self.config, id).unwrap_or(0);
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

    fn embed(&mut self, token: u32) {
        let emb = self.weight(TensorId::global(TensorKind::TokenEmbedding));
        let row = emb.row(token as usize);
        match emb.dtype {
            DType::F32 => self
                .x
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = scalar::f32_at(row, i)),
            DType::F16 => self
                .x
                .iter_mut()
                .zip(row.chunks_exact(2))
                .for_each(|(x, b)| {
                    *x = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
                }),
            DType::Q8 => dequantize_row_q8(row, self.x),
            DType::Q4 => dequantize_row_q4(row, self.x),
        }
    }

    fn forward(&mut self, token: u32) -> Result<(), Error> {
        let c = self.config;
        self.embed(token);
        let pos = match c.rope_scaling {
            RopeScaling::Linear { factor } => self.pos as f32 / factor,
            _ => self.pos as f32,
        };
        for layer in 0..c.n_layers {
            self.attention(layer, pos);
            self.moe(layer);
        }
        let norm = self.weight(TensorId::global(TensorKind::OutputNorm));
        scalar::rmsnorm(self.xn, self.x, norm.data, c.norm_eps);
        let head = if c.tied_embeddings {
            TensorKind::TokenEmbedding
        } else {
            TensorKind::LmHead
        };
        let head = self.weight(TensorId::global(head));
        if head.dtype.is_quantized() {
            (self.kernels.quantize_activations)(
                self.xn,
                self.act.qs,
                self.act.scales,
                self.act.sums,
            );
        }
        let acts = Activations {
            f32s: self.xn,
            qs: self.act.qs,
            scales: self.act.scales,
            sums: self.act.sums,
        };
        let out = self.logits.as_mut_ptr();
        self.par.run(
            &self.kernels,
            &[MatvecJob {
                w: head,
                x: acts,
                out,
            }],
        );
        self.pos += 1;
        Ok(())
    }

    fn attention(&mut self, layer: u32, pos: f32) {
        let c = self.config;
        let norm = self.weight(TensorId::layer(TensorKind::AttnNorm, layer));
        scalar::rmsnorm(self.xn, self.x, norm.data, c.norm_eps);
        let wq = self.weight(TensorId::layer(TensorKind::AttnQ, layer));
        let wk = self.weight(TensorId::layer(TensorKind::AttnK, layer));
        let wv = self.weight(TensorId::layer(TensorKind::AttnV, layer));
        let wo = self.weight(TensorId::layer(TensorKind::AttnO, layer));
        let any_int = wq.dtype.is_quantized() || wk.dtype.is_quantized() || wv.dtype.is_quantized();
        if any_int {
            (self.kernels.quantize_activations)(
                self.xn,
                self.act.qs,
                self.act.scales,
                self.act.sums,
            );
        }
        let acts = Activations {
            f32s: self.xn,
            qs: self.act.qs,
            scales: self.act.scales,
            sums: self.act.sums,
        };
        let (q, k, v) = (
            self.q.as_mut_ptr(),
            self.k.as_mut_ptr(),
            self.v.as_mut_ptr(),
        );
        let jobs = [
            MatvecJob {
                w: wq,
                x: acts,
                out: q,
            },
            MatvecJob {
                w: wk,
                x: acts,
                out: k,
            },
            MatvecJob {
                w: wv,
                x: acts,
                out: v,
            },
        ];
        self.par.run(&self.kernels, &jobs);

        let head_dim = c.head_dim as usize;
        scalar::rope(self.q, head_dim, pos, self.inv_freq);
        scalar::rope(self.k, head_dim, pos, self.inv_freq);

        let kv_dim = c.kv_dim();
        let layer_base = layer as usize * self.max_context as usize * kv_dim;
        let here = layer_base + self.pos as usize * kv_dim;
        self.k_cache[here..here + kv_dim].copy_from_slice(self.k);
        self.v_cache[here..here + kv_dim].copy_from_slice(self.v);

        // Each head attends on its own thread share; heads write disjoint
        // parts of `ctx` and `scores`.
        let n = self.pos as usize + 1;
        let group = (c.n_heads / c.n_kv_heads) as usize;
        let scale = 1.0 / libm::sqrtf(head_dim as f32);
        let max_context = self.max_context as usize;
        let k_cache: &[f32] = &self.k_cache[layer_base..];
        let v_cache: &[f32] = &self.v_cache[layer_base..];
        let q: &[f32] = self.q;
        let ctx = SharedMut(self.ctx.as_mut_ptr());
        let scores = SharedMut(self.scores.as_mut_ptr());
        self.par.for_each(c.n_heads as usize, &|h| {
            let kv_off = (h / group) * head_dim;
            // SAFETY: head h alone writes ctx[h*head_dim..][..head_dim] and
            // scores[h*max_context..][..n]; both lie inside their buffers
            // (q_dim = n_heads*head_dim, n_heads*max_context, n <= max_context).
            let (out, sc) = unsafe {
                (
                    core::slice::from_raw_parts_mut(ctx.get().add(h * head_dim), head_dim),
                    core::slice::from_raw_parts_mut(scores.get().add(h * max_context), n),
                )
            };
            let qh = &q[h * head_dim..(h + 1) * head_dim];
            scalar::attend(
                qh,
                &k_cache[kv_off..],
                &v_cache[kv_off..],
                kv_dim,
                scale,
                sc,
                out,
            );
        });

        if wo.dtype.is_quantized() {
            (self.kernels.quantize_activations)(
                self.ctx,
                self.act.qs,
                self.act.scales,
                self.act.sums,
            );
        }
        let acts = Activations {
            f32s: self.ctx,
            qs: self.act.qs,
            scales: self.act.scales,
            sums: self.act.sums,
        };
        let out = self.attn.as_mut_ptr();
        self.par.run(
            &self.kernels,
            &[MatvecJob {
                w: wo,
                x: acts,
                out,
            }],
        );
        self.x
            .iter_mut()
            .zip(self.attn.iter())
            .for_each(|(x, a)| *x += a);
    }

    fn moe(&mut self, layer: u32) {
        let c = self.config;
        let norm = self.weight(TensorId::layer(TensorKind::FfnNorm, layer));
        scalar::rmsnorm(self.xn, self.x, norm.data, c.norm_eps);
        let router = self.weight(TensorId::layer(TensorKind::Router, layer));
        let acts = Activations {
            f32s: self.xn,
            qs: self.act.qs,
            scales: self.act.scales,
            sums: self.act.sums,
        };
        self.kernels.matvec(&router, &acts, self.router);
        scalar::softmax(self.router);

        // Top-k by repeated selection (k <= 16); ties go to the lower index.
        let mut chosen: heapless::Vec<(u32, f32), { MAX_EXPERTS_PER_TOKEN as usize }> =
            heapless::Vec::new();
        for _ in 0..c.n_experts_per_token {
            let mut best: Option<(u32, f32)> = None;
            for (e, &p) in self.router.iter().enumerate() {
                let taken = chosen.iter().any(|&(c, _)| c == e as u32);
                if !taken && best.is_none_or(|(_, bp)| p > bp) {
                    best = Some((e as u32, p));
                }
            }
            if let Some(b) = best {
                let _ = chosen.push(b);
            }
        }
        let total: f32 = chosen.iter().map(|&(_, p)| p).sum();

        let any_int = self
            .weight(TensorId::expert(TensorKind::ExpertGate, layer, 0))
            .dtype
            .is_quantized();
        if any_int {
            (self.kernels.quantize_activations)(
                self.xn,
                self.act.qs,
                self.act.scales,
                self.act.sums,
            );
        }
        self.moe.fill(0.0);
        for &(expert, p) in &chosen {
            let wg = self.weight(TensorId::expert(TensorKind::ExpertGate, layer, expert));
            let wu = self.weight(TensorId::expert(TensorKind::ExpertUp, layer, expert));
            let wd = self.weight(TensorId::expert(TensorKind::ExpertDown, layer, expert));
            let acts = Activations {
                f32s: self.xn,
                qs: self.act.qs,
                scales: self.act.scales,
                sums: self.act.sums,
            };
            let (gate, up) = (self.gate.as_mut_ptr(), self.up.as_mut_ptr());
            let jobs = [
                MatvecJob {
                    w: wg,
                    x: acts,
                    out: gate,
                },
                MatvecJob {
                    w: wu,
                    x: acts,
                    out: up,
                },
            ];
            self.par.run(&self.kernels, &jobs);
            scalar::silu_mul(self.gate, self.up);
            if wd.dtype.is_quantized() {
                (self.kernels.quantize_activations)(
                    self.gate,
                    self.act_h.qs,
                    self.act_h.scales,
                    self.act_h.sums,
                );
            }
            let hacts = Activations {
                f32s: self.gate,
                qs: self.act_h.qs,
                scales: self.act_h.scales,
                sums: self.act_h.sums,
            };
            let out = self.attn.as_mut_ptr();
            self.par.run(
                &self.kernels,
                &[MatvecJob {
                    w: wd,
                    x: hacts,
                    out,
                }],
            );
            scalar::axpy(self.moe, p / total, self.attn);
        }
        self.x
            .iter_mut()
            .zip(self.moe.iter())
            .for_each(|(x, m)| *x += m);
    }
}
