//! The expert cache: only the active experts in memory.
//!
//! When the model's storage is not addressable in place (a file read with
//! `pread`, SPI flash), every expert's gate/up/down group is paged into one
//! of a fixed number of slots carved from the arena. An index maps
//! (layer, expert) to its slot. A slot is reserved for a key before its
//! read starts and is *reading* until the session publishes it (the read,
//! and in paranoid mode the CRC check, succeeded) or discards it (the read
//! failed or was cancelled): a reading slot is never a victim and never
//! served as a hit, so neither a read in flight nor a failed one leaves a
//! slot that looks valid. On a miss the policy picks a victim among the
//! slots the caller does not keep (the experts of the current layer still
//! to compute, the next layer's predicted ones). This module never
//! allocates and never reads storage (the session's reader does).

use crate::error::{Error, Section};
use crate::format::tensor::TensorId;

/// Which cached expert to evict on a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// The least recently used.
    Lru,
    /// The least frequently used, counts halved every `slots` misses so that
    /// old popularity fades.
    FrequencyAging,
    /// The expert whose layer comes back last in the layer cycle (Belady's
    /// rule when every token walks the layers in order and the router's
    /// choices are not known further ahead): the experts of the layer just
    /// computed go first; within a layer the least frequently used, then
    /// the least recently used. LRU evicts, in the cyclic pattern, each
    /// expert just before its reuse.
    #[default]
    LayerCycle,
}

/// What the cache and its reader did since the session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Expert uses served from a slot that held the expert already.
    pub hits: u64,
    /// Expert uses that had to wait for a read (started on demand or ahead).
    pub misses: u64,
    /// Bytes read from storage into slots: every read the reader made,
    /// prefetches that were not used and cancelled reads' parts included.
    pub bytes_read: u64,
    /// Experts predicted for the next layer by applying its router to the
    /// hidden state after this layer's attention.
    pub predicted: u64,
    /// Predicted experts that the next layer then chose.
    pub predicted_used: u64,
    /// Reads started ahead of use for predicted experts not in a slot.
    pub prefetches: u64,
    /// Prefetches whose expert the layer then chose.
    pub prefetches_used: u64,
    /// Prefetches of experts the layer did not choose (cancelled, or read
    /// and kept as cached experts).
    pub prefetches_wasted: u64,
    /// Predicted experts not read ahead because the layer before them had
    /// reads of its own (or reads were in flight): the device was busy.
    pub predictions_skipped: u64,
    /// Nanoseconds the session waited for reads (std builds; 0 without a
    /// clock).
    pub blocked_ns: u64,
    /// Reads in flight as each read started (itself included), summed: over
    /// `reads_started`, the mean queue depth.
    pub depth_sum: u64,
    /// Reads started.
    pub reads_started: u64,
    /// Most reads in flight at once.
    pub max_in_flight: u32,
}

impl CacheStats {
    /// Hits over uses (1 when nothing was used yet).
    pub fn hit_rate(&self) -> f64 {
        let uses = self.hits + self.misses;
        if uses == 0 {
            1.0
        } else {
            self.hits as f64 / uses as f64
        }
    }
}

const EMPTY: u32 = u32::MAX;

/// Where a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// In this slot, ready to use.
    Ready(usize),
    /// Being read into this slot.
    Reading(usize),
    /// Nowhere.
    Absent,
}

/// The arena buffers of an [`ExpertCache`] of `slots` slots.
pub(crate) struct CacheBuffers<'a> {
    /// `slots × slot_bytes` bytes of expert groups.
    pub data: &'a mut [u8],
    /// Key held by each slot.
    pub key: &'a mut [u32],
    /// Last use (LRU) per slot.
    pub stamp: &'a mut [u64],
    /// Uses (frequency) per slot.
    pub freq: &'a mut [u32],
    /// Whether each slot is being read.
    pub reading: &'a mut [bool],
    /// Slot of each key (layers × experts), or EMPTY.
    pub index: &'a mut [u32],
}

/// Fixed slots and their bookkeeping, all carved from the arena.
pub(crate) struct ExpertCache<'a> {
    slot_bytes: usize,
    b: CacheBuffers<'a>,
    policy: EvictionPolicy,
    /// Experts per layer and layers, for the cycle policy.
    experts: u32,
    layers: u32,
    clock: u64,
    misses_since_aging: usize,
    pub(crate) stats: CacheStats,
}

