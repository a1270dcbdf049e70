//! Experts from storage: the matrices of one expert from its slot (paged
//! in on a miss, checked against its CRC32s when asked), the prediction of
//! the next layer's experts and its read-ahead hint, and reads split
//! across the session's threads. Must never leave a slot that looks valid
//! after a failed read (the expert cache's rule).

use super::route::route;
use super::{add_bias, Session};
use crate::error::Error;
use crate::experts::{checksum_error, ExpertPlace};
use crate::format::tensor::{TensorId, TensorKind};
use crate::kernels::{scalar, Matrix};
use crate::parallel::Parallel;
#[cfg(feature = "std")]
use crate::parallel::SharedMut;
use crate::storage::{MaybeSync, Storage};

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    /// One expert's gate, up and down matrices: in place, or from its slot
    /// (paged in on a miss). The slot stays pinned for this step.
    pub(super) fn expert(&mut self, layer: u32, expert: u32) -> Result<[Matrix<'a>; 3], Error> {
        let ids = [
            TensorKind::ExpertGate,
            TensorKind::ExpertUp,
            TensorKind::ExpertDown,
        ]
        .map(|k| TensorId::expert(k, layer, expert));
        let Some(cache) = self.cache.as_mut() else {
            return Ok(ids.map(|id| self.weight(id)));
        };
        let refs = ids.map(|id| self.table[self.index.of(id).unwrap_or(0)]);
        let start = refs[0].offset;
        let end = refs[2].offset
            + refs[2].dtype.row_bytes(refs[2].cols as usize) as u64 * refs[2].rows as u64;
        let place = ExpertPlace {
            key: layer * self.config.n_experts + expert,
            offset: start,
            len: (end - start) as usize,
        };
        let verify = self.verify_experts;
        // Only the expert in use is pinned: experts are computed one at a
        // time, so a batch may route to more experts than there are slots.
        cache.next_step();
        let (storage, par) = (self.model.storage(), &self.par);
        let read = |offset: u64, dst: &mut [u8]| read_parallel(par, storage, offset, dst);
        let bytes = cache.get(read, place, |bytes| {
            if verify {
                for (id, w) in ids.iter().zip(&refs) {
                    let at = (w.offset - start) as usize;
                    let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
                    let found = crc32fast::hash(&bytes[at..at + len]);
                    if found != w.crc32 {
                        return Err(checksum_error(*id, w.crc32, found));
                    }
                }
            }
            Ok(())
        })?;
        // SAFETY: the slot's bytes live in the arena for 'a. The slot is
        // pinned for this step and is only rewritten by a later `get` of a
        // different expert, which the forward pass makes only after it has
        // finished with these matrices (experts are computed one at a time).
        let bytes: &'a [u8] = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        Ok(refs.map(|w| {
            let at = (w.offset - start) as usize;
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

    /// Predicts the experts of `layer` from the hidden state after the
    /// previous layer's attention (that layer's norm and router applied to
    /// it), and starts reading those not cached. Decoding only; uses the
    /// first rows of `xn` and `router`, which the next MoE recomputes.
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
        let predicted = &mut self.predicted[half * top_k..(half + 1) * top_k];
        route(
            c,
            &mut self.router[..e_count],
            bias,
            predicted,
            &mut weights[..top_k],
        );
        self.predicted_layer[half] = layer;
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        cache.stats.predicted += top_k as u64;
        for &expert in self.predicted[half * top_k..(half + 1) * top_k].iter() {
            if cache.lookup(layer * c.n_experts + expert).is_some() {
                continue;
            }
            let first = TensorId::expert(TensorKind::ExpertGate, layer, expert);
            let last = TensorId::expert(TensorKind::ExpertDown, layer, expert);
            let (a, b) = (
                self.table[self.index.of(first).unwrap_or(0)],
                self.table[self.index.of(last).unwrap_or(0)],
            );
            let end = b.offset + b.dtype.row_bytes(b.cols as usize) as u64 * b.rows as u64;
            self.model.storage().prefetch(a.offset, end - a.offset);
            cache.stats.prefetch_hints += 1;
        }
    }
}

/// Reads `dst` from `offset`, split across the session's threads when it
/// is large (paging in an expert is a copy the cores can share).
fn read_parallel<S: Storage + MaybeSync>(
    par: &Parallel,
    storage: &S,
    offset: u64,
    dst: &mut [u8],
) -> Result<(), Error> {
    const MIN_SPLIT: usize = 256 * 1024;
    let parts = par.threads();
    if parts == 1 || dst.len() < MIN_SPLIT {
        return Ok(storage.read_at(offset, dst)?);
    }
    #[cfg(feature = "std")]
    {
        let len = dst.len();
        let base = SharedMut(dst.as_mut_ptr());
        let failed = core::sync::atomic::AtomicU32::new(0);
        par.for_each(parts, &|part| {
            let range = (len * part / parts)..(len * (part + 1) / parts);
            // SAFETY: the parts' ranges are disjoint and inside `dst`, which
            // nothing else touches until `for_each` returns.
            let piece = unsafe {
                core::slice::from_raw_parts_mut(base.get().add(range.start), range.len())
            };
            if storage.read_at(offset + range.start as u64, piece).is_err() {
                failed.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        });
        if failed.load(core::sync::atomic::Ordering::Relaxed) > 0 {
            // Read again on this thread to report the storage's own error.
            return Ok(storage.read_at(offset, dst)?);
        }
        Ok(())
    }
    #[cfg(not(feature = "std"))]
    Ok(storage.read_at(offset, dst)?)
}
