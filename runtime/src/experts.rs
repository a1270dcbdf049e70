//! The expert cache: only the active experts in memory.
//!
//! When the model's storage is not addressable in place (a file read with
//! `pread`, SPI flash), every expert's gate/up/down group is paged into one
//! of a fixed number of slots carved from the arena. An index maps
//! (layer, expert) to its slot; on a miss the policy picks a victim among
//! the slots not pinned (the expert in use is). A slot is marked empty before it is
//! filled and gets its key only after the read (and, in paranoid mode, the
//! CRC check) succeeded, so a failed read never leaves a half-filled slot
//! that looks valid. This module never allocates.

use crate::error::{Error, Section};
use crate::format::tensor::TensorId;

/// Which cached expert to evict on a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// The least recently used.
    #[default]
    Lru,
    /// The least frequently used, counts halved every `slots` misses so that
    /// old popularity fades.
    FrequencyAging,
}

/// What the cache did since the session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Expert uses served from a slot.
    pub hits: u64,
    /// Expert uses that read the expert from storage.
    pub misses: u64,
    /// Bytes read from storage into slots.
    pub bytes_read: u64,
    /// Experts predicted for the next layer by applying its router to the
    /// hidden state after this layer's attention.
    pub predicted: u64,
    /// Predicted experts that the next layer then chose.
    pub predicted_used: u64,
    /// Predicted experts not in a slot, whose reading was started ahead of
    /// use ([`Storage::prefetch`](crate::Storage::prefetch)).
    pub prefetch_hints: u64,
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

