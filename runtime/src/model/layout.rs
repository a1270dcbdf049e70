//! The directory's order, computed from the config: per layer the layer
//! tensors and expert tensors sorted by kind code (experts ascending within a
//! kind), then the global tensors. Because a valid file holds exactly these
//! records in this order, a tensor's index is arithmetic.

use crate::format::config::{global_tensors, ModelConfig};
use crate::format::tensor::{TensorId, TensorKind, NONE};

/// Kinds of one layer in directory order (sorted by code) and whether each
/// is per expert. At most 32 kinds a layer.
fn layer_kinds(config: &ModelConfig) -> heapless::Vec<(TensorKind, bool), 32> {
    let arch = config.architecture;
    let mut kinds: heapless::Vec<(TensorKind, bool), 32> = heapless::Vec::new();
    for &k in arch.layer_tensors() {
        let _ = kinds.push((k, false));
    }
    for &k in arch.expert_tensors() {
        let _ = kinds.push((k, true));
    }
    kinds.sort_unstable_by_key(|(k, _)| *k as u16);
    kinds
}

/// Records each layer holds.
pub fn per_layer(config: &ModelConfig) -> usize {
    layer_kinds(config)
        .iter()
        .map(|&(_, e)| if e { config.n_experts as usize } else { 1 })
        .sum()
}

/// Records the whole directory holds.
pub fn tensor_count(config: &ModelConfig) -> usize {
    per_layer(config) * config.n_layers as usize + global_tensors(config).len()
}

/// Directory index of `id`, or `None` if the architecture has no such tensor.
pub fn record_index(config: &ModelConfig, id: TensorId) -> Option<usize> {
    if id.layer == NONE {
        let pos = global_tensors(config).iter().position(|&k| k == id.kind)?;
        return (id.expert == NONE).then(|| per_layer(config) * config.n_layers as usize + pos);
    }
    if id.layer >= config.n_layers {
        return None;
    }
    let mut index = per_layer(config) * id.layer as usize;
    for (kind, per_expert) in layer_kinds(config) {
        if kind == id.kind {
            return match (per_expert, id.expert) {
                (false, NONE) => Some(index),
                (true, e) if e < config.n_experts => Some(index + e as usize),
                _ => None,
            };
        }
        index += if per_expert {
            config.n_experts as usize
        } else {
            1
        };
    }
    None
}

/// Every tensor id of a model, in directory order.
pub struct TensorIds<'c> {
    config: &'c ModelConfig,
    kinds: heapless::Vec<(TensorKind, bool), 32>,
    layer: u32,
    kind: usize,
    expert: u32,
    global: usize,
}

impl<'c> TensorIds<'c> {
    /// Starts at the first record.
    pub fn new(config: &'c ModelConfig) -> Self {
        TensorIds {
            config,
            kinds: layer_kinds(config),
            layer: 0,
            kind: 0,
            expert: 0,
            global: 0,
        }
    }
}

impl Iterator for TensorIds<'_> {
    type Item = TensorId;

    fn next(&mut self) -> Option<TensorId> {
        if self.layer < self.config.n_layers {
            let (kind, per_expert) = self.kinds[self.kind];
            let id = if per_expert {
                TensorId::expert(kind, self.layer, self.expert)
            } else {
                TensorId::layer(kind, self.layer)
            };
            self.expert += 1;
            if !per_expert || self.expert == self.config.n_experts {
                self.expert = 0;
                self.kind += 1;
                if self.kind == self.kinds.len() {
                    self.kind = 0;
                    self.layer += 1;
                }
            }
            return Some(id);
        }
        let kind = *global_tensors(self.config).get(self.global)?;
        self.global += 1;
        Some(TensorId::global(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::tiny_config;

    #[test]
    fn ids_are_sorted_and_indices_agree() {
        let c = tiny_config();
        let ids: heapless::Vec<TensorId, 64> = TensorIds::new(&c).collect();
        assert_eq!(ids.len(), tensor_count(&c));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(record_index(&c, *id), Some(i), "{id}");
            if i > 0 {
                assert!(ids[i - 1].sort_key() < id.sort_key());
            }
        }
        assert_eq!(
            record_index(&c, TensorId::expert(TensorKind::ExpertUp, 0, 4)),
            None
        );
        assert_eq!(
            record_index(&c, TensorId::layer(TensorKind::AttnQ, 2)),
            None
        );
    }
}
