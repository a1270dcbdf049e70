//! Reading GGUF files (llama.cpp's format, versions 2 and 3), one file or a
//! split set (`NAME-00001-of-0000N.gguf`), without mapping or loading them:
//! each file's header, metadata and tensor directory are parsed once, with
//! every count, length and offset checked against the file's size before it
//! is used; tensors are then read with positional reads.
//!
//! ```text
//! "GGUF" u32 version  u64 n_tensors  u64 n_kv
//! n_kv ×      key: string, value type: u32, value
//! n_tensors × name: string, n_dims: u32, ne[n_dims]: u64 (ne[0] fastest),
//!             ggml type: u32, offset: u64 (from the data section)
//! padding to general.alignment (default 32), then the data section
//! string = u64 length + UTF-8 bytes; array = u32 element type + u64 count + elements
//! ```
//!
//! The submodules turn what is read here into mote's pieces: `blocks` (ggml's
//! weight blocks → mote rows), `config` (metadata → config.json terms),
//! `tokenizer` (`tokenizer.ggml.*` → tokenizer.json terms) and `tensors`
//! (which GGUF tensor, expert slice and row order each mote tensor is).
//! This module knows the container only, never a model family.

pub mod blocks;
pub mod config;
pub mod import;
pub mod tensors;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{io, QuantizeError};
pub use blocks::GgmlType;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type (u8 … u64).
    Uint(u64),
    /// Any signed integer type (i8 … i64).
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// string.
    Str(String),
    /// array (of one element type).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Uint(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            Value::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Which file of the set holds it.
    pub file: usize,
    /// Its ggml type.
    pub ggml_type: GgmlType,
    /// Dimensions, fastest first (`ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// Absolute byte offset in its file (checked: the data fits the file).
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// Rows of `ne[0]` elements in the whole tensor.
    pub fn rows(&self) -> u64 {
        self.ne[1..].iter().product()
    }

    /// The shape the way PyTorch writes it (slowest first), for messages.
    pub fn torch_shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An opened GGUF file or split set.
#[derive(Debug)]
pub struct Gguf {
    /// The files, in split order.
    pub paths: Vec<PathBuf>,
    files: Vec<File>,
    /// Metadata of the first file (the one holding the model's keys).
    pub metadata: BTreeMap<String, Value>,
    /// Every tensor of the set, by name.
    pub tensors: HashMap<String, TensorInfo>,
}

