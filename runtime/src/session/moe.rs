//! The MLP block: the router and the family's routing rule, the routed
//! experts each over the tokens routed to it (in index order, as
//! transformers sums them), the shared expert or a dense layer's MLP, the
//! SwiGLU variants, and the residual. Experts are computed one at a time,
//! so a batch may route to more experts than there are slots. Never
//! allocates.

use super::route::route;
use super::{add_bias, Input, Session};
use crate::error::Error;
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::{scalar, Matrix};
use crate::storage::{MaybeSync, Storage};

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// The MLP block of `layer` for `n` tokens, added to the residual
    /// stream: routed experts (or a dense layer's MLP) and the shared expert.
    pub(super) fn moe(&mut self, layer: u32, n: usize) -> Result<(), Error> {
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
        self.choose_experts(layer, n);
        if n == 1 && layer + 1 < c.n_layers {
            self.prefetch_predicted(layer, layer + 1);
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
        for i in 0..self.layer_expert_count {
            let expert = self.layer_experts[i];
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
            for j in 0..m {
                let t = self.members[j] as usize;
                self.expert_in[j * h..(j + 1) * h].copy_from_slice(&self.xn[t * h..(t + 1) * h]);
                self.act_e.copy_token(j, &self.act, t);
            }
            let weights = self.expert(layer, i)?;
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

    /// The shared expert (Qwen2-MoE, Hunyuan, Granite shared, DeepSeek; a
    /// DeepSeek dense layer's MLP): a SwiGLU MLP
    /// every token goes through, its output scaled by
    /// `sigmoid(shared_expert_gate · x)` where the family gates it, and
    /// added to the routed experts' sum in `moe`.
    pub(super) fn shared_expert(&mut self, layer: u32, n: usize) {
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

    /// `expert_out = down(silu(gate · x) * (up · x))` for `n` rows of `input`,
    /// the MLP of every expert (routed or shared); with gpt-oss's biases
    /// (f32 gate, up and down rows) and its clamped activation where the
    /// config has them.
    pub(super) fn swiglu(
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
                (self.kernels.silu_mul)(gate, up);
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
    pub(super) fn expert_biases(&self, layer: u32, expert: u32) -> Option<[&'a [u8]; 3]> {
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

    /// Adds the MLP block's output `moe` to the residual stream.
    pub(super) fn add_moe_output(&mut self, n: usize) {
        let h = self.config.hidden_size as usize;
        let mult = self.config.residual_multiplier;
        self.x[..n * h]
            .iter_mut()
            .zip(self.moe.iter())
            .for_each(|(x, m)| *x += m * mult);
    }

    /// The router's score correction bias (DeepSeek-V3), if the family has one.
    pub(super) fn router_correction(&self, layer: u32) -> Option<&'a [u8]> {
        self.optional(TensorId::layer(TensorKind::RouterCorrection, layer))
    }
}

/// gpt-oss's activation, in place in `gate`: the gate clamped above at
/// `limit` and the up to ±`limit` (no clamp when `limit` is 0), then
/// `gate · sigmoid(alpha · gate) · (up + 1)`.
fn clamped_swiglu(gate: &mut [f32], up: &[f32], limit: f32, alpha: f32) {
    let limit = if limit > 0.0 { limit } else { f32::INFINITY };
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(limit);
        let u = crate::math::clamp(u, -limit, limit);
        *g = x / (1.0 + libm::expf(-alpha * x)) * (u + 1.0);
    }
}
