//! The conversion itself. [`write_mote`] is what every source shares: lay
//! out the file, then stream each tensor into it (a worker converting, a
//! writer thread writing the previous one), into a temporary file renamed
//! into place only on success. [`quantize`] plans a safetensors checkpoint
//! (tensor by tensor through f32 into the target type, rows split across
//! threads) or hands a GGUF file to `gguf::import`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mote::format::config::global_tensors;
use mote::format::tensor::{TensorRecord, RECORD_BYTES};
use mote::format::{
    align_up, Preamble, EXPERT_ALIGN, MAX_CONFIG_BYTES, PREAMBLE_BYTES, TENSOR_ALIGN, VERSION,
};
use mote::model::layout::TensorIds;
use mote::quant::{encode_row, rows4_from_planar, BLOCK_LEN};
use mote::{DType, Layout, ModelConfig, TensorId};

use crate::error::{io, QuantizeError};
use crate::hf_config::{fp8_block_size, read_config};
use crate::safetensors::Checkpoint;
use crate::sources::{find, Source, View};
use crate::tokenizer::read_tokenizer;

/// How to convert.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Type of the weight matrices (norms and routers stay f32). `None`:
    /// int4 from safetensors; from a GGUF, each tensor keeps its own type.
    pub dtype: Option<DType>,
    /// Layout of the int4/int8 matrices (the embedding table, and any
    /// other tensor the runtime reads by rows, stays planar).
    pub layout: Layout,
    /// Worker threads for quantization (0: all cores).
    pub threads: usize,
    /// Leave `tokenizer.json` out: the file takes token ids only (for a
    /// tokenizer whose pre-tokenizer mote cannot reproduce exactly yet).
    pub no_tokenizer: bool,
}

/// Reported once per tensor as it is written.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Tensors written so far, this one included.
    pub done: usize,
    /// Tensors in all.
    pub total: usize,
    /// The checkpoint name of the tensor just written.
    pub source: &'a str,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The config written.
    pub config: ModelConfig,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the output file.
    pub output_bytes: u64,
    /// Bytes of checkpoint tensors read.
    pub source_bytes: u64,
    /// Tensors whose rows were zero-padded to whole blocks: (name, cols, padded cols).
    pub padded: Vec<(String, usize, usize)>,
    /// Things the user should know that did not stop the conversion.
    pub warnings: Vec<String>,
    /// Wall time of the conversion.
    pub seconds: f64,
}

