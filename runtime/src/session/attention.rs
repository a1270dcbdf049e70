//! Grouped-query attention (every family but DeepSeek's): q/k/v
//! projections with their biases, q/k norms and OLMoE's clip, rope, the KV
//! cache (a ring for sliding-window layers, in the plan's KV type), the causal softmax with
//! gpt-oss's sinks, and the output projection with its residual. Heads are
//! split across threads; never allocates.

use super::{add_bias, rope, Input, Session};
use crate::format::config::QkNorm;
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::scalar;
use crate::parallel::SharedMut;
use crate::storage::{MaybeSync, Storage};

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// Attention with its residual: norm, the family's attention into
    /// `ctx`, the output projection.
    pub(super) fn attention(&mut self, layer: u32, n: usize) {
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

    /// Grouped-query attention of the normed rows into `ctx`, caching
    /// each position's keys and values.
    pub(super) fn multi_head_attention(&mut self, layer: u32, n: usize) {
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
        for t in 0..n {
            let p = rope::position(c, self.pos as usize + t);
            let (q, k) = (
                &mut self.q[t * q_dim..(t + 1) * q_dim],
                &mut self.k[t * kv_dim..(t + 1) * kv_dim],
            );
            rope::rotate(c, q, head_dim, p, self.inv_freq, self.rope_scale);
            rope::rotate(c, k, head_dim, p, self.inv_freq, self.rope_scale);
        }
        self.normalize_qk(layer, n, true);
        let (k_shape, v_shape) = (self.k_shape, self.v_shape);
        for t in 0..n {
            let slot = start + (self.pos as usize + t) % slots;
            self.k_cache.write(k_shape, slot, &self.k[t * kv_dim..]);
            self.v_cache.write(v_shape, slot, &self.v[t * kv_dim..]);
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
        let (k_cache, v_cache) = (&self.k_cache, &self.v_cache);
        let (blocks, row_blocks) = (k_shape.scale_stride(), k_shape.row_blocks());
        let kernels = &self.kernels;
        for t in 0..n {
            let end = self.pos as usize + t + 1;
            let first = end.saturating_sub(window);
            let visible = end - first;
            let q: &[f32] = &self.q[t * q_dim..(t + 1) * q_dim];
            // SAFETY of the pointers: see the block below.
            let ctx = SharedMut(self.ctx[t * q_dim..].as_mut_ptr());
            let scores = SharedMut(self.scores.as_mut_ptr());
            self.par.for_each(c.n_heads as usize, &|head| {
                let kv_head = head / group;
                let at = start * kv_dim + kv_head * head_dim;
                let block_at = start * blocks + kv_head * row_blocks;
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
                let cache = scalar::KvView {
                    k: k_cache.rows(at, block_at),
                    v: v_cache.rows(at, block_at),
                    stride: kv_dim,
                    scale_stride: blocks,
                    slots,
                    first: first % slots,
                };
                let sink = sinks.map(|s| scalar::f32_at(s, head));
                (kernels.attend)(qh, cache, scale, sink, sc, out);
            });
        }
    }

    /// Qwen2's q/k/v projection biases.
    pub(super) fn add_qkv_biases(&mut self, layer: u32, n: usize) {
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

    /// The family's query/key normalisation before rope (`after_rope`
    /// false) or after it, then OLMoE's clamp (before rope).
    pub(super) fn normalize_qk(&mut self, layer: u32, n: usize, after_rope: bool) {
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
                *v = crate::math::clamp(*v, -clip, clip);
            }
        }
    }

    /// Layer `layer`'s first cache slot and its slot count.
    pub(super) fn cache_slots(&self, layer: u32) -> (usize, usize) {
        let l = layer as usize;
        (
            self.cache_start[l],
            self.cache_start[l + 1] - self.cache_start[l],
        )
    }
}
