//! A GGUF file into a `.mote` file: config and tokenizer from the metadata,
//! then each tensor either copied (its ggml type is a mote type: Q4_0,
//! Q8_0, MXFP4, F16, F32 — the same numbers) or, with `--dtype`, decoded and
//! re-quantized. Norms, routers and biases are decoded to f32 as mote keeps
//! them. A type mote has no kernel for yet (the K-quants, IQ4, Q4_1, Q5_x)
//! is decoded and re-quantized to int8, the mote type closest to it, and
//! the report's warnings name every such tensor: the file converts, and
//! says exactly what did not stay as it was.

use std::path::Path;
use std::time::Instant;

use mote::model::layout::TensorIds;
use mote::quant::encode_row;
use mote::DType;

use super::blocks::{copy_row, dequantize_row};
use super::tensors::{find, Source, SplitKvB};
use super::Gguf;
use crate::convert::{
    check_vocab, record, with_no_tokenizer_hint, write_mote, Options, Progress, Report,
};
use crate::error::QuantizeError;

/// Converts the GGUF file (or split set) `input` into `output`.
pub fn import(
    input: &Path,
    output: &Path,
    options: &Options,
    progress: impl FnMut(Progress<'_>),
    start: Instant,
) -> Result<Report, QuantizeError> {
    let g = Gguf::open(input)?;
    let mut warnings = Vec::new();
    let (config, family) = super::config::read(&g, &mut warnings)?;
    let tokenizer = if options.no_tokenizer {
        warnings.push("tokenizer left out: the .mote file takes token ids only".into());
        Vec::new()
    } else {
        super::tokenizer::read(&g, &mut warnings)
            .map_err(with_no_tokenizer_hint)?
            .unwrap_or_default()
    };
    check_vocab(&tokenizer, &config, input)?;

    let mut records = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut padded = Vec::new();
    let mut requantized: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut rebuilt = Vec::new();
    for id in TensorIds::new(&config) {
        let src = find(&g, &config, family, id)?;
        let ty = src.info.ggml_type;
        let dtype = if id.kind.stays_f32() {
            DType::F32
        } else if let Some(d) = options.dtype {
            d
        } else if let Some(d) = ty.mote_dtype() {
            d
        } else {
            // No kernel for this type yet: int8 holds its numbers closest.
            let names = requantized.entry(ty.name()).or_default();
            names.push(src.name.clone());
            DType::Q8
        };
        if !ty.decodes() && ty.mote_dtype() != Some(dtype) {
            return Err(QuantizeError::GgufType {
                tensor: src.name.clone(),
                ggml_type: ty.name().into(),
                message: "mote cannot read this type".into(),
            });
        }
        // Re-quantized rows that are not whole blocks end in a zero-padded one.
        if dtype.is_quantized() && src.cols % mote::quant::BLOCK_LEN != 0 {
            padded.push((
                src.name.clone(),
                src.cols,
                src.cols.next_multiple_of(mote::quant::BLOCK_LEN),
            ));
        }
        if src.split_kv_b.is_some() {
            rebuilt.push(src.name.clone());
        }
        records.push(record(id, dtype, options.layout, src.rows, src.cols));
        sources.push(src);
    }
    for (ty, names) in &requantized {
        warnings.push(format!(
            "{} tensor(s) of {ty} re-quantized to int8 (mote has no {ty} kernels yet; \
             --dtype chooses one type for all), e.g. {}",
            names.len(),
            names[..names.len().min(3)].join(", ")
        ));
    }
    if let Some(first) = rebuilt.first() {
        warnings.push(format!(
            "{} attn_kv_b tensor(s) rebuilt from the split attn_k_b / attn_v_b and re-quantized \
             (mote expands keys and values from kv_b's rows), e.g. {first}",
            rebuilt.len()
        ));
    }
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut source_bytes = 0u64;
    let output_bytes = write_mote(
        output,
        &config,
        &tokenizer,
        &mut records,
        &names,
        |i, dtype| {
            let src = &sources[i];
            source_bytes += (src.info.ggml_type.row_bytes(src.cols) * src.rows) as u64;
            convert(&g, src, dtype)
        },
        progress,
    )?;
    Ok(Report {
        config,
        tensors: records.len(),
        output_bytes,
        source_bytes,
        padded,
        warnings,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One mote tensor's planar `dtype` bytes from its GGUF rows.
fn convert(g: &Gguf, src: &Source, dtype: DType) -> Result<Vec<u8>, QuantizeError> {
    if let Some(split) = &src.split_kv_b {
        return rebuild_kv_b(g, src, split, dtype);
    }
    let ty = src.info.ggml_type;
    let in_row = ty.row_bytes(src.cols);
    let out_row = dtype.row_bytes(src.cols);
    // The rows used are contiguous in the file (a permutation stays within them).
    let mut raw = vec![0u8; in_row * src.rows];
    g.read(&src.info, (src.first_row * in_row) as u64, &mut raw)?;
    let mut out = vec![0u8; out_row * src.rows];
    let copy = ty.mote_dtype() == Some(dtype);
    let mut values = vec![0.0f32; src.cols];
    for (r, o) in out.chunks_exact_mut(out_row).enumerate() {
        let f = src.file_row(r) - src.first_row;
        let row = &raw[f * in_row..(f + 1) * in_row];
        // Decoded even when copied: a NaN scale is an error either way.
        dequantize_row(ty, row, &mut values);
        if let Some(col) = values.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFinite {
                tensor: src.name.clone(),
                row: r,
                col,
                value: values[col],
            });
        }
        match copy {
            true => copy_row(ty, row, o),
            false => encode_row(dtype, &values, o),
        }
    }
    Ok(out)
}

/// Decodes a whole GGUF tensor to f32, rows of `ne[0]`.
fn decode_all(g: &Gguf, t: &super::TensorInfo, name: &str) -> Result<Vec<f32>, QuantizeError> {
    let mut raw = vec![0u8; t.bytes as usize];
    g.read(t, 0, &mut raw)?;
    let cols = t.ne[0] as usize;
    let mut values = vec![0.0f32; cols * t.rows() as usize];
    for (row, out) in raw
        .chunks_exact(t.ggml_type.row_bytes(cols))
        .zip(values.chunks_exact_mut(cols))
    {
        dequantize_row(t.ggml_type, row, out);
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(QuantizeError::NonFinite {
            tensor: name.to_string(),
            row: i / cols,
            col: i % cols,
            value: values[i],
        });
    }
    Ok(values)
}

/// DeepSeek's `kv_b` rows (per head `nope` key rows, then `v` value rows,
/// each `kv_lora` wide) from the split `attn_k_b` (per head `kv_lora` rows
/// of `nope`: the key rows transposed) and `attn_v_b`.
fn rebuild_kv_b(
    g: &Gguf,
    src: &Source,
    s: &SplitKvB,
    dtype: DType,
) -> Result<Vec<u8>, QuantizeError> {
    let lora = src.cols;
    let k = decode_all(g, &s.k_b, &src.name)?;
    let v = decode_all(g, &src.info, &src.name)?;
    let out_row = dtype.row_bytes(lora);
    let mut out = vec![0u8; out_row * src.rows];
    let mut row = vec![0.0f32; lora];
    for (r, o) in out.chunks_exact_mut(out_row).enumerate() {
        let (h, i) = (r / (s.nope + s.v), r % (s.nope + s.v));
        for (c, x) in row.iter_mut().enumerate() {
            *x = match i < s.nope {
                // k_b[h][c][i]: head h, row c (of kv_lora), column i.
                true => k[(h * lora + c) * s.nope + i],
                false => v[(h * s.v + (i - s.nope)) * lora + c],
            };
        }
        encode_row(dtype, &row, o);
    }
    Ok(out)
}