/// Where one expert's bytes are in the file, and how to check them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpertPlace {
    /// Cache key.
    pub key: u32,
    /// First byte of the group in the file.
    pub offset: u64,
    /// Bytes of the group.
    pub len: usize,
}

impl<'a> ExpertCache<'a> {
    /// A cache of slots `slot_bytes` apart in `b.data`, for `layers ×
    /// experts` keys.
    pub(crate) fn new(
        slot_bytes: usize,
        b: CacheBuffers<'a>,
        policy: EvictionPolicy,
        layers: u32,
        experts: u32,
    ) -> Self {
        b.key.fill(EMPTY);
        b.index.fill(EMPTY);
        b.reading.fill(false);
        ExpertCache {
            slot_bytes,
            b,
            policy,
            experts,
            layers,
            clock: 0,
            misses_since_aging: 0,
            stats: CacheStats::default(),
        }
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.b.key.len()
    }

    /// Where `key` is.
    pub(crate) fn find(&self, key: u32) -> Held {
        match self.b.index[key as usize] {
            EMPTY => Held::Absent,
            s if self.b.reading[s as usize] => Held::Reading(s as usize),
            s => Held::Ready(s as usize),
        }
    }

    /// True while slot `slot` is being read.
    pub(crate) fn is_reading(&self, slot: usize) -> bool {
        self.b.reading[slot]
    }

    /// The slot to read `key` into, now marked reading for it: a free one,
    /// else the policy's victim among the slots that are not reading and
    /// whose key `keep` does not ask to keep (`None`: there is none).
    /// `layer` is the layer the session computes.
    pub(crate) fn reserve(
        &mut self,
        key: u32,
        layer: u32,
        keep: impl Fn(u32) -> bool,
    ) -> Option<usize> {
        let free = (0..self.slots()).find(|&s| self.b.key[s] == EMPTY);
        let slot = free.or_else(|| {
            let b = &self.b;
            let candidates = (0..self.slots()).filter(|&s| !b.reading[s] && !keep(b.key[s]));
            match self.policy {
                EvictionPolicy::Lru => candidates.min_by_key(|&s| b.stamp[s]),
                EvictionPolicy::FrequencyAging => {
                    candidates.min_by_key(|&s| (b.freq[s], b.stamp[s]))
                }
                EvictionPolicy::LayerCycle => {
                    let (layers, experts) = (self.layers, self.experts);
                    // Layers until the slot's layer comes again (the one
                    // computed now: a whole cycle).
                    let wait = |s: usize| {
                        let l = b.key[s] / experts;
                        (l + layers - layer - 1) % layers
                    };
                    candidates.min_by_key(|&s| (layers - wait(s), b.freq[s], b.stamp[s]))
                }
            }
        })?;
        // Forget the old occupant before its bytes are overwritten.
        if self.b.key[slot] != EMPTY {
            self.b.index[self.b.key[slot] as usize] = EMPTY;
        }
        self.b.key[slot] = key;
        self.b.index[key as usize] = slot as u32;
        self.b.reading[slot] = true;
        Some(slot)
    }

    /// Where slot `slot`'s bytes start (a reader writes `len` of them).
    pub(crate) fn slot_ptr(&mut self, slot: usize) -> *mut u8 {
        self.b.data[slot * self.slot_bytes..].as_mut_ptr()
    }

    /// The first `len` bytes of slot `slot`.
    pub(crate) fn bytes(&self, slot: usize, len: usize) -> &[u8] {
        &self.b.data[slot * self.slot_bytes..][..len]
    }

    /// Its read succeeded (and was checked): the slot serves its key.
    pub(crate) fn publish(&mut self, slot: usize) {
        self.b.reading[slot] = false;
        self.b.freq[slot] = 0;
        self.b.stamp[slot] = self.clock;
        self.misses_since_aging += 1;
        if self.policy == EvictionPolicy::FrequencyAging && self.misses_since_aging >= self.slots()
        {
            self.b.freq.iter_mut().for_each(|f| *f /= 2);
            self.misses_since_aging = 0;
        }
    }

    /// Its read failed or was cancelled: the slot holds nothing.
    pub(crate) fn discard(&mut self, slot: usize) {
        let key = self.b.key[slot];
        if key != EMPTY {
            self.b.index[key as usize] = EMPTY;
        }
        self.b.key[slot] = EMPTY;
        self.b.reading[slot] = false;
    }

