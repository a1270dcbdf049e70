//! Multi-head latent attention (DeepSeek-V2/V3, Kimi K2): the cache holds
//! each position's normed latent and one shared rope key, and the key and
//! value expansions are absorbed into the queries and the context (see
//! docs/ARCHITECTURE.md). Any weight type: rows of `kv_b` are dequantized
//! one at a time. Never allocates.

use super::{rope, Input, Session};
use crate::format::config::Mla;
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::scalar;
use crate::parallel::SharedMut;
use crate::quant::dequantize_row;
use crate::storage::{MaybeSync, Storage};

/// Epsilon of MLA's latent norms: transformers builds `q_a_layernorm` and
/// `kv_a_layernorm` with its default, not the config's `rms_norm_eps`.
const LATENT_NORM_EPS: f32 = 1e-6;

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// Multi-head latent attention (DeepSeek) of the normed rows into
    /// `ctx`, with the key and value expansions absorbed: each head's query
    /// is mapped into the latent space (`W_kᵀ q_nope`), attends over the
    /// cached latents and the shared rope keys, and its latent context is
    /// expanded by `W_v`. A position caches `kv_lora_rank + qk_rope_dim`
    /// floats per layer instead of per-head keys and values.
    pub(super) fn latent_attention(&mut self, layer: u32, n: usize, m: Mla) {
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
        let start = self.cache_slots(layer).0;
        let shape = self.k_shape;
        for t in 0..n {
            let pos = self.pos as usize + t;
            let p = rope::position(c, pos);
            let kv = &mut self.k[t * width..(t + 1) * width];
            scalar::rmsnorm_in_place(&mut kv[..lora], kv_norm.data, LATENT_NORM_EPS);
            rope::rotate(c, &mut kv[lora..], rope, p, self.inv_freq, self.rope_scale);
            for head in self.q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(qk) {
                rope::rotate(
                    c,
                    &mut head[nope..],
                    rope,
                    p,
                    self.inv_freq,
                    self.rope_scale,
                );
            }
            self.k_cache.write(shape, start + pos, kv);
        }

        let kvb = self.weight(id(TensorKind::AttnKvB));
        let row_bytes = kvb.dtype.row_bytes(lora);
        let scale = c
            .attention_multiplier
            .unwrap_or(1.0 / libm::sqrtf(qk as f32));
        let cache = self
            .k_cache
            .rows(start * width, start * shape.scale_stride());
        let out_dim = heads * v_dim;
        let kernels = &self.kernels;
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
                let view = scalar::KvView {
                    k: cache,
                    v: cache,
                    stride: width,
                    scale_stride: shape.scale_stride(),
                    slots: max_context,
                    first: 0,
                };
                (kernels.attend)(absorbed, view, scale, None, sc, latent);
                for (r, o) in out.iter_mut().enumerate() {
                    dequantize_row(kvb.dtype, row(nope + r), &mut absorbed[..lora]);
                    *o = scalar::dot(&absorbed[..lora], latent);
                }
            });
        }
    }
}
