//! `mote quantize`: a checkpoint folder into a .mote file, with progress
//! on a terminal, warnings and padding notes, and with `--target` the
//! board's verdict.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::args::{QuantizeArgs, WeightType};
use crate::boards;

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    let board = a.target.as_deref().map(boards::load).transpose()?;
    // No type asked for: int4 from safetensors, a GGUF's own types.
    let dtype = match (a.dtype, &board) {
        (Some(d), _) => Some(d),
        (None, Some(b)) => Some(match b.dtype.as_str() {
            "f32" => WeightType::F32,
            "f16" => WeightType::F16,
            "int8" => WeightType::Int8,
            "int4" => WeightType::Int4,
            other => anyhow::bail!("board {}: unknown dtype {other:?}", b.name),
        }),
        (None, None) => None,
    };
    let layout = match (a.layout, &board) {
        (Some(l), _) => l,
        (None, Some(b)) => mote::Layout::from_name(&b.layout).with_context(|| {
            format!(
                "board {}: unknown layout {:?} (planar or rows4)",
                b.name, b.layout
            )
        })?,
        (None, None) => mote::Layout::Planar,
    };
    let dtype_of: Option<mote::DType> = dtype.map(Into::into);
    // A board's layout is for its weight type; with another --dtype it may not apply.
    let layout = if a.layout.is_none() && !layout.fits(dtype_of.unwrap_or(mote::DType::Q4)) {
        mote::Layout::Planar
    } else {
        layout
    };
    let options = mote_quantize::Options {
        dtype: dtype_of,
        layout,
        threads: a.threads,
        no_tokenizer: a.no_tokenizer,
    };
    let tty = std::io::stderr().is_terminal();
    let report = mote_quantize::quantize(&a.input, &a.output, &options, |p| {
        if !a.quiet && tty {
            eprint!("\r\x1b[2K[{}/{}] {}", p.done, p.total, p.source);
        }
    })
    .with_context(|| format!("quantize {}", a.input.display()))?;
    if !a.quiet {
        if tty {
            eprintln!();
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        // Padding is per tensor; say it once per distinct row length.
        let mut shapes: Vec<(usize, usize)> = report.padded.iter().map(|p| (p.1, p.2)).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for (cols, padded) in shapes {
            let names: Vec<&str> = report
                .padded
                .iter()
                .filter(|p| (p.1, p.2) == (cols, padded))
                .map(|p| p.0.as_str())
                .collect();
            eprintln!(
                "note: {} tensor(s) with rows of {cols} values padded to {padded} (whole 32-value blocks), e.g. {}",
                names.len(),
                names[0]
            );
        }
        eprintln!(
            "wrote {} ({} tensors, {:.1} MiB from {:.1} MiB of weights) in {:.2} s",
            a.output.display(),
            report.tensors,
            report.output_bytes as f64 / (1 << 20) as f64,
            report.source_bytes as f64 / (1 << 20) as f64,
            report.seconds
        );
    }
    if let Some(board) = board {
        boards::print_verdict(&boards::verdict(&a.output, &board, 512)?)?;
    }
    Ok(())
}

/// The `.mote` conversion of the GGUF file `gguf`, made once into the cache
/// directory (`$MOTE_CACHE_DIR`, else `$XDG_CACHE_HOME/mote`, else
/// `~/.cache/mote`) and reused while the GGUF's path, size and modification
/// time stay the same. Says on stderr what it converted or reused.
pub fn gguf_cache(gguf: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(gguf).with_context(|| format!("{}", gguf.display()))?;
    let dir = match (
        std::env::var_os("MOTE_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
    ) {
        (Some(d), _) => std::path::PathBuf::from(d),
        (None, Some(x)) => std::path::PathBuf::from(x).join("mote"),
        (None, None) => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/mote"),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(gguf)
        .unwrap_or_else(|_| gguf.to_path_buf())
        .hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    let stem = gguf
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy());
    let out = dir.join(format!("{stem}-{:016x}.mote", h.finish()));
    if out.exists() {
        eprintln!("{}: using its conversion {}", gguf.display(), out.display());
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cache directory {}", dir.display()))?;
    let options = mote_quantize::Options {
        dtype: None,
        layout: mote::Layout::Planar,
        threads: 0,
        no_tokenizer: false,
    };
    let report = mote_quantize::quantize(gguf, &out, &options, |_| {})
        .with_context(|| format!("convert {}", gguf.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{}: converted once into {} ({:.2} s; `mote quantize` chooses other types)",
        gguf.display(),
        out.display(),
        report.seconds
    );
    Ok(out)
}
