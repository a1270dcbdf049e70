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
    Index::new(config).of(id)
}

/// Kind codes are below this.
const KIND_CODES: usize = 32;
const ABSENT: u32 = u32::MAX;

/// [`record_index`] precomputed for one config: a session keeps one so
/// that looking a tensor up on the per-token path is a table read and a
/// multiply, not a walk over the architecture's kinds.
#[derive(Debug, Clone, Copy)]
pub struct Index {
    per_layer: usize,
    n_layers: u32,
    n_experts: u32,
    /// Offset within a layer (layer kinds) or after the layers (global
    /// kinds), by kind code; ABSENT if the architecture has no such kind.
    layer_offset: [u32; KIND_CODES],
    global_offset: [u32; KIND_CODES],
    /// Bit per kind code: the kind has one tensor per expert.
    per_expert: u32,
}

impl Index {
    /// The index of `config`'s directory.
    pub fn new(config: &ModelConfig) -> Self {
        let mut index = Index {
            per_layer: per_layer(config),
            n_layers: config.n_layers,
            n_experts: config.n_experts,
            layer_offset: [ABSENT; KIND_CODES],
            global_offset: [ABSENT; KIND_CODES],
            per_expert: 0,
        };
        let mut offset = 0u32;
        for (kind, per_expert) in layer_kinds(config) {
            index.layer_offset[kind as usize] = offset;
            if per_expert {
                index.per_expert |= 1 << kind as u32;
                offset += config.n_experts;
            } else {
                offset += 1;
            }
        }
        for (pos, &kind) in global_tensors(config).iter().enumerate() {
            index.global_offset[kind as usize] = pos as u32;
        }
        index
    }

    /// Directory index of `id`, or `None` if the architecture has no such tensor.
    pub fn of(&self, id: TensorId) -> Option<usize> {
        let code = id.kind as usize;
        if id.layer == NONE {
            let pos = self.global_offset[code];
            return (pos != ABSENT && id.expert == NONE)
                .then(|| self.per_layer * self.n_layers as usize + pos as usize);
        }
        let offset = self.layer_offset[code];
        if id.layer >= self.n_layers || offset == ABSENT {
            return None;
        }
        let base = self.per_layer * id.layer as usize + offset as usize;
        match (self.per_expert & (1 << code) != 0, id.expert) {
            (false, NONE) => Some(base),
            (true, e) if e < self.n_experts => Some(base + e as usize),
            _ => None,
        }
    }
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
