//! Opening a model the way every command does: a .mote file (or a GGUF,
//! converted once into a cache directory) or the built-in model, memory-mapped or (with a memory budget) read with
//! `pread` (expert reads past the page cache, `O_DIRECT`, where the
//! filesystem allows: else a warning on stderr), its CRCs checked unless
//! `--no-verify`; and the limits a command's load flags ask for.

use anyhow::{Context, Result};
use mote::{FileStorage, Limits, MmapStorage, Model, SliceStorage, Storage};

use crate::args::LoadArgs;

/// The storage a command reads: a populated memory map, or positional
/// reads when a memory budget is set (mapped pages would count against it).
pub type AnyStorage = Box<dyn Storage + Sync>;

/// Opens the model `load` names, or the built-in one.
pub fn open(load: &LoadArgs) -> Result<Model<AnyStorage>> {
    let Some(given) = &load.model else {
        if crate::builtin::MODEL.is_empty() {
            anyhow::bail!("this build has no built-in model (feature builtin-model is off): name a .mote file");
        }
        let bytes = SliceStorage::new(crate::builtin::MODEL);
        let storage: AnyStorage = match load.memory_budget {
            Some(_) => Box::new(crate::builtin::Unmapped(bytes)),
            None => Box::new(bytes),
        };
        let model = Model::open(storage).context("built-in model")?;
        if !load.no_verify {
            model.verify_checksums().context("built-in model")?;
        }
        return Ok(model);
    };
    // A GGUF is converted once into the cache, then opened like any file.
    let converted;
    let path = if mote_quantize::is_gguf(given) {
        converted = crate::convert::gguf_cache(given)?;
        &converted
    } else {
        given
    };
    let storage: AnyStorage = if load.memory_budget.is_some() {
        let file = FileStorage::open_direct(path).with_context(|| format!("{}", path.display()))?;
        if let Some(why) = file.direct_refusal() {
            eprintln!(
                "warning: {}: reading through the page cache (O_DIRECT refused: {why}); \
                 the page cache is outside --memory-budget",
                path.display()
            );
        }
        Box::new(file)
    } else {
        Box::new(MmapStorage::open_populated(path).with_context(|| format!("{}", path.display()))?)
    };
    let model = Model::open(storage).with_context(|| format!("{}", path.display()))?;
    if !load.no_verify {
        model
            .verify_checksums()
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok(model)
}

/// The model's path as given, or "built-in".
pub fn model_name(load: &LoadArgs) -> String {
    load.model
        .as_ref()
        .map_or_else(|| "built-in".into(), |p| p.display().to_string())
}

/// The session limits the load flags ask for, with a context of
/// `max_context` tokens.
pub fn limits(load: &LoadArgs, max_context: u32) -> Limits {
    Limits {
        memory_budget_bytes: load.memory_budget,
        max_context,
        eviction: load.eviction.into(),
        verify_experts: load.paranoid,
        prefetch: !load.no_prefetch,
        kv_cache: load.kv_cache.into(),
        ..Limits::default()
    }
}
