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