/// Converts the checkpoint folder `input` (or the GGUF file `input`) into
/// the `.mote` file `output`.
pub fn quantize(
    input: &Path,
    output: &Path,
    options: &Options,
    progress: impl FnMut(Progress<'_>),
) -> Result<Report, QuantizeError> {
    let start = Instant::now();
    if crate::gguf::is_gguf(input) {
        return crate::gguf::import::import(input, output, options, progress, start);
    }
    let dtype = options.dtype.unwrap_or(DType::Q4);
    if !options.layout.fits(dtype) {
        return Err(QuantizeError::LayoutNeedsBlocks {
            layout: options.layout,
            dtype,
        });
    }
    let mut warnings = Vec::new();
    let config = read_config(input, &mut warnings)?;
    let tokenizer = if options.no_tokenizer {
        warnings.push("tokenizer left out: the .mote file takes token ids only".into());
        Vec::new()
    } else {
        read_tokenizer(input, &mut warnings)
            .map_err(with_no_tokenizer_hint)?
            .unwrap_or_default()
    };
    check_vocab(&tokenizer, &config, &input.join("tokenizer.json"))?;
    let ck = Checkpoint::open(input)?;
    let fp8_block = fp8_block_size(input)?;
    let threads = worker_threads(options.threads);

    // Directory order (what the runtime expects), each with its source.
    let mut records = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut padded = Vec::new();
    for id in TensorIds::new(&config) {
        let source = find(&ck, &config, id, fp8_block)?;
        let dtype = if id.kind.stays_f32() {
            DType::F32
        } else if matches!(source.view, View::Mxfp4 { .. }) {
            // MXFP4 experts stay MXFP4: any other type would re-quantize.
            DType::Mxfp4
        } else {
            dtype
        };
        if dtype.is_quantized() && source.cols % BLOCK_LEN != 0 {
            padded.push((
                source.name.clone(),
                source.cols,
                source.cols.next_multiple_of(BLOCK_LEN),
            ));
        }
        records.push(record(id, dtype, options.layout, source.rows, source.cols));
        sources.push(source);
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
            source_bytes += match src.view {
                View::Mxfp4 { .. } => dtype.row_bytes(src.cols) as u64 * src.rows as u64,
                _ => (src.rows * src.cols * src.entry.dtype.size()) as u64,
            };
            convert_tensor(&ck, src, dtype, threads)
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

/// Worker threads for `threads` (0: all cores).
fn worker_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Adds the `--no-tokenizer` way out to a tokenizer error.
pub(crate) fn with_no_tokenizer_hint(e: QuantizeError) -> QuantizeError {
    match e {
        QuantizeError::Tokenizer { path, message } => QuantizeError::Tokenizer {
            path,
            message: format!("{message} (convert with --no-tokenizer to keep token ids only)"),
        },
        e => e,
    }
}

/// A tokenizer with more tokens than the model has embeddings belongs to
/// another model.
pub(crate) fn check_vocab(
    tokenizer: &[u8],
    config: &ModelConfig,
    path: &Path,
) -> Result<(), QuantizeError> {
    if tokenizer.is_empty() {
        return Ok(());
    }
    let tokens = mote::Tokenizer::parse(tokenizer)?.vocab_size();
    if tokens > config.vocab_size {
        return Err(QuantizeError::Tokenizer {
            path: path.to_path_buf(),
            message: format!(
                "{tokens} tokens, but the model's vocab_size is {}: not this model's tokenizer",
                config.vocab_size
            ),
        });
    }
    Ok(())
}

/// The directory record of `id` (offset and CRC filled in by [`write_mote`]).
pub(crate) fn record(
    id: TensorId,
    dtype: DType,
    layout: Layout,
    rows: usize,
    cols: usize,
) -> TensorRecord {
    // The embedding table (and any tensor the runtime reads by rows) stays planar.
    let layout = if layout.fits(dtype) && !id.kind.read_by_rows() {
        layout
    } else {
        Layout::Planar
    };
    TensorRecord {
        id,
        dtype,
        layout,
        rows: rows as u32,
        cols: cols as u32,
        crc32: 0,
        offset: 0,
        length: dtype.row_bytes(cols) as u64 * rows as u64,
    }
}

/// Removes the temporary output unless the conversion committed it.
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Lays out and writes a `.mote` file: `records` in directory order (their
/// offsets and CRCs are filled in here), `produce(i, dtype)` giving record
/// `i`'s planar bytes. Writes to a temporary file beside `output` and
/// renames it into place only when everything succeeded. Returns the
/// file's size.
pub(crate) fn write_mote(
    output: &Path,
    config: &ModelConfig,
    tokenizer: &[u8],
    records: &mut [TensorRecord],
    names: &[String],
    mut produce: impl FnMut(usize, DType) -> Result<Vec<u8>, QuantizeError>,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<u64, QuantizeError> {
    // Header layout.
    let mut config_buf = [0u8; MAX_CONFIG_BYTES];
    let config_bytes = config.encode(&mut config_buf)?.to_vec();
    let config_offset = PREAMBLE_BYTES as u64;
    let directory_offset = align_up(config_offset + config_bytes.len() as u64, TENSOR_ALIGN);
    let tokenizer_offset = align_up(
        directory_offset + (records.len() * RECORD_BYTES) as u64,
        TENSOR_ALIGN,
    );
    let data_offset = align_up(tokenizer_offset + tokenizer.len() as u64, EXPERT_ALIGN);

    // Data layout: per layer its own tensors, then each expert's group
    // 4 KiB-aligned; then the global tensors.
    let index = |id: TensorId| mote::model::layout::record_index(config, id).expect("planned id");
    let mut order: Vec<(usize, u64)> = Vec::with_capacity(records.len()); // (index, alignment)
    for layer in 0..config.n_layers {
        let kinds = config.layer_kinds(layer);
        for &(kind, _) in kinds.iter().filter(|(_, per_expert)| !per_expert) {
            order.push((index(TensorId::layer(kind, layer)), TENSOR_ALIGN));
        }
        if !config.has_experts(layer) {
            continue;
        }
        for expert in 0..config.n_experts {
            for (i, &kind) in config.architecture.expert_tensors().iter().enumerate() {
                let align = if i == 0 { EXPERT_ALIGN } else { TENSOR_ALIGN };
                order.push((index(TensorId::expert(kind, layer, expert)), align));
            }
        }
    }
    for &kind in global_tensors(config) {
        order.push((index(TensorId::global(kind)), TENSOR_ALIGN));
    }
    let mut cursor = data_offset;
    for &(i, align) in &order {
        let rec = &mut records[i];
        rec.offset = align_up(cursor, align);
        cursor = rec.offset + rec.length;
    }
    let data_len = cursor - data_offset;

    // Write to a temporary file beside the output, then rename.
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = TempFile {
        path: output.with_file_name(format!(".{file_name}.partial-{}", std::process::id())),
        committed: false,
    };
    let file = File::create(&temp.path).map_err(io(&temp.path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let werr = io(&temp.path);
    // Workers convert one tensor at a time; a writer thread writes the
    // previous tensor meanwhile (a channel of depth 1 bounds memory to about
    // three tensors).
    let total = order.len();
    let temp_path = temp.path.clone();
    let (to_writer, from_main) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(1);
    let writer = std::thread::spawn(move || -> Result<BufWriter<File>, QuantizeError> {
        let mut written = 0u64;
        pad_to(&mut w, &mut written, data_offset).map_err(io(&temp_path))?;
        for (offset, bytes) in from_main {
            pad_to(&mut w, &mut written, offset).map_err(io(&temp_path))?;
            w.write_all(&bytes).map_err(io(&temp_path))?;
            written += bytes.len() as u64;
        }
        Ok(w)
    });
    let converted: Result<(), QuantizeError> = (|| {
        for (done, &(i, _)) in order.iter().enumerate() {
            let rec = &mut records[i];
            let mut bytes = produce(i, rec.dtype)?;
            debug_assert_eq!(bytes.len() as u64, rec.length);
            if rec.layout == Layout::Rows4 {
                let mut packed = vec![0u8; bytes.len()];
                rows4_from_planar(rec.dtype, rec.cols as usize, &bytes, &mut packed);
                bytes = packed;
            }
            rec.crc32 = crc32fast::hash(&bytes);
            if to_writer.send((rec.offset, bytes)).is_err() {
                break; // the writer failed; its error is reported below
            }
            progress(Progress {
                done: done + 1,
                total,
                source: &names[i],
            });
        }
        Ok(())
    })();
    drop(to_writer);
    let w = writer.join().expect("writer thread panicked");
    converted?;
    let w = w?;

    let mut directory = Vec::with_capacity(records.len() * RECORD_BYTES);
    for r in records.iter() {
        directory.extend_from_slice(&r.encode());
    }
    let preamble = Preamble {
        version: VERSION,
        config_offset,
        config_len: config_bytes.len() as u32,
        config_crc: crc32fast::hash(&config_bytes),
        directory_offset,
        tensor_count: records.len() as u32,
        directory_crc: crc32fast::hash(&directory),
        data_offset,
        data_len,
        tokenizer_offset: if tokenizer.is_empty() {
            0
        } else {
            tokenizer_offset
        },
        tokenizer_len: tokenizer.len() as u64,
        tokenizer_crc: crc32fast::hash(tokenizer),
    };
    let mut file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io(&temp.path))?;
    (|| {
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&preamble.encode())?;
        file.write_all(&config_bytes)?;
        file.seek(SeekFrom::Start(directory_offset))?;
        file.write_all(&directory)?;
        file.seek(SeekFrom::Start(tokenizer_offset))?;
        file.write_all(tokenizer)?;
        file.sync_all()
    })()
    .map_err(werr)?;
    drop(file);
    let mut temp = temp;
    std::fs::rename(&temp.path, output).map_err(io(output))?;
    temp.committed = true;
    Ok(data_offset + data_len)
}

/// Converts a strided view: reads the span it covers once, then gathers
/// each row.
fn convert_strided(
    ck: &Checkpoint,
    src: &Source,
    dtype: DType,
    row_step: usize,
    col_step: usize,
) -> Result<Vec<u8>, QuantizeError> {
    let span = (src.rows - 1) * row_step + (src.cols - 1) * col_step + 1;
    let elem = src.entry.dtype.size();
    let mut raw = vec![0u8; span * elem];
    ck.read(&src.entry, src.skip_bytes, &mut raw)?;
    let mut values = vec![0.0f32; span];
    src.entry.dtype.to_f32(&raw, &mut values);
    let out_row = dtype.row_bytes(src.cols);
    let mut out = vec![0u8; src.rows * out_row];
    let mut row = vec![0.0f32; src.cols];
    for (r, outp) in out.chunks_exact_mut(out_row).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = values[r * row_step + c * col_step];
        }
        if let Some(col) = row.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFinite {
                tensor: src.name.clone(),
                row: r,
                col,
                value: row[col],
            });
        }
        encode_row(dtype, &row, outp);
    }
    Ok(out)
}

/// Copies MXFP4 rows into mote's MXFP4 rows (the row's E8M0 scales, then
/// its 16-byte blocks). A scale of 255 (E8M0's NaN) is an error.
fn copy_mxfp4(ck: &Checkpoint, src: &Source) -> Result<Vec<u8>, QuantizeError> {
    let View::Mxfp4 {
        scales,
        rows_per_expert,
        expert,
        first,
        step,
    } = &src.view
    else {
        unreachable!("copy_mxfp4 takes MXFP4 views");
    };
    let blocks = src.cols / BLOCK_LEN;
    let out_row = DType::Mxfp4.row_bytes(src.cols);
    let mut out = vec![0u8; src.rows * out_row];
    for (r, outp) in out.chunks_exact_mut(out_row).enumerate() {
        let row = (expert * rows_per_expert + first + r * step) as u64;
        let (s, b) = outp.split_at_mut(blocks);
        ck.read(scales, row * blocks as u64, s)?;
        ck.read(&src.entry, row * (blocks * 16) as u64, b)?;
        if let Some(block) = s.iter().position(|&e| e == 255) {
            return Err(QuantizeError::NonFinite {
                tensor: src.name.clone(),
                row: r,
                col: block * BLOCK_LEN,
                value: f32::NAN,
            });
        }
    }
    Ok(out)
}

/// Writes zeros until `written` reaches `to`.
fn pad_to(w: &mut impl Write, written: &mut u64, to: u64) -> std::io::Result<()> {
    const ZEROS: [u8; EXPERT_ALIGN as usize] = [0; EXPERT_ALIGN as usize];
    while *written < to {
        let n = (to - *written).min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..n])?;
        *written += n as u64;
    }
    Ok(())
}