    /// Counts a use of the ready slot `slot`.
    pub(crate) fn touch(&mut self, slot: usize) {
        self.clock += 1;
        self.b.stamp[slot] = self.clock;
        self.b.freq[slot] = self.b.freq[slot].saturating_add(1);
    }
}

/// The checksum error for an expert tensor whose paged-in bytes are corrupt.
pub(crate) fn checksum_error(tensor: TensorId, expected: u32, found: u32) -> Error {
    Error::Checksum {
        section: Section::Tensor(tensor),
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bufs {
        data: [u8; 3 * 8],
        key: [u32; 3],
        stamp: [u64; 3],
        freq: [u32; 3],
        reading: [bool; 3],
        index: [u32; 12],
    }

    impl Bufs {
        fn new() -> Self {
            Bufs {
                data: [0; 24],
                key: [0; 3],
                stamp: [0; 3],
                freq: [0; 3],
                reading: [false; 3],
                index: [0; 12],
            }
        }

        /// A cache of 3 slots over 3 layers of 4 experts.
        fn cache(&mut self, policy: EvictionPolicy) -> ExpertCache<'_> {
            let b = CacheBuffers {
                data: &mut self.data,
                key: &mut self.key,
                stamp: &mut self.stamp,
                freq: &mut self.freq,
                reading: &mut self.reading,
                index: &mut self.index,
            };
            ExpertCache::new(8, b, policy, 3, 4)
        }
    }

    /// Reserves, fills and uses `key` as layer `key / 4` computing.
    fn load(c: &mut ExpertCache<'_>, key: u32) -> usize {
        let slot = match c.find(key) {
            Held::Ready(s) => s,
            _ => {
                let s = c.reserve(key, key / 4, |k| k == key).unwrap();
                // SAFETY: the slot's 8 bytes are inside the test's buffer.
                unsafe { c.slot_ptr(s).write(key as u8) };
                c.publish(s);
                s
            }
        };
        c.touch(slot);
        slot
    }

    #[test]
    fn lru_evicts_the_least_recent() {
        let mut b = Bufs::new();
        let mut c = b.cache(EvictionPolicy::Lru);
        for k in [0, 1, 2, 0, 3] {
            load(&mut c, k);
        }
        // 1 was the oldest when 3 came.
        assert_eq!(c.find(1), Held::Absent);
        for k in [0, 2, 3] {
            let Held::Ready(s) = c.find(k) else {
                panic!("{k} not ready")
            };
            assert_eq!(c.bytes(s, 1)[0], k as u8);
        }
    }

    #[test]
    fn the_layer_cycle_evicts_what_comes_back_last() {
        let mut b = Bufs::new();
        let mut c = b.cache(EvictionPolicy::LayerCycle);
        // Layers 0, 1, 2 each use one expert; then layer 0 needs another:
        // its old expert comes back a whole cycle later, so it goes.
        for k in [0, 4, 8] {
            load(&mut c, k);
        }
        load(&mut c, 1);
        assert_eq!(c.find(0), Held::Absent);
        // Layer 2 needs another: its own (key 8) goes, not layer 1's (key
        // 4, the least recent: LRU's victim, needed again sooner).
        let s = c.reserve(9, 2, |k| k == 9).unwrap();
        c.publish(s);
        assert_eq!(c.find(8), Held::Absent);
        assert!(matches!(c.find(4), Held::Ready(_)));
        assert!(matches!(c.find(1), Held::Ready(_)));
    }

    #[test]
    fn reading_and_kept_slots_are_never_victims_and_never_served() {
        let mut b = Bufs::new();
        let mut c = b.cache(EvictionPolicy::FrequencyAging);
        let s0 = c.reserve(0, 0, |_| false).unwrap();
        assert_eq!(c.find(0), Held::Reading(s0));
        load(&mut c, 1);
        load(&mut c, 2);
        // Slot of 0 is reading, 1 is kept: only 2 can go.
        let s = c.reserve(3, 0, |k| k == 1).unwrap();
        assert_eq!(c.find(2), Held::Absent);
        assert_eq!(c.find(3), Held::Reading(s));
        // Everything reading or kept: no victim.
        assert_eq!(c.reserve(4, 0, |k| k == 1), None);
        // A failed read leaves nothing behind.
        c.discard(s0);
        assert_eq!(c.find(0), Held::Absent);
        assert!((0..3).all(|slot| c.is_reading(slot) == (slot == s)));
    }
}
