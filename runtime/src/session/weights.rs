//! Where each tensor's bytes are, resolved once at session start: in
//! place in addressable storage, copied into the resident region, paged
//! into expert slots, or read a row at a time (an untied embedding table).
//! Lookups during a step are index arithmetic over this table; it never
//! reads the file's directory again.

use super::Session;
use crate::error::Error;
use crate::format::tensor::{DType, Layout, TensorId, TensorKind};
use crate::kernels::Matrix;
use crate::model::Model;
use crate::plan::TABLE_ENTRY_BYTES;
use crate::quant::dequantize_row;
use crate::storage::{MaybeSync, Storage};

/// Where a resolved tensor's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// In `Session::weights` at `offset`.
    Resident,
    /// In an expert slot; `offset` is the file offset.
    Paged,
    /// Read a row at a time from storage; `offset` is the file offset.
    OnDemand,
}

/// A tensor resolved once at session start: where its bytes are and their shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct WeightRef {
    pub(super) offset: u64,
    pub(super) rows: u32,
    pub(super) cols: u32,
    pub(super) dtype: DType,
    pub(super) layout: Layout,
    pub(super) crc32: u32,
    pub(super) place: Place,
}

impl WeightRef {
    pub(super) const EMPTY: WeightRef = WeightRef {
        offset: 0,
        rows: 0,
        cols: 0,
        dtype: DType::F32,
        layout: Layout::Planar,
        crc32: 0,
        place: Place::Resident,
    };
}

// The plan sizes the table without knowing this type.
const _: () = assert!(core::mem::size_of::<WeightRef>() == TABLE_ENTRY_BYTES);

/// Fills `table` with where each of `model`'s tensors is: in place (the
/// storage is addressable and the plan uses it so), else copied into
/// `resident`, paged (experts) or read by rows (an untied embedding table).
pub(super) fn resolve<S: Storage + MaybeSync>(
    model: &Model<S>,
    table: &mut [WeightRef],
    in_place: bool,
    resident: &mut [u8],
) -> Result<(), Error> {
    let config = model.config();
    let mut cursor = 0usize;
    for (i, slot) in table.iter_mut().enumerate() {
        let rec = model.record(i)?;
        let mut w = WeightRef {
            offset: rec.offset,
            rows: rec.rows,
            cols: rec.cols,
            dtype: rec.dtype,
            layout: rec.layout,
            crc32: rec.crc32,
            place: Place::Resident,
        };
        if !in_place {
            if rec.id.kind.is_expert() {
                w.place = Place::Paged;
            } else if rec.id.kind == TensorKind::TokenEmbedding && !config.tied_embeddings {
                w.place = Place::OnDemand;
            } else {
                let len = rec.length as usize;
                let end = cursor + len;
                if end > resident.len() {
                    return Err(Error::BadLimits {
                        reason: "resident weights exceed the plan",
                    });
                }
                model
                    .storage()
                    .read_at(rec.offset, &mut resident[cursor..end])?;
                w.offset = cursor as u64;
                cursor = crate::format::align_up(end as u64, crate::format::TENSOR_ALIGN) as usize;
            }
        }
        *slot = w;
    }
    Ok(())
}

impl<'a, S: Storage + MaybeSync> Session<'a, S> {
    pub(super) fn weight(&self, id: TensorId) -> Matrix<'a> {
        // Every id the forward pass asks for exists: Model::open checked the
        // directory against the architecture, and the table mirrors it.
        let index = self.index.of(id).unwrap_or(0);
        let w = self.table[index];
        let len = w.dtype.row_bytes(w.cols as usize) * w.rows as usize;
        let weights: &'a [u8] = self.weights;
        Matrix {
            dtype: w.dtype,
            layout: w.layout,
            rows: w.rows as usize,
            cols: w.cols as usize,
            data: &weights[w.offset as usize..w.offset as usize + len],
        }
    }

    /// The bytes of tensor `id` if the model has it.
    pub(super) fn optional(&self, id: TensorId) -> Option<&'a [u8]> {
        self.index.of(id).map(|_| self.weight(id).data)
    }

    /// Dequantizes `token`'s embedding row into row `t` of `x`, reading it
    /// from storage when the table is not resident.
    pub(super) fn embed(&mut self, t: usize, token: u32) -> Result<(), Error> {
        let h = self.config.hidden_size as usize;
        let index = self
            .index
            .of(TensorId::global(TensorKind::TokenEmbedding))
            .unwrap_or(0);
        let w = self.table[index];
        let row_bytes = w.dtype.row_bytes(w.cols as usize);
        let row: &[u8] = if w.place == Place::OnDemand {
            let offset = w.offset + token as u64 * row_bytes as u64;
            self.model
                .storage()
                .read_at(offset, &mut self.embedding_row[..row_bytes])?;
            &self.embedding_row[..row_bytes]
        } else {
            let start = w.offset as usize + token as usize * row_bytes;
            &self.weights[start..start + row_bytes]
        };
        let out = &mut self.x[t * h..(t + 1) * h];
        dequantize_row(w.dtype, row, out);
        if self.config.embedding_multiplier != 1.0 {
            out.iter_mut()
                .for_each(|x| *x *= self.config.embedding_multiplier);
        }
        Ok(())
    }
}