/// Fixed slots and their bookkeeping, all carved from the arena.
pub(crate) struct ExpertCache<'a> {
    slot_bytes: usize,
    data: &'a mut [u8],
    /// Key (layer × experts + expert) held by each slot, or EMPTY.
    key: &'a mut [u32],
    /// Last use (LRU) per slot.
    stamp: &'a mut [u64],
    /// Uses (frequency policy) per slot.
    freq: &'a mut [u32],
    /// Step in which the slot was last pinned.
    pinned_in: &'a mut [u64],
    /// Slot of each key, or EMPTY.
    index: &'a mut [u32],
    policy: EvictionPolicy,
    clock: u64,
    step: u64,
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
    /// A cache over `slots` slots of `slot_bytes` for `keys` experts in all.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        slot_bytes: usize,
        data: &'a mut [u8],
        key: &'a mut [u32],
        stamp: &'a mut [u64],
        freq: &'a mut [u32],
        pinned_in: &'a mut [u64],
        index: &'a mut [u32],
        policy: EvictionPolicy,
    ) -> Self {
        key.fill(EMPTY);
        index.fill(EMPTY);
        ExpertCache {
            slot_bytes,
            data,
            key,
            stamp,
            freq,
            pinned_in,
            index,
            policy,
            clock: 0,
            step: 1,
            misses_since_aging: 0,
            stats: CacheStats::default(),
        }
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.key.len()
    }

    /// Unpins every slot: the next `get` may evict any but its own.
    pub(crate) fn next_step(&mut self) {
        self.step += 1;
    }

    /// The slot holding `key`, if cached.
    pub(crate) fn lookup(&self, key: u32) -> Option<usize> {
        match self.index[key as usize] {
            EMPTY => None,
            s => Some(s as usize),
        }
    }

    fn victim(&self) -> Option<usize> {
        let free = (0..self.slots()).find(|&s| self.key[s] == EMPTY);
        free.or_else(|| {
            let candidates = (0..self.slots()).filter(|&s| self.pinned_in[s] != self.step);
            match self.policy {
                EvictionPolicy::Lru => candidates.min_by_key(|&s| self.stamp[s]),
                EvictionPolicy::FrequencyAging => {
                    candidates.min_by_key(|&s| (self.freq[s], self.stamp[s]))
                }
            }
        })
    }

    fn touch(&mut self, slot: usize) {
        self.clock += 1;
        self.stamp[slot] = self.clock;
        self.freq[slot] = self.freq[slot].saturating_add(1);
        self.pinned_in[slot] = self.step;
    }

    /// The bytes of `place`'s expert, pinned until the next `next_step`:
    /// from its slot, or read with `read(offset, dst)` into a victim slot. `check` validates freshly
    /// read bytes (CRCs in paranoid mode).
    pub(crate) fn get(
        &mut self,
        read: impl FnOnce(u64, &mut [u8]) -> Result<(), Error>,
        place: ExpertPlace,
        check: impl Fn(&[u8]) -> Result<(), Error>,
    ) -> Result<&[u8], Error> {
        let slot = match self.lookup(place.key) {
            Some(slot) => {
                self.stats.hits += 1;
                slot
            }
            None => {
                let slot = self.victim().ok_or(Error::BadLimits {
                    reason: "every expert slot is pinned",
                })?;
                // Forget the old occupant before touching the bytes.
                if self.key[slot] != EMPTY {
                    self.index[self.key[slot] as usize] = EMPTY;
                    self.key[slot] = EMPTY;
                }
                let dst = &mut self.data[slot * self.slot_bytes..][..place.len];
                read(place.offset, dst)?;
                check(dst)?;
                self.key[slot] = place.key;
                self.index[place.key as usize] = slot as u32;
                self.freq[slot] = 0;
                self.stats.bytes_read += place.len as u64;
                self.stats.misses += 1;
                self.misses_since_aging += 1;
                if self.policy == EvictionPolicy::FrequencyAging
                    && self.misses_since_aging >= self.slots()
                {
                    self.freq.iter_mut().for_each(|f| *f /= 2);
                    self.misses_since_aging = 0;
                }
                slot
            }
        };
        self.touch(slot);
        Ok(&self.data[slot * self.slot_bytes..][..place.len])
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
    use crate::storage::{SliceStorage, Storage};

    struct Bufs {
        data: [u8; 3 * 8],
        key: [u32; 3],
        stamp: [u64; 3],
        freq: [u32; 3],
        pinned: [u64; 3],
        index: [u32; 10],
    }

    fn bufs() -> Bufs {
        Bufs {
            data: [0; 24],
            key: [0; 3],
            stamp: [0; 3],
            freq: [0; 3],
            pinned: [0; 3],
            index: [0; 10],
        }
    }

    fn place(key: u32) -> ExpertPlace {
        ExpertPlace {
            key,
            offset: key as u64 * 8,
            len: 8,
        }
    }

    #[test]
    fn lru_evicts_the_least_recent_and_counts() {
        let file: [u8; 80] = core::array::from_fn(|i| i as u8);
        let storage = SliceStorage::new(&file);
        let mut b = bufs();
        let mut c = ExpertCache::new(
            8,
            &mut b.data,
            &mut b.key,
            &mut b.stamp,
            &mut b.freq,
            &mut b.pinned,
            &mut b.index,
            EvictionPolicy::Lru,
        );
        for k in [0, 1, 2] {
            c.next_step();
            assert_eq!(
                c.get(|o, d| Ok(storage.read_at(o, d)?), place(k), |_| Ok(()))
                    .unwrap()[0],
                k as u8 * 8
            );
        }
        c.next_step();
        c.get(|o, d| Ok(storage.read_at(o, d)?), place(0), |_| Ok(()))
            .unwrap(); // hit: 1 is now the oldest
        c.next_step();
        c.get(|o, d| Ok(storage.read_at(o, d)?), place(3), |_| Ok(()))
            .unwrap();
        assert_eq!(c.lookup(1), None);
        assert!(c.lookup(0).is_some() && c.lookup(2).is_some() && c.lookup(3).is_some());
        assert_eq!(
            (c.stats.hits, c.stats.misses, c.stats.bytes_read),
            (1, 4, 32)
        );
    }

    #[test]
    fn a_failed_read_leaves_no_valid_slot_and_pinned_slots_survive() {
        let file = [7u8; 40];
        let storage = SliceStorage::new(&file);
        let mut b = bufs();
        let mut c = ExpertCache::new(
            8,
            &mut b.data,
            &mut b.key,
            &mut b.stamp,
            &mut b.freq,
            &mut b.pinned,
            &mut b.index,
            EvictionPolicy::FrequencyAging,
        );
        for k in [0, 1, 2] {
            c.get(|o, d| Ok(storage.read_at(o, d)?), place(k), |_| Ok(()))
                .unwrap();
        }
        // All three are pinned by this step: nothing can be evicted.
        assert!(c
            .get(|o, d| Ok(storage.read_at(o, d)?), place(3), |_| Ok(()))
            .is_err());
        c.next_step();
        // Key 9 lies past the end of the storage: the read fails.
        assert!(c
            .get(|o, d| Ok(storage.read_at(o, d)?), place(9), |_| Ok(()))
            .is_err());
        assert_eq!(c.lookup(9), None);
        // A check failure is reported and the slot stays empty too.
        let bad = c.get(
            |o, d| Ok(storage.read_at(o, d)?),
            place(4),
            |_| Err(Error::EmptyPrompt),
        );
        assert_eq!(bad.err(), Some(Error::EmptyPrompt));
        assert_eq!(c.lookup(4), None);
    }
}
