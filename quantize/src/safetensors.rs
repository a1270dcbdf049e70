//! Reading safetensors checkpoints, single-file or sharded, without mapping
//! or loading whole files: each shard's JSON header is parsed once, then
//! tensors are read with positional reads, one at a time.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use serde_json::Value;

use crate::error::{io, QuantizeError};

/// Element types read from checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDType {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// FP8 E4M3 (`float8_e4m3fn`: bias 7, no infinities, `S.1111.111` NaN);
    /// block-scaled by a companion `*_scale_inv` tensor.
    F8E4M3,
    /// Raw bytes (MXFP4 blocks and scales); not a float type.
    U8,
}

impl SourceDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SourceDType::F32 => 4,
            SourceDType::F16 | SourceDType::BF16 => 2,
            SourceDType::F8E4M3 | SourceDType::U8 => 1,
        }
    }

    /// True for the float types weights are converted from.
    pub fn is_float(self) -> bool {
        self != SourceDType::U8
    }

    /// Converts little-endian elements to f32 (a byte to its value).
    pub fn to_f32(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            SourceDType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            SourceDType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            SourceDType::BF16 => {
                // bf16 is the top half of an f32: exact, NaN stays NaN.
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                }
            }
            SourceDType::F8E4M3 => {
                for (o, &b) in out.iter_mut().zip(bytes) {
                    *o = e4m3_to_f32(b);
                }
            }
            SourceDType::U8 => {
                for (o, &b) in out.iter_mut().zip(bytes) {
                    *o = b as f32;
                }
            }
        }
    }
}

/// Decodes one FP8 E4M3 (`fn`) value: exponent bias 7, subnormals below
/// exponent 1, and `0x7f` / `0xff` NaN (no infinities).
fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0x0f, b & 0x07);
    if e == 0x0f && m == 0x07 {
        return f32::NAN;
    }
    let magnitude = match e {
        0 => m as f32 / 8.0 * (2.0f32).powi(-6),
        _ => (1.0 + m as f32 / 8.0) * (2.0f32).powi(e as i32 - 7),
    };
    sign * magnitude
}

/// One tensor in a shard.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Index of the shard file in [`Checkpoint::files`].
    pub file: usize,
    /// Element type.
    pub dtype: SourceDType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte in the shard.
    pub offset: u64,
}

/// The tensors of a checkpoint folder, by name.
#[derive(Debug)]
pub struct Checkpoint {
    /// Shard paths and open handles.
    pub files: Vec<(PathBuf, File)>,
    /// Every tensor by its checkpoint name.
    pub tensors: HashMap<String, TensorEntry>,
}

/// Largest safetensors JSON header accepted (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100 << 20;

impl Checkpoint {
    /// Opens `model.safetensors.index.json` (sharded) or `model.safetensors` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, QuantizeError> {
        let index = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let json: Value =
                serde_json::from_str(&text).map_err(|source| QuantizeError::Json {
                    path: index.clone(),
                    source,
                })?;
            let map = json
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| QuantizeError::Safetensors {
                    path: index.clone(),
                    message: "no \"weight_map\" object".into(),
                })?;
            let mut names: Vec<&str> = Vec::new();
            for file in map.values() {
                let file = file.as_str().ok_or_else(|| QuantizeError::Safetensors {
                    path: index.clone(),
                    message: "weight_map values must be file names".into(),
                })?;
                if Path::new(file).is_absolute() || file.split(['/', '\\']).any(|c| c == "..") {
                    return Err(QuantizeError::Safetensors {
                        path: index.clone(),
                        message: format!("shard {file:?} is outside the checkpoint folder"),
                    });
                }
                if !names.contains(&file) {
                    names.push(file);
                }
            }
            names.sort_unstable();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(QuantizeError::Io {
                    path: single,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no model.safetensors or model.safetensors.index.json in the folder",
                    ),
                });
            }
            vec![single]
        };
        let mut ck = Checkpoint {
            files: Vec::new(),
            tensors: HashMap::new(),
        };
        for path in shards {
            ck.add_shard(path)?;
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<(), QuantizeError> {
        use std::os::unix::fs::FileExt;
        let file = File::open(&path).map_err(io(&path))?;
        let file_len = file.metadata().map_err(io(&path))?.len();
        let bad = |message: String| QuantizeError::Safetensors {
            path: path.clone(),
            message,
        };
        let mut len = [0u8; 8];
        if file_len < 8 {
            return Err(bad(format!(
                "file is {file_len} bytes, too short for a safetensors header"
            )));
        }
        file.read_exact_at(&mut len, 0).map_err(io(&path))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
            return Err(bad(format!(
                "header length {header_len} does not fit the file ({file_len} bytes)"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, 8).map_err(io(&path))?;
        let json: Value =
            serde_json::from_slice(&header).map_err(|source| QuantizeError::Json {
                path: path.clone(),
                source,
            })?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_start = 8 + header_len;
        let file_index = self.files.len();
        for (name, info) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype_str = info.get("dtype").and_then(Value::as_str).unwrap_or("?");
            let dtype = match dtype_str {
                "F32" => SourceDType::F32,
                "F16" => SourceDType::F16,
                "BF16" => SourceDType::BF16,
                "U8" => SourceDType::U8,
                "F8_E4M3" => SourceDType::F8E4M3,
                other => {
                    return Err(QuantizeError::DType {
                        tensor: name.clone(),
                        found: other.to_string(),
                    })
                }
            };
            let shape: Vec<usize> = info
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
                .ok_or_else(|| bad(format!("tensor {name}: missing or bad \"shape\"")))?;
            let offsets: Vec<u64> = info
                .get("data_offsets")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_u64).collect())
                .filter(|v: &Vec<u64>| v.len() == 2)
                .ok_or_else(|| bad(format!("tensor {name}: missing or bad \"data_offsets\"")))?;
            let (begin, end) = (offsets[0], offsets[1]);
            let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let want = elems.and_then(|n| n.checked_mul(dtype.size() as u64));
            if begin > end || Some(end - begin) != want || data_start + end > file_len {
                return Err(bad(format!(
                    "tensor {name}: data_offsets {begin}..{end} do not match shape {shape:?} of {dtype_str} \
                     within the file ({file_len} bytes)"
                )));
            }
            self.tensors.insert(
                name.clone(),
                TensorEntry {
                    file: file_index,
                    dtype,
                    shape,
                    offset: data_start + begin,
                },
            );
        }
        self.files.push((path, file));
        Ok(())
    }

    /// Reads `len` bytes of tensor `entry` starting `skip` bytes into it.
    pub fn read(
        &self,
        entry: &TensorEntry,
        skip: u64,
        dst: &mut [u8],
    ) -> Result<(), QuantizeError> {
        use std::os::unix::fs::FileExt;
        let (path, file) = &self.files[entry.file];
        let len = entry.shape.iter().product::<usize>() as u64 * entry.dtype.size() as u64;
        if skip + dst.len() as u64 > len {
            return Err(QuantizeError::Safetensors {
                path: path.clone(),
                message: format!(
                    "read of {} bytes at {skip} past the end of a {len}-byte tensor",
                    dst.len()
                ),
            });
        }
        file.read_exact_at(dst, entry.offset + skip)
            .map_err(io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_normals_subnormals_and_nan() {
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0); // the largest finite value
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9)); // the smallest subnormal
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6)); // the smallest normal
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
    }
}
