//! An opened `.mote` file: its preamble, config and tensor directory, every
//! range checked against the file before anything reads through it.
//!
//! The directory of a valid file holds exactly the tensors the architecture
//! needs, sorted by `(layer, kind, expert)`; so a tensor's record index is
//! computed, not searched ([`layout`]).

pub mod layout;

use crate::error::{Error, Section};
use crate::format::config::{expected_shape, ModelConfig, FORMAT3_TAIL};
use crate::format::tensor::{DType, Layout, TensorId, TensorRecord, RECORD_BYTES};
use crate::format::{
    Preamble, EXPERT_ALIGN, MAGIC, MAX_CONFIG_BYTES, PREAMBLE_BYTES, TENSOR_ALIGN,
};
use crate::storage::Storage;
use crate::tokenizer::Tokenizer;

/// A model file opened on some storage. Holds no heap memory.
#[derive(Debug)]
pub struct Model<S: Storage> {
    storage: S,
    preamble: Preamble,
    config: ModelConfig,
}

fn check_section(section: Section, offset: u64, len: u64, file_len: u64) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::Truncated {
            section,
            offset,
            len,
            file_len,
        }),
    }
}

/// Records read per storage call while scanning the directory.
const RECORDS_PER_READ: usize = 16;

impl<S: Storage> Model<S> {
    /// Opens a model: checks the preamble, the config's CRC and contents, the
    /// directory's CRC and every record (type, shape against the config,
    /// range inside the data region, expert grouping). Tensor data CRCs are
    /// checked by [`Model::verify_checksums`].
    pub fn open(storage: S) -> Result<Self, Error> {
        let file_len = storage.len();
        // A short file that is not a .mote file at all says so.
        if file_len < PREAMBLE_BYTES as u64 && file_len >= MAGIC.len() as u64 {
            let mut magic = [0u8; 8];
            storage.read_at(0, &mut magic)?;
            if magic != MAGIC {
                return Err(Error::BadMagic { found: magic });
            }
        }
        check_section(Section::Preamble, 0, PREAMBLE_BYTES as u64, file_len)?;
        let mut pre = [0u8; PREAMBLE_BYTES];
        storage.read_at(0, &mut pre)?;
        let preamble = Preamble::decode(&pre)?;

        // Config.
        let config_len = preamble.config_len as usize;
        if config_len == 0 || config_len > MAX_CONFIG_BYTES {
            return Err(Error::BadPreamble {
                reason: "config length is not in 1..=4096",
            });
        }
        check_section(
            Section::Config,
            preamble.config_offset,
            config_len as u64,
            file_len,
        )?;
        let mut buf = [0u8; MAX_CONFIG_BYTES + FORMAT3_TAIL.len()];
        storage.read_at(preamble.config_offset, &mut buf[..config_len])?;
        let found = crc32fast::hash(&buf[..config_len]);
        if found != preamble.config_crc {
            return Err(Error::Checksum {
                section: Section::Config,
                expected: preamble.config_crc,
                found,
            });
        }
        // A format-3 config ends before the fields format 4 appended.
        let mut len = config_len;
        if preamble.version == 3 {
            buf[len..len + FORMAT3_TAIL.len()].copy_from_slice(&FORMAT3_TAIL);
            len += FORMAT3_TAIL.len();
        }
        let config = ModelConfig::decode(&buf[..len])?;

        // Directory: CRC first (a corrupted record is reported as corruption),
        // then each record against the layout the config implies.
        let count = preamble.tensor_count as u64;
        if count != layout::tensor_count(&config) as u64 {
            return Err(Error::BadPreamble {
                reason: "tensor count does not match the architecture",
            });
        }
        let dir_len = count * RECORD_BYTES as u64;
        if preamble.directory_offset % TENSOR_ALIGN != 0 {
            return Err(Error::BadPreamble {
                reason: "directory offset is not 64-byte aligned",
            });
        }
        check_section(
            Section::Directory,
            preamble.directory_offset,
            dir_len,
            file_len,
        )?;
        // Data region (after the directory: a file cut inside the
        // directory is reported as such).
        if preamble.data_offset % EXPERT_ALIGN != 0 {
            return Err(Error::BadPreamble {
                reason: "data offset is not 4096-byte aligned",
            });
        }
        check_section(
            Section::Data,
            preamble.data_offset,
            preamble.data_len,
            file_len,
        )?;
        if preamble.tokenizer_len != 0 {
            if preamble.tokenizer_len > u64::from(u32::MAX) {
                return Err(Error::BadPreamble {
                    reason: "tokenizer section is larger than 4 GiB",
                });
            }
            check_section(
                Section::Tokenizer,
                preamble.tokenizer_offset,
                preamble.tokenizer_len,
                file_len,
            )?;
        }
        let model = Model {
            storage,
            preamble,
            config,
        };
        let mut hasher = crc32fast::Hasher::new();
        model.for_each_record(|_, bytes| {
            hasher.update(bytes);
            Ok(())
        })?;
        let found = hasher.finalize();
        if found != preamble.directory_crc {
            return Err(Error::Checksum {
                section: Section::Directory,
                expected: preamble.directory_crc,
                found,
            });
        }
        let mut expected = layout::TensorIds::new(&model.config);
        model.for_each_record(|index, bytes| {
            let mut b = [0u8; RECORD_BYTES];
            b.copy_from_slice(bytes);
            let rec = TensorRecord::decode(&b)
                .map_err(|reason| Error::BadTensorRecord { index, reason })?;
            model.check_record(index, &rec, expected.next())
        })?;
        model.check_expert_groups()?;
        Ok(model)
    }

