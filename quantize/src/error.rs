//! What can go wrong converting a checkpoint; every variant names the file
//! or tensor at fault.

use std::path::PathBuf;

/// A conversion failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{}: invalid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` lacks a field or holds a value mote cannot use.
    #[error("{}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's architecture is not one mote runs.
    #[error("{}: unsupported architecture {found:?}; supported: {}", path.display(), supported.join(", "))]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `architectures` / `model_type` found.
        found: String,
        /// What this build converts.
        supported: &'static [&'static str],
    },
    /// A safetensors file is malformed.
    #[error("{}: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A GGUF file is malformed (or a kind mote does not read).
    #[error("{}: byte {offset}: {message}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A GGUF tensor's weight type cannot become a mote tensor as asked.
    #[error("tensor {tensor}: {ggml_type}: {message}")]
    GgufType {
        /// The GGUF tensor name.
        tensor: String,
        /// The ggml type name (`Q4_K`).
        ggml_type: String,
        /// Why, and what to do instead.
        message: String,
    },
    /// A tensor the architecture needs is in no shard.
    #[error("missing tensor {name} (looked for {looked_for})")]
    MissingTensor {
        /// The canonical name.
        name: String,
        /// Every name tried.
        looked_for: String,
    },
    /// A tensor's shape disagrees with config.json.
    #[error(
        "tensor {tensor}: shape {found:?} does not match the model config (expected {expected:?})"
    )]
    Shape {
        /// The checkpoint tensor name.
        tensor: String,
        /// The shape config.json implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has an element type the converter does not read.
    #[error("tensor {tensor}: unsupported dtype {found} (expected F32, F16 or BF16)")]
    DType {
        /// The checkpoint tensor name.
        tensor: String,
        /// The dtype string.
        found: String,
    },
    /// A weight is NaN or infinite.
    #[error("tensor {tensor}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// The checkpoint tensor name.
        tensor: String,
        /// Row of the bad value.
        row: usize,
        /// Column of the bad value.
        col: usize,
        /// The value.
        value: f32,
    },
    /// `tokenizer.json` describes a tokenizer mote cannot reproduce exactly.
    #[error("{}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The options ask for something the weight type cannot be.
    #[error("layout {layout} needs int4 or int8 weights, not {dtype}")]
    LayoutNeedsBlocks {
        /// The layout asked for.
        layout: mote::Layout,
        /// The weight type asked for.
        dtype: mote::DType,
    },
    /// The output does not form a valid file (a bug, or limits exceeded).
    #[error("output: {0}")]
    Format(#[from] mote::Error),
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> QuantizeError {
    let path = path.into();
    move |source| QuantizeError::Io { path, source }
}