/// True for a path naming a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `NAME-00001-of-00003.gguf` → (`NAME`, 1, 3).
fn split_name(path: &Path) -> Option<(String, u32, u32)> {
    let stem = path.file_stem()?.to_str()?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (name, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 {
        return None;
    }
    Some((name.to_string(), no.parse().ok()?, count.parse().ok()?))
}

impl Gguf {
    /// Opens `path`; the first file of a split set opens the whole set
    /// (any other member is an error saying which file to give).
    pub fn open(path: &Path) -> Result<Gguf, QuantizeError> {
        let first = parse_file(path, 0)?;
        let declared = first.metadata.get("split.count").and_then(Value::as_u64);
        let from_name = split_name(path);
        let count = match (declared, &from_name) {
            (Some(n), _) => n,
            (None, Some((_, _, n))) => *n as u64,
            (None, None) => 1,
        };
        let no = first.metadata.get("split.no").and_then(Value::as_u64);
        if count > 1 && no.unwrap_or(from_name.as_ref().map_or(1, |s| s.1 as u64 - 1)) != 0 {
            return Err(gguf_err(
                path,
                0,
                format!("is part of a {count}-file split set but not its first file (open NAME-00001-of-{count:05}.gguf)"),
            ));
        }
        let mut paths = vec![path.to_path_buf()];
        let mut parsed = vec![first];
        if count > 1 {
            let (name, _, _) = from_name.ok_or_else(|| {
                gguf_err(
                    path,
                    0,
                    format!(
                        "split.count is {count} but the name is not NAME-00001-of-{count:05}.gguf"
                    ),
                )
            })?;
            if count > 9999 {
                return Err(gguf_err(
                    path,
                    0,
                    format!("split.count {count} is implausible"),
                ));
            }
            for i in 1..count as usize {
                let p = path.with_file_name(format!("{name}-{:05}-of-{count:05}.gguf", i + 1));
                let f = parse_file(&p, i)?;
                let no = f.metadata.get("split.no").and_then(Value::as_u64);
                if no.is_some_and(|n| n != i as u64) {
                    return Err(gguf_err(
                        &p,
                        0,
                        format!(
                            "split.no is {} but the file is part {} of {count}",
                            no.unwrap_or(0),
                            i + 1
                        ),
                    ));
                }
                paths.push(p);
                parsed.push(f);
            }
        }
        let mut tensors = HashMap::new();
        let mut files = Vec::new();
        let mut metadata = BTreeMap::new();
        for (i, f) in parsed.into_iter().enumerate() {
            for (name, info) in f.tensors {
                if tensors.contains_key(&name) {
                    return Err(gguf_err(
                        &paths[i],
                        0,
                        format!("tensor {name} appears twice in the set"),
                    ));
                }
                tensors.insert(name, info);
            }
            if i == 0 {
                metadata = f.metadata;
            }
            files.push(f.file);
        }
        if let Some(total) = metadata.get("split.tensors.count").and_then(Value::as_u64) {
            if total != tensors.len() as u64 {
                return Err(gguf_err(
                    path,
                    0,
                    format!(
                        "split.tensors.count is {total} but the {count} files hold {} tensors",
                        tensors.len()
                    ),
                ));
            }
        }
        Ok(Gguf {
            paths,
            files,
            metadata,
            tensors,
        })
    }

    /// Metadata value `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Reads `out.len()` bytes of tensor `t` from byte `skip` of its data.
    pub fn read(&self, t: &TensorInfo, skip: u64, out: &mut [u8]) -> Result<(), QuantizeError> {
        let path = &self.paths[t.file];
        if skip + out.len() as u64 > t.bytes {
            return Err(gguf_err(
                path,
                t.offset + skip,
                format!(
                    "read of {} bytes past the tensor's {} bytes",
                    out.len(),
                    t.bytes
                ),
            ));
        }
        self.files[t.file]
            .read_exact_at(out, t.offset + skip)
            .map_err(io(path))
    }
}

/// A malformed-file error at `offset` of `path`.
pub(crate) fn gguf_err(path: &Path, offset: u64, message: String) -> QuantizeError {
    QuantizeError::Gguf {
        path: path.to_path_buf(),
        offset,
        message,
    }
}

/// Longest metadata string read (chat templates are kilobytes).
const MAX_STRING: u64 = 64 << 20;

struct ParsedFile {
    file: File,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<(String, TensorInfo)>,
}

/// Counts the bytes consumed so every error can say where it happened and
/// every length can be checked against what is left of the file.
struct Cursor<'a> {
    r: BufReader<&'a File>,
    path: &'a Path,
    pos: u64,
    len: u64,
}

impl Cursor<'_> {
    fn err(&self, message: String) -> QuantizeError {
        gguf_err(self.path, self.pos, message)
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], QuantizeError> {
        if self.left() < N as u64 {
            return Err(self.err(format!("file ends inside {what}")));
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(io(self.path))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, QuantizeError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, QuantizeError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, QuantizeError> {
        let n = self.u64(what)?;
        if n > self.left() {
            return Err(self.err(format!(
                "{what}: string of {n} bytes past the end of the file"
            )));
        }
        if n > MAX_STRING {
            return Err(self.err(format!("{what}: a string of {n} bytes is implausible")));
        }
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b).map_err(io(self.path))?;
        self.pos += n;
        String::from_utf8(b).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value, QuantizeError> {
        Ok(match ty {
            0 => Value::Uint(u8::from_le_bytes(self.bytes(what)?) as u64),
            1 => Value::Int(i8::from_le_bytes(self.bytes(what)?) as i64),
            2 => Value::Uint(u16::from_le_bytes(self.bytes(what)?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.bytes(what)?) as i64),
            4 => Value::Uint(self.u32(what)? as u64),
            5 => Value::Int(i32::from_le_bytes(self.bytes(what)?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes(what)?) as f64),
            7 => match u8::from_le_bytes(self.bytes(what)?) {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b}"))),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(self.err(format!("{what}: array of arrays")));
                }
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte: a count larger
                // than the rest of the file is corrupt, not a big array.
                if n > self.left() {
                    return Err(self.err(format!(
                        "{what}: array of {n} elements past the end of the file"
                    )));
                }
                // Grown as read: a corrupt count fails at the file's end, not
                // in one huge allocation.
                let mut a = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    a.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(a)
            }
            10 => Value::Uint(self.u64(what)?),
            11 => Value::Int(i64::from_le_bytes(self.bytes(what)?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes(what)?)),
            t => return Err(self.err(format!("{what}: unknown metadata value type {t}"))),
        })
    }
}