    fn for_each_record(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let count = self.preamble.tensor_count as usize;
        let mut buf = [0u8; RECORD_BYTES * RECORDS_PER_READ];
        let mut index = 0usize;
        while index < count {
            let n = (count - index).min(RECORDS_PER_READ);
            let bytes = &mut buf[..n * RECORD_BYTES];
            self.storage.read_at(
                self.preamble.directory_offset + (index * RECORD_BYTES) as u64,
                bytes,
            )?;
            for rec in bytes.chunks_exact(RECORD_BYTES) {
                f(index as u32, rec)?;
                index += 1;
            }
        }
        Ok(())
    }

    fn check_record(
        &self,
        index: u32,
        rec: &TensorRecord,
        expected: Option<TensorId>,
    ) -> Result<(), Error> {
        let id = rec.id;
        match expected {
            Some(want) if want == id => {}
            Some(want) if want.sort_key() < id.sort_key() => {
                return Err(Error::MissingTensor { tensor: want })
            }
            _ => {
                return Err(Error::BadTensorRecord {
                    index,
                    reason: "tensor is unexpected, duplicated or out of order",
                })
            }
        }
        let shape = expected_shape(&self.config, id);
        if [rec.rows, rec.cols] != shape {
            return Err(Error::TensorShape {
                tensor: id,
                expected: shape,
                found: [rec.rows, rec.cols],
            });
        }
        if id.kind.stays_f32() && rec.dtype != DType::F32 {
            return Err(Error::TensorDType {
                tensor: id,
                found: rec.dtype,
            });
        }
        if id.kind.read_by_rows() && rec.layout != Layout::Planar {
            return Err(Error::TensorLayout {
                tensor: id,
                found: rec.layout,
            });
        }
        let file_len = self.storage.len();
        check_section(Section::Tensor(id), rec.offset, rec.length, file_len)?;
        let data_end = self.preamble.data_offset + self.preamble.data_len;
        if rec.offset < self.preamble.data_offset || rec.offset + rec.length > data_end {
            return Err(Error::BadTensorRecord {
                index,
                reason: "tensor lies outside the data region",
            });
        }
        Ok(())
    }

