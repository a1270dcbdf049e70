//! Experts from storage: which experts a layer computes and in what order,
//! the reads that fill their slots (the layer's own experts in that order,
//! the next layer's predicted ones while this layer computes), one expert's
//! matrices from its slot (CRC-checked when asked), the prediction itself,
//! and collecting every read before a step returns. Must never leave a
//! slot that looks valid after a failed read (the expert cache's rule),
//! never evict an expert the layer still has to compute while another slot
//! will do, and never return with a read in flight.

use super::route::route;
use super::weights::WeightRef;
use super::{add_bias, Session};
use crate::error::Error;
use crate::experts::{checksum_error, ExpertPlace, Held};
use crate::format::tensor::{TensorId, TensorKind, NONE};
use crate::kernels::{scalar, Matrix};
use crate::reader::Outcome;
use crate::storage::{MaybeSync, Storage};

const GROUP: [TensorKind; 3] = [
    TensorKind::ExpertGate,
    TensorKind::ExpertUp,
    TensorKind::ExpertDown,
];

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// Where expert `expert` of `layer` is in the file, and its gate, up
    /// and down tensors' entries.
    fn expert_group(&self, layer: u32, expert: u32) -> (ExpertPlace, [WeightRef; 3]) {
        let refs = GROUP.map(|k| {
            self.table[self
                .index
                .of(TensorId::expert(k, layer, expert))
                .unwrap_or(0)]
        });
        let start = refs[0].offset;
        let end = refs[2].offset
            + refs[2].dtype.row_bytes(refs[2].cols as usize) as u64 * refs[2].rows as u64;
        let place = ExpertPlace {
            key: layer * self.config.n_experts + expert,
            offset: start,
            len: (end - start) as usize,
        };
        (place, refs)
    }

    /// Notes the experts the `n` tokens chose at `layer` (from
    /// `route_expert`), in index order, and settles the reads started
    /// ahead for this layer: the prediction's hits are counted, the reads
    /// of experts it did not choose are cancelled.
    pub(super) fn choose_experts(&mut self, layer: u32, n: usize) {
        let c = self.config;
        let top_k = c.n_experts_per_token as usize;
        let chosen = &self.route_expert[..n * top_k];
        let mut count = 0;
        for expert in 0..c.n_experts {
            if chosen.contains(&expert) {
                self.layer_experts[count] = expert;
                count += 1;
            }
        }
        self.layer_expert_count = count;
        let half = layer as usize % 2;
        if self.predicted_layer[half] != layer {
            return;
        }
        self.predicted_layer[half] = NONE;
        let prefetched = core::mem::take(&mut self.prefetched[half]);
        let (Some(cache), Some(reader)) = (self.cache.as_mut(), self.reader.as_mut()) else {
            return;
        };
        let predicted = &self.predicted[half * top_k..(half + 1) * top_k];
        for (k, &expert) in predicted.iter().enumerate() {
            let used = self.layer_experts[..count].contains(&expert);
            cache.stats.predicted_used += used as u64;
            if prefetched & (1 << k) == 0 {
                continue;
            }
            if used {
                cache.stats.prefetches_used += 1;
                continue;
            }
            cache.stats.prefetches_wasted += 1;
            if let Held::Reading(slot) = cache.find(layer * c.n_experts + expert) {
                reader.cancel(slot);
            }
        }
        // Reads dropped before they started free their slots now.
        reap(cache, reader, self.model.storage(), false);
    }

    /// Starts reading the chosen experts from position `from` on that are in
    /// no slot, in the order they are computed: the one at `from` always
    /// (evicting what it must), the later ones while a slot holding none of
    /// this layer's remaining experts is left, and only where reads overlap
    /// computing (else each is read when its turn comes).
    fn read_ahead(&mut self, layer: u32, from: usize) -> Result<(), Error> {
        let e_count = self.config.n_experts;
        let Some(reader) = self.reader.as_ref() else {
            return Ok(());
        };
        let last = match reader.overlaps() {
            true => self.layer_expert_count,
            false => from + 1,
        };
        for j in from..last {
            let expert = self.layer_experts[j];
            let slot = {
                let (Some(cache), Some(reader)) = (self.cache.as_mut(), self.reader.as_mut())
                else {
                    return Ok(());
                };
                let key = layer * e_count + expert;
                if cache.find(key) != Held::Absent {
                    continue;
                }
                let remaining = &self.layer_experts[from..self.layer_expert_count];
                let still_needed =
                    |k: u32| k / e_count == layer && remaining.contains(&(k % e_count));
                let mut slot = cache.reserve(key, layer, still_needed);
                if slot.is_none() && j == from {
                    // Evict an expert this layer needs later rather than
                    // none, after the cancelled reads let go of their slots.
                    reap(cache, reader, self.model.storage(), true);
                    slot = cache.reserve(key, layer, |k| k == key);
                }
                match slot {
                    Some(slot) => slot,
                    None if j == from => {
                        return Err(Error::BadLimits {
                            reason: "every expert slot is being read",
                        })
                    }
                    None => break,
                }
            };
            let (place, _) = self.expert_group(layer, expert);
            self.start_read(slot, place, true);
        }
        Ok(())
    }

    /// Starts reading the experts predicted for `next` (decoding, while the
    /// layer before it computes) that are in no slot, keeping the slots of
    /// the current layer's experts and of the prediction.
    ///
    /// Only with bandwidth the needed reads leave: when every expert this
    /// layer chose is ready and no read is in flight. Where the device is
    /// what a step waits for, a right guess gains nothing (the read would
    /// have kept the device just as busy later) and a wrong one costs its
    /// bytes and a slot, so the step then reads only what it needs.
    pub(super) fn prefetch_predicted(&mut self, layer: u32, next: u32) {
        let c = self.config;
        let (e_count, top_k) = (c.n_experts, c.n_experts_per_token as usize);
        let half = next as usize % 2;
        let Some(reader) = self.reader.as_ref() else {
            return;
        };
        if !self.prefetch || !reader.overlaps() || self.predicted_layer[half] != next {
            return;
        }
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        let current = &self.layer_experts[..self.layer_expert_count];
        let device_busy = reader.in_flight() > 0
            || current
                .iter()
                .any(|&e| !matches!(cache.find(layer * e_count + e), Held::Ready(_)));
        if device_busy {
            cache.stats.predictions_skipped += top_k as u64;
            return;
        }
        for k in 0..top_k {
            let expert = self.predicted[half * top_k + k];
            let key = next * e_count + expert;
            let Some(cache) = self.cache.as_mut() else {
                return;
            };
            if cache.find(key) != Held::Absent {
                continue;
            }
            let current = &self.layer_experts[..self.layer_expert_count];
            let predicted = &self.predicted[half * top_k..(half + 1) * top_k];
            let keep = |k: u32| {
                let (l, e) = (k / e_count, k % e_count);
                (l == layer && current.contains(&e)) || (l == next && predicted.contains(&e))
            };
            let Some(slot) = cache.reserve(key, layer, keep) else {
                return;
            };
            cache.stats.prefetches += 1;
            self.prefetched[half] |= 1 << k;
            let (place, _) = self.expert_group(next, expert);
            self.start_read(slot, place, false);
        }
    }

    /// Starts the read of `place` into the reserved slot `slot`.
    fn start_read(&mut self, slot: usize, place: ExpertPlace, urgent: bool) {
        let (Some(cache), Some(reader)) = (self.cache.as_mut(), self.reader.as_mut()) else {
            return;
        };
        let dst = cache.slot_ptr(slot);
        // SAFETY: `slot` is reserved (reading): the cache neither serves
        // its bytes nor picks it as a victim until it is published or
        // discarded, which the session does only after collecting this
        // read; the slot holds `slot_bytes >= place.len` bytes of the
        // arena, and the storage lives for 'a. Every read is collected
        // before the step returns (`drain_reads`).
        unsafe {
            reader.start(
                self.model.storage(),
                slot,
                place.offset,
                dst,
                place.len,
                urgent,
            )
        };
        let depth = reader.in_flight();
        let s = &mut cache.stats;
        s.reads_started += 1;
        s.depth_sum += depth as u64;
        s.max_in_flight = s.max_in_flight.max(depth);
    }

    /// The gate, up and down matrices of the `i`-th chosen expert of
    /// `layer`: in place, or from its slot once its read ended (started now
    /// if it had not been), checked against its CRC32s in paranoid mode.
    pub(super) fn expert(&mut self, layer: u32, i: usize) -> Result<[Matrix<'a>; 3], Error> {
        let expert = self.layer_experts[i];
        let (place, refs) = self.expert_group(layer, expert);
        if self.cache.is_none() {
            return Ok(GROUP.map(|k| self.weight(TensorId::expert(k, layer, expert))));
        }
        let slot = loop {
            self.read_ahead(layer, i)?;
            let (Some(cache), Some(reader)) = (self.cache.as_mut(), self.reader.as_mut()) else {
                unreachable!("paged experts have a cache and a reader");
            };
            let slot = match cache.find(place.key) {
                Held::Ready(slot) => {
                    cache.stats.hits += 1;
                    break slot;
                }
                Held::Reading(slot) => slot,
                Held::Absent => unreachable!("read_ahead reserved a slot for it"),
            };
            let (outcome, bytes) = reader.wait(self.model.storage(), slot);
            cache.stats.bytes_read += bytes as u64;
            match outcome {
                Outcome::Read => {}
                Outcome::Failed(e) => {
                    cache.discard(slot);
                    return Err(e.into());
                }
                // Not asked for (only reads of unchosen experts are
                // cancelled); read it again.
                Outcome::Cancelled => {
                    cache.discard(slot);
                    continue;
                }
            }
            if self.verify_experts {
                let bytes = cache.bytes(slot, place.len);
                for (kind, w) in GROUP.iter().zip(&refs) {
                    let at = (w.offset - place.offset) as usize;
                    let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
                    let found = crc32fast::hash(&bytes[at..at + len]);
                    if found != w.crc32 {
                        cache.discard(slot);
                        let id = TensorId::expert(*kind, layer, expert);
                        return Err(checksum_error(id, w.crc32, found));
                    }
                }
            }
            cache.publish(slot);
            cache.stats.misses += 1;
            break slot;
        };
        let cache = self.cache.as_mut().expect("checked above");
        cache.touch(slot);
        let bytes = cache.bytes(slot, place.len);
        // SAFETY: the slot's bytes live in the arena for 'a. The slot is
        // rewritten only after a later `reserve` picks it, which happens
        // only for a later expert of this layer (this one is computed
        // before) or when this one is no longer among the layer's
        // remaining experts (read_ahead and prefetch_predicted keep them).
        let bytes: &'a [u8] = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        Ok(refs.map(|w| {
            let at = (w.offset - place.offset) as usize;
            let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
            Matrix {
                dtype: w.dtype,
                layout: w.layout,
                rows: w.rows as usize,
                cols: w.cols as usize,
                data: &bytes[at..at + len],
            }
        }))
    }

    /// Cancels every read in flight, waits for each and empties its slot:
    /// a step returns with no read running into the arena, and one that
    /// failed midway leaves only the slots it finished.
    pub(super) fn drain_reads(&mut self) {
        let (Some(cache), Some(reader)) = (self.cache.as_mut(), self.reader.as_mut()) else {
            return;
        };
        if reader.in_flight() == 0 {
            return;
        }
        for slot in 0..cache.slots() {
            if cache.is_reading(slot) {
                reader.cancel(slot);
                let (_, bytes) = reader.wait(self.model.storage(), slot);
                cache.stats.bytes_read += bytes as u64;
                cache.discard(slot);
            }
        }
    }

    /// Predicts the experts of `layer` from the hidden state after the
    /// previous layer's attention (that layer's norm and router applied to
    /// it), for `prefetch_predicted`. Decoding only; uses the first rows of
    /// `xn` and `router`, which the next MoE recomputes.
    pub(super) fn predict(&mut self, layer: u32) {
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
        route(
            c,
            &mut self.router[..e_count],
            bias,
            &mut self.predicted[half * top_k..(half + 1) * top_k],
            &mut weights[..top_k],
        );
        self.predicted_layer[half] = layer;
        self.prefetched[half] = 0;
        if let Some(cache) = self.cache.as_mut() {
            cache.stats.predicted += top_k as u64;
        }
    }
}

/// Collects the cancelled reads that ended (every cancelled one with
/// `wait`) and empties their slots.
fn reap<S: Storage>(
    cache: &mut crate::experts::ExpertCache<'_>,
    reader: &mut crate::reader::Reader<'_>,
    storage: &S,
    wait: bool,
) {
    for slot in 0..cache.slots() {
        if !cache.is_reading(slot) || !reader.cancelled(slot) {
            continue;
        }
        let ended = match wait {
            true => Some(reader.wait(storage, slot)),
            false => reader.poll(storage, slot),
        };
        if let Some((_, bytes)) = ended {
            cache.stats.bytes_read += bytes as u64;
            cache.discard(slot);
        }
    }
}
