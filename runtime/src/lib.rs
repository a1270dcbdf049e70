//! mote: run int4/int8-quantized Mixture-of-Experts language models on edge devices.
//!
//! The crate is `no_std`; the default feature `std` adds file and memory-map
//! storage. A model is used in four steps, each in its own module:
//!
//! ```no_run
//! # fn main() -> Result<(), mote::Error> {
//! use mote::{Limits, Model, Plan, Session, SliceStorage};
//! # let bytes: &[u8] = &[];
//! let model = Model::open(SliceStorage::new(bytes))?; // checks every range in the file
//! let plan = Plan::new(&model, &Limits { max_context: 256, ..Limits::default() })?;
//! let mut arena = vec![0u8; plan.arena_bytes()];       // or a static region on a board
//! let mut session = Session::new(&model, &plan, &mut arena)?;
//! let logits: &[f32] = session.prefill(&[1, 2, 3])?;   // allocates nothing
//! # let _ = logits; Ok(()) }
//! ```
#![no_std]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "std")]
extern crate std;

mod arena;
pub mod error;
pub mod experts;
pub mod format;
pub mod kernels;
pub mod kv_cache;
mod math;
pub mod model;
mod parallel;
pub mod plan;
pub mod quant;
mod reader;
pub mod sample;
pub mod session;
pub mod storage;
#[cfg(feature = "std")]
mod threads;
pub mod tokenizer;

pub use error::{Error, StorageError};
pub use experts::{CacheStats, EvictionPolicy};
pub use format::config::{Architecture, ModelConfig, RopeScaling};
pub use format::tensor::TensorRecord;
pub use format::tensor::{DType, Layout, TensorId, TensorKind};
pub use kv_cache::KvCacheType;
pub use model::Model;
pub use plan::{Limits, Plan};
pub use sample::{Sampler, SamplerConfig};
pub use session::Session;
pub use storage::{FaultyStorage, MaybeSync, ReadStart, SliceStorage, Storage};
#[cfg(feature = "std")]
pub use storage::{FileStorage, MmapStorage, DIRECT_ALIGN};
pub use tokenizer::{TextDecoder, Tokenizer};