    /// Each expert's matrices must form one 4 KiB-aligned group so that one
    /// read pages the expert in.
    fn check_expert_groups(&self) -> Result<(), Error> {
        let kinds = self.config.architecture.expert_tensors();
        for layer in (0..self.config.n_layers).filter(|&l| self.config.has_experts(l)) {
            for expert in 0..self.config.n_experts {
                let mut next = None;
                for &kind in kinds {
                    let rec = self.tensor(TensorId::expert(kind, layer, expert))?;
                    let ok = match next {
                        None => rec.offset % EXPERT_ALIGN == 0,
                        Some(n) => rec.offset == crate::format::align_up(n, TENSOR_ALIGN),
                    };
                    if !ok {
                        return Err(Error::BadTensorRecord {
                            index: layout::record_index(&self.config, rec.id)
                                .unwrap_or(u32::MAX as usize)
                                as u32,
                            reason:
                                "expert matrices are not one contiguous 4096-byte-aligned group",
                        });
                    }
                    next = Some(rec.offset + rec.length);
                }
            }
        }
        Ok(())
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The file's preamble (section offsets).
    pub fn preamble(&self) -> &Preamble {
        &self.preamble
    }

    /// The storage the model reads from.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Number of tensors in the directory.
    pub fn tensor_count(&self) -> usize {
        self.preamble.tensor_count as usize
    }

    /// The directory record at `index`.
    pub fn record(&self, index: usize) -> Result<TensorRecord, Error> {
        if index >= self.tensor_count() {
            return Err(Error::BadTensorRecord {
                index: index as u32,
                reason: "index past the directory",
            });
        }
        let mut b = [0u8; RECORD_BYTES];
        self.storage.read_at(
            self.preamble.directory_offset + (index * RECORD_BYTES) as u64,
            &mut b,
        )?;
        TensorRecord::decode(&b).map_err(|reason| Error::BadTensorRecord {
            index: index as u32,
            reason,
        })
    }

    /// The record of tensor `id`.
    pub fn tensor(&self, id: TensorId) -> Result<TensorRecord, Error> {
        let index =
            layout::record_index(&self.config, id).ok_or(Error::MissingTensor { tensor: id })?;
        self.record(index)
    }

    /// Byte range `(offset, len)` of one expert's group of matrices.
    pub fn expert_range(&self, layer: u32, expert: u32) -> Result<(u64, u64), Error> {
        let kinds = self.config.architecture.expert_tensors();
        let first = self.tensor(TensorId::expert(kinds[0], layer, expert))?;
        let last = self.tensor(TensorId::expert(kinds[kinds.len() - 1], layer, expert))?;
        Ok((first.offset, last.offset + last.length - first.offset))
    }

    /// Checks every tensor's CRC32, reading through the storage (in place
    /// when it is addressable, else 4 KiB at a time on the stack).
    pub fn verify_checksums(&self) -> Result<(), Error> {
        for index in 0..self.tensor_count() {
            let rec = self.record(index)?;
            let found = match self.storage.as_slice() {
                Some(bytes) => {
                    crc32fast::hash(&bytes[rec.offset as usize..(rec.offset + rec.length) as usize])
                }
                None => {
                    let mut hasher = crc32fast::Hasher::new();
                    let mut buf = [0u8; 4096];
                    let mut done = 0u64;
                    while done < rec.length {
                        let n = (rec.length - done).min(buf.len() as u64) as usize;
                        self.storage.read_at(rec.offset + done, &mut buf[..n])?;
                        hasher.update(&buf[..n]);
                        done += n as u64;
                    }
                    hasher.finalize()
                }
            };
            if found != rec.crc32 {
                return Err(Error::Checksum {
                    section: Section::Tensor(rec.id),
                    expected: rec.crc32,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Bytes of the tokenizer section (0: the file has none).
    pub fn tokenizer_len(&self) -> usize {
        self.preamble.tokenizer_len as usize
    }

    /// The file's tokenizer, checked (CRC32, then every table). Read in
    /// place when the storage is addressable (a map, a flash slice), else
    /// into `buf`, which needs [`Model::tokenizer_len`] bytes.
    pub fn tokenizer<'b>(&'b self, buf: &'b mut [u8]) -> Result<Tokenizer<'b>, Error> {
        let len = self.tokenizer_len();
        if len == 0 {
            return Err(Error::NoTokenizer);
        }
        let offset = self.preamble.tokenizer_offset;
        let bytes: &[u8] = match self.storage.as_slice() {
            Some(all) => &all[offset as usize..offset as usize + len],
            None => {
                let provided = buf.len();
                let dst = buf.get_mut(..len).ok_or(Error::BufferTooSmall {
                    what: "tokenizer section",
                    needed: len,
                    provided,
                })?;
                self.storage.read_at(offset, dst)?;
                dst
            }
        };
        let found = crc32fast::hash(bytes);
        if found != self.preamble.tokenizer_crc {
            return Err(Error::Checksum {
                section: Section::Tokenizer,
                expected: self.preamble.tokenizer_crc,
                found,
            });
        }
        Tokenizer::parse(bytes)
    }

    /// Bytes of all tensor data.
    pub fn weight_bytes(&self) -> u64 {
        self.preamble.data_len
    }
}
