//! The directory's order, computed from the config: per layer the layer
//! tensors and expert tensors sorted by kind code (experts ascending within a
//! kind), then the global tensors. Dense first layers (DeepSeek) hold fewer
//! kinds than the MoE layers after them. Because a valid file holds exactly
//! these records in this order, a tensor's index is arithmetic.

use crate::format::config::{global_tensors, ModelConfig};
use crate::format::tensor::{TensorId, TensorKind, NONE};

/// Kinds of `layer` in directory order (sorted by code) and whether each
/// is per expert. At most 32 kinds a layer.
fn layer_kinds(config: &ModelConfig, layer: u32) -> heapless::Vec<(TensorKind, bool), 32> {
    let mut kinds = config.layer_kinds(layer);
    kinds.sort_unstable_by_key(|(k, _)| *k as u16);
    kinds
}

/// Records layer `layer` holds.
fn records_of(config: &ModelConfig, layer: u32) -> usize {
    layer_kinds(config, layer)
        .iter()
        .map(|&(_, e)| if e { config.n_experts as usize } else { 1 })
        .sum()
}

/// Records the whole directory holds.
pub fn tensor_count(config: &ModelConfig) -> usize {
    let dense = config.first_dense_layers.min(config.n_layers);
    let first = if dense > 0 { records_of(config, 0) } else { 0 };
    let rest = records_of(config, dense.min(config.n_layers - 1));
    first * dense as usize
        + rest * (config.n_layers - dense) as usize
        + global_tensors(config).len()
}

/// Directory index of `id`, or `None` if the architecture has no such tensor.
pub fn record_index(config: &ModelConfig, id: TensorId) -> Option<usize> {
    Index::new(config).of(id)
}

/// Kind codes are below this.
const KIND_CODES: usize = 64;
const ABSENT: u32 = u32::MAX;

/// Where each kind sits in one kind of layer (dense or MoE).
#[derive(Debug, Clone, Copy)]
struct LayerShape {
    /// Records in such a layer.
    records: usize,
    /// Offset within the layer by kind code; ABSENT if the layer lacks it.
    offset: [u32; KIND_CODES],
    /// Bit per kind code: the kind has one tensor per expert.
    per_expert: u64,
}

impl LayerShape {
    fn new(config: &ModelConfig, layer: u32) -> Self {
        let mut shape = LayerShape {
            records: 0,
            offset: [ABSENT; KIND_CODES],
            per_expert: 0,
        };
        let mut offset = 0u32;
        for (kind, per_expert) in layer_kinds(config, layer) {
            shape.offset[kind as usize] = offset;
            if per_expert {
                shape.per_expert |= 1 << kind as u32;
                offset += config.n_experts;
            } else {
                offset += 1;
            }
        }
        shape.records = offset as usize;
        shape
    }
}

/// [`record_index`] precomputed for one config: a session keeps one so
/// that looking a tensor up on the per-token path is a table read and a
/// multiply, not a walk over the architecture's kinds.
#[derive(Debug, Clone, Copy)]
pub struct Index {
    n_layers: u32,
    n_experts: u32,
    /// Leading layers shaped like `dense` (the rest are shaped like `moe`).
    dense_layers: u32,
    dense: LayerShape,
    moe: LayerShape,
    /// Position after the layers by kind code; ABSENT if not global.
    global_offset: [u32; KIND_CODES],
}

impl Index {
    /// The index of `config`'s directory.
    pub fn new(config: &ModelConfig) -> Self {
        let dense_layers = config.first_dense_layers.min(config.n_layers);
        let mut index = Index {
            n_layers: config.n_layers,
            n_experts: config.n_experts,
            dense_layers,
            dense: LayerShape::new(config, 0),
            moe: LayerShape::new(config, dense_layers.min(config.n_layers.saturating_sub(1))),
            global_offset: [ABSENT; KIND_CODES],
        };
        for (pos, &kind) in global_tensors(config).iter().enumerate() {
            index.global_offset[kind as usize] = pos as u32;
        }
        index
    }

    /// Directory index of the first record of `layer` (`n_layers`: the
    /// first global tensor).
    fn layer_start(&self, layer: u32) -> usize {
        let dense = layer.min(self.dense_layers) as usize;
        let moe = layer.saturating_sub(self.dense_layers) as usize;
        dense * self.dense.records + moe * self.moe.records
    }

    /// Directory index of `id`, or `None` if the architecture has no such tensor.
    pub fn of(&self, id: TensorId) -> Option<usize> {
        let code = id.kind as usize;
        if code >= KIND_CODES {
            return None;
        }
        if id.layer == NONE {
            let pos = self.global_offset[code];
            return (pos != ABSENT && id.expert == NONE)
                .then(|| self.layer_start(self.n_layers) + pos as usize);
        }
        if id.layer >= self.n_layers {
            return None;
        }
        let shape = match id.layer < self.dense_layers {
            true => &self.dense,
            false => &self.moe,
        };
        let offset = shape.offset[code];
        if offset == ABSENT {
            return None;
        }
        let base = self.layer_start(id.layer) + offset as usize;
        match (shape.per_expert & (1 << code) != 0, id.expert) {
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
            kinds: layer_kinds(config, 0),
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
                    if self.layer < self.config.n_layers {
                        self.kinds = layer_kinds(self.config, self.layer);
                    }
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
