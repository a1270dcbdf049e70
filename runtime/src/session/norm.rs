//! The norms before attention, before the MLP and before the head:
//! RMSNorm, or LayerNorm with a bias (Phi-MoE), over rows of the residual
//! stream.

use super::Session;
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::scalar;
use crate::storage::{MaybeSync, Storage};

/// A norm's weights: RMSNorm, or LayerNorm with its bias.
pub(super) struct Norm<'w> {
    weight: &'w [u8],
    bias: Option<&'w [u8]>,
}

impl Norm<'_> {
    pub(super) fn apply(&self, out: &mut [f32], x: &[f32], eps: f32) {
        match self.bias {
            Some(bias) => scalar::layernorm(out, x, self.weight, bias, eps),
            None => scalar::rmsnorm(out, x, self.weight, eps),
        }
    }
}

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// `xn = norm(x)` for the first `n` rows, with layer `layer`'s norm
    /// (`bias` only for LayerNorm families).
    pub(super) fn norm_rows(&mut self, weight: TensorKind, bias: TensorKind, layer: u32, n: usize) {
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
    pub(super) fn norm_weights(
        &self,
        weight: TensorKind,
        bias: TensorKind,
        layer: Option<u32>,
    ) -> Norm<'a> {
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
}
