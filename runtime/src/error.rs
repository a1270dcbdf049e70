//! Typed errors: small `Copy` values that say what went wrong and where,
//! without touching the heap. The CLI turns them into one line on stderr.

use core::fmt;

use crate::format::tensor::{DType, Layout, TensorId};

/// A failure to read bytes from a [`Storage`](crate::Storage).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// The read `[offset, offset + len)` does not lie inside the storage.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Number of bytes asked for.
        len: u64,
        /// Size of the storage in bytes.
        storage_len: u64,
    },
    /// The operating system or device reported an error (`code` is the OS
    /// error number where there is one, else -1).
    Io {
        /// OS error number, or -1.
        code: i32,
    },
}

/// Which part of a `.mote` file an error is about.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The fixed 128-byte preamble at the start of the file.
    Preamble,
    /// The postcard-encoded model configuration.
    Config,
    /// The tensor directory.
    Directory,
    /// The tensor data region.
    Data,
    /// One tensor's bytes.
    Tensor(TensorId),
    /// The tokenizer section.
    Tokenizer,
}

/// Everything that can go wrong when opening a model, planning memory or
/// running a session.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Error {
    /// Reading from the storage failed.
    Storage(StorageError),
    /// The file ends before `section` does.
    Truncated {
        /// The section that does not fit.
        section: Section,
        /// Where the section starts.
        offset: u64,
        /// The section's length in bytes.
        len: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The file does not start with the `.mote` magic bytes.
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The file's format version is not one this build reads.
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A field of the preamble is inconsistent.
    BadPreamble {
        /// What is wrong.
        reason: &'static str,
    },
    /// A CRC32 does not match the bytes it covers.
    Checksum {
        /// The bytes that were checked.
        section: Section,
        /// The CRC32 recorded in the file.
        expected: u32,
        /// The CRC32 of the bytes read.
        found: u32,
    },
    /// The model configuration cannot be decoded or makes no sense.
    BadConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A record of the tensor directory is malformed.
    BadTensorRecord {
        /// Index of the record in the directory.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A tensor the architecture needs is not in the file.
    MissingTensor {
        /// The tensor looked for.
        tensor: TensorId,
    },
    /// A tensor's shape disagrees with the model configuration.
    TensorShape {
        /// The tensor.
        tensor: TensorId,
        /// `[rows, cols]` the configuration implies.
        expected: [u32; 2],
        /// `[rows, cols]` in the file.
        found: [u32; 2],
    },
    /// A tensor has a type this role cannot use (norms and routers must be f32).
    TensorDType {
        /// The tensor.
        tensor: TensorId,
        /// Its type in the file.
        found: DType,
    },
    /// A tensor is stored in a layout its role cannot read (the tensors
    /// read a row at a time, the embedding table and MLA's `kv_b`, must be planar).
    TensorLayout {
        /// The tensor.
        tensor: TensorId,
        /// Its layout in the file.
        found: Layout,
    },
    /// The arena handed to [`Session::new`](crate::Session::new) is smaller than the plan.
    ArenaTooSmall {
        /// Bytes the plan needs.
        needed: usize,
        /// Bytes provided.
        provided: usize,
    },
    /// The memory budget cannot hold the minimum the model needs.
    BudgetTooSmall {
        /// Bytes the model needs at least.
        needed: u64,
        /// The budget given.
        budget: u64,
    },
    /// A limit is out of its valid range.
    BadLimits {
        /// What is wrong.
        reason: &'static str,
    },
    /// A token id is not below the vocabulary size.
    TokenOutOfRange {
        /// The token id given.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: u32,
    },
    /// The session's planned context is full.
    ContextFull {
        /// Position the token would take.
        position: u32,
        /// The planned context length.
        max_context: u32,
    },
    /// `prefill` was called with no tokens.
    EmptyPrompt,
    /// The file's tokenizer section is malformed.
    BadTokenizer {
        /// What is wrong.
        reason: &'static str,
    },
    /// The file has no tokenizer section (converted from a folder without
    /// `tokenizer.json`), so it speaks token ids only.
    NoTokenizer,
    /// A caller's buffer is too small for the result.
    BufferTooSmall {
        /// What the buffer holds.
        what: &'static str,
        /// Elements needed (at least).
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StorageError::OutOfRange { offset, len, storage_len } => write!(
                f,
                "read of {len} bytes at offset {offset} is outside the storage ({storage_len} bytes)"
            ),
            StorageError::Io { code } => write!(f, "I/O error (os error {code})"),
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Preamble => f.write_str("preamble"),
            Section::Config => f.write_str("config"),
            Section::Directory => f.write_str("tensor directory"),
            Section::Data => f.write_str("data region"),
            Section::Tensor(t) => write!(f, "tensor {t}"),
            Section::Tokenizer => f.write_str("tokenizer"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Storage(e) => write!(f, "storage: {e}"),
            Error::Truncated { section, offset, len, file_len } => write!(
                f,
                "file truncated: {section} needs bytes {offset}..{} but the file has {file_len}",
                offset.saturating_add(len)
            ),
            Error::BadMagic { found } => {
                write!(f, "not a .mote file: magic bytes are {found:02x?}")
            }
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found} is not supported (this build reads version {supported})"
            ),
            Error::BadPreamble { reason } => write!(f, "bad preamble: {reason}"),
            Error::Checksum { section, expected, found } => write!(
                f,
                "checksum mismatch in {section}: expected {expected:#010x}, found {found:#010x}"
            ),
            Error::BadConfig { reason } => write!(f, "bad model config: {reason}"),
            Error::BadTensorRecord { index, reason } => {
                write!(f, "bad tensor record #{index}: {reason}")
            }
            Error::MissingTensor { tensor } => write!(f, "missing tensor {tensor}"),
            Error::TensorShape { tensor, expected, found } => write!(
                f,
                "tensor {tensor} has shape {}x{}, expected {}x{}",
                found[0], found[1], expected[0], expected[1]
            ),
            Error::TensorDType { tensor, found } => {
                write!(f, "tensor {tensor} has type {found}, which this role cannot use")
            }
            Error::TensorLayout { tensor, found } => write!(
                f,
                "tensor {tensor} is stored in layout {found}, but this role reads it by rows (it must be planar)"
            ),
            Error::ArenaTooSmall { needed, provided } => write!(
                f,
                "arena too small: the plan needs {needed} bytes, {provided} provided"
            ),
            Error::BudgetTooSmall { needed, budget } => write!(
                f,
                "memory budget too small: needs at least {needed} bytes, budget is {budget} ({} bytes missing)",
                needed - budget
            ),
            Error::BadLimits { reason } => write!(f, "bad limits: {reason}"),
            Error::TokenOutOfRange { token, vocab_size } => write!(
                f,
                "token id {token} is out of range (vocabulary has {vocab_size} tokens)"
            ),
            Error::ContextFull { position, max_context } => write!(
                f,
                "context full: position {position} is past the planned context of {max_context} tokens"
            ),
            Error::EmptyPrompt => f.write_str("prefill needs at least one token"),
            Error::BadTokenizer { reason } => write!(f, "bad tokenizer section: {reason}"),
            Error::NoTokenizer => f.write_str(
                "the file has no tokenizer (its checkpoint folder had no tokenizer.json); use token ids",
            ),
            Error::BufferTooSmall { what, needed, provided } => write!(
                f,
                "buffer for {what} too small: needs at least {needed}, {provided} provided"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StorageError {}
#[cfg(feature = "std")]
impl std::error::Error for Error {}