fn parse_file(path: &Path, index: usize) -> Result<ParsedFile, QuantizeError> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut c = Cursor {
        r: BufReader::with_capacity(1 << 16, &file),
        path,
        pos: 0,
        len,
    };
    let magic = c.bytes::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(gguf_err(
            path,
            0,
            format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
        ));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(gguf_err(
            path,
            4,
            "GGUF version 1 (32-bit counts) is not read; convert it again with a current llama.cpp"
                .into(),
        )),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(gguf_err(
                path,
                4,
                "a big-endian GGUF; mote reads little-endian files".into(),
            ))
        }
        v => {
            return Err(gguf_err(
                path,
                4,
                format!("GGUF version {v} (mote reads 2 and 3)"),
            ))
        }
    }
    let n_tensors = c.u64("the tensor count")?;
    let n_kv = c.u64("the metadata count")?;
    // A tensor entry takes at least 24 bytes and a key/value at least 12.
    if n_tensors > c.left() / 24 || n_kv > c.left() / 12 {
        return Err(c.err(format!(
            "{n_tensors} tensors and {n_kv} metadata entries cannot fit in a file of {len} bytes"
        )));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key {i}"))?;
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(c.err(format!("metadata key {key} appears twice")));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let mut infos = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor {i}'s name"))?;
        let n_dims = c.u32(&name)?;
        if !(1..=4).contains(&n_dims) {
            return Err(c.err(format!(
                "tensor {name}: {n_dims} dimensions (1 to 4 expected)"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&name)?);
        }
        let ty = c.u32(&name)?;
        let offset = c.u64(&name)?;
        infos.push((name, ne, ty, offset, c.pos));
    }
    let data_start = c.pos.next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, ne, ty, offset, at) in infos {
        let err = |message: String| gguf_err(path, at, format!("tensor {name}: {message}"));
        let ggml_type =
            GgmlType::from_id(ty).ok_or_else(|| err(format!("unknown ggml type {ty}")))?;
        if ne.contains(&0) {
            return Err(err(format!("a zero dimension in {ne:?}")));
        }
        let elems = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = elems.and_then(|n| ggml_type.bytes_for(ne[0], n / ne[0]));
        let Some(bytes) = bytes else {
            return Err(err(format!(
                "rows of {1} values ({0} of them) are not whole {2} blocks of {3}",
                elems.map_or(0, |n| n / ne[0]),
                ne[0],
                ggml_type.name(),
                ggml_type.block_len()
            )));
        };
        if offset % alignment != 0 {
            return Err(err(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let start = data_start
            .checked_add(offset)
            .filter(|s| s.checked_add(bytes).is_some_and(|e| e <= len));
        let Some(start) = start else {
            return Err(err(format!(
                "{bytes} bytes at data offset {offset} (file offset {}) run past the end of the file ({len} bytes)",
                data_start.saturating_add(offset)
            )));
        };
        tensors.push((
            name,
            TensorInfo {
                file: index,
                ggml_type,
                ne,
                offset: start,
                bytes,
            },
        ));
    }
    Ok(ParsedFile {
        file,
        metadata,
        tensors,
    })
}