/// Converts one source tensor to `dtype` bytes. Rows are split across
/// `threads` workers, each reading and converting its own rows. Fails on
/// the first NaN or infinity.
fn convert_tensor(
    ck: &Checkpoint,
    src: &Source,
    dtype: DType,
    threads: usize,
) -> Result<Vec<u8>, QuantizeError> {
    // FP8 rows are multiplied by their blocks' scales after decoding.
    let block_scales = match &src.view {
        View::Rows => None,
        View::BlockScaled { scales, block } => {
            let n: usize = scales.shape.iter().product();
            let mut raw = vec![0u8; n * scales.dtype.size()];
            ck.read(scales, 0, &mut raw)?;
            let mut values = vec![0.0f32; n];
            scales.dtype.to_f32(&raw, &mut values);
            Some((values, *block, scales.shape[1]))
        }
        View::Strided { row_step, col_step } => {
            return convert_strided(ck, src, dtype, *row_step, *col_step)
        }
        View::Mxfp4 { .. } => return copy_mxfp4(ck, src),
    };
    let block_scales = &block_scales;
    let in_row = (src.cols * src.entry.dtype.size()) as u64;
    let out_row = dtype.row_bytes(src.cols);
    let mut out = vec![0u8; src.rows * out_row];
    let rows_per = src.rows.div_ceil(threads.max(1)).max(1);
    let results: Vec<Result<(), QuantizeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(rows_per * out_row)
            .enumerate()
            .map(|(chunk, output)| {
                s.spawn(move || {
                    let first_row = chunk * rows_per;
                    let rows = output.len() / out_row;
                    let mut raw = vec![0u8; rows * in_row as usize];
                    ck.read(
                        &src.entry,
                        src.skip_bytes + first_row as u64 * in_row,
                        &mut raw,
                    )?;
                    let mut row = vec![0.0f32; src.cols];
                    for (r, (inp, outp)) in raw
                        .chunks_exact(in_row as usize)
                        .zip(output.chunks_exact_mut(out_row))
                        .enumerate()
                    {
                        src.entry.dtype.to_f32(inp, &mut row);
                        if let Some((scales, [b0, b1], per_row)) = block_scales {
                            let scale_row = &scales[(first_row + r) / b0 * per_row..][..*per_row];
                            for (c, v) in row.iter_mut().enumerate() {
                                *v *= scale_row[c / b1];
                            }
                        }
                        if let Some(col) = row.iter().position(|v| !v.is_finite()) {
                            return Err(QuantizeError::NonFinite {
                                tensor: src.name.clone(),
                                row: first_row + r,
                                col,
                                value: row[col],
                            });
                        }
                        encode_row(dtype, &row, outp);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("quantize worker panicked"))
            .collect()
    });
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(out)
}
