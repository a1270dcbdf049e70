//! mote-quantize: converts a Hugging Face checkpoint folder (`config.json`
//! plus `model.safetensors` or a sharded `model.safetensors.index.json`) into
//! a `.mote` file, with the tokenizer from `tokenizer.json` when there is one;
//! or a GGUF file (`gguf`), keeping the types mote has.
//!
//! It streams tensor by tensor, so peak memory stays near the largest tensor,
//! and writes to a temporary file that is renamed into place only when
//! everything succeeded: a failure never leaves a partial output.
#![forbid(unsafe_code)]

mod convert;
mod error;
mod gguf;
mod hf_config;
mod safetensors;
mod sources;
mod tokenizer;

pub use convert::{quantize, Options, Progress, Report};
pub use error::QuantizeError;
pub use gguf::is_gguf;
pub use hf_config::{read_config, SUPPORTED_ARCHITECTURES};
pub use safetensors::{Checkpoint, SourceDType};
pub use tokenizer::read_tokenizer;
