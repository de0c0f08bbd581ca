//! GGUF, llama.cpp's model file (versions 2 and 3; ggml's `docs/gguf.md`): a header, typed
//! metadata, a tensor table, then the aligned tensor data, memory-mapped here and dequantized to
//! f32 on read.
//!
//! Every count and offset is checked against the bytes that remain before anything is allocated,
//! so a damaged or hostile file is an error naming the field (and the tensor), never a panic or
//! an allocation its size does not justify.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use memmap2::Mmap;

use crate::quant::{GgmlType, dequantize};
use crate::{HfError, Result};

/// The first four bytes of a GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string` (UTF-8).
    String(String),
    /// `array` of one type.
    Array(Vec<GgufValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml's dimensions, fastest first (`[in, out]` for a PyTorch `[out, in]` weight).
    pub dims: Vec<u64>,
    /// The storage type.
    pub kind: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl GgufTensor {
    /// The shape in row-major order (ggml's dimensions reversed): what PyTorch calls it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file opened read-only and memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensor>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A bounds-checked little-endian reader over the mapped bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn fail(&self, what: &str) -> HfError {
        HfError::Gguf { path: self.path.to_path_buf(), message: format!("at byte {}: {what}", self.pos) }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(self.fail(&format!("{what}: needs {n} bytes, the file ends after {}", self.remaining()))),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_size` bytes long: refused when the rest of the file
    /// cannot hold that many.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) if n.checked_mul(min_size).is_some_and(|b| b <= self.remaining()) => Ok(n),
            _ => Err(self.fail(&format!("{what} {n}: the {} bytes left cannot hold that many", self.remaining()))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| self.fail(&format!("{what}: invalid UTF-8 ({e})")))
    }

    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<GgufValue> {
        Ok(match kind {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(key)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.fail(&format!("metadata `{key}`: bool byte {b}"))),
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth > 0 {
                    return Err(self.fail(&format!("metadata `{key}`: nested arrays are not part of GGUF")));
                }
                let inner = self.u32(key)?;
                let min = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => return Err(self.fail(&format!("metadata `{key}`: array of unknown type {inner}"))),
                };
                let n = self.count(key, min)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.value(inner, key, depth + 1)?);
                }
                GgufValue::Array(values)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.fail(&format!("metadata `{key}`: unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and checks a `.gguf` file: magic, version (2 or 3), metadata, the tensor table
    /// (types, dimensions, offsets inside the file, no overlaps).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| HfError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // Read-only and memory-mapped as safetensors files are; every access below is bounds-checked.
        let map = crate::checkpoint::map_file(&file).map_err(io)?;
        let mut r = Reader { bytes: &map, pos: 0, path };
        if r.take(4, "magic").ok() != Some(GGUF_MAGIC.as_slice()) {
            return Err(HfError::Gguf {
                path: path.to_path_buf(),
                message: "not a GGUF file (no `GGUF` magic)".into(),
            });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.fail(&format!("GGUF version {version}: this build reads versions 2 and 3")));
        }
        // A tensor entry is at least 8 (name length) + 4 (dims) + 8 (a dim) + 4 (type) + 8 (offset).
        let n_tensors = r.count("tensor count", 32)?;
        // A metadata entry is at least 8 (key length) + 4 (type) + 1 (value).
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let kind = r.u32(&key)?;
            let value = r.value(kind, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.fail(&format!("metadata `{key}` appears twice")));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)? as usize;
            if !(1..=4).contains(&n_dims) {
                return Err(r.fail(&format!("tensor `{name}`: {n_dims} dimensions (ggml has 1 to 4)")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            let kind_id = r.u32(&name)?;
            let kind = GgmlType::from_id(kind_id)
                .ok_or_else(|| r.fail(&format!("tensor `{name}`: unknown ggml type {kind_id}")))?;
            let offset = r.u64(&name)?;
            tensors.push(GgufTensor { name, dims, kind, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(r.fail(&format!("general.alignment {v:?}: not a power of two up to 1 MiB"))),
            },
        };
        let data_start = r.pos.next_multiple_of(alignment);
        let data_len = map.len().saturating_sub(data_start) as u64;
        let mut spans = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let fail = |message: String| HfError::Gguf {
                path: path.to_path_buf(),
                message: format!("tensor `{}`: {message}", t.name),
            };
            let len = t
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| fail("too many elements".into()))?;
            let block = t.kind.block_len() as u64;
            if t.dims[0] % block != 0 {
                return Err(fail(format!(
                    "{:?} stores blocks of {block}, and its first dimension is {}",
                    t.kind, t.dims[0]
                )));
            }
            let bytes =
                (len / block).checked_mul(t.kind.block_bytes() as u64).ok_or_else(|| fail("too large".into()))?;
            let end = t.offset.checked_add(bytes).filter(|&e| e <= data_len);
            if t.offset % alignment as u64 != 0 || end.is_none() {
                return Err(fail(format!(
                    "data at offset {} ({bytes} bytes) does not lie aligned inside the file's {data_len} data bytes",
                    t.offset
                )));
            }
            spans.push((t.offset, t.offset + bytes, t.name.as_str()));
        }
        spans.sort();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(HfError::Gguf {
                    path: path.to_path_buf(),
                    message: format!("tensors `{}` and `{}` overlap", pair[0].2, pair[1].2),
                });
            }
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(HfError::Gguf {
                path: path.to_path_buf(),
                message: format!("tensor `{}` appears twice", twice[0]),
            });
        }
        Ok(Self { path: path.to_path_buf(), map, version, metadata, tensors, data_start })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata entry.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// One metadata entry.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor table.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    /// The tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Tensor `name` dequantized to f32, shaped row-major ([`GgufTensor::shape`]). A type this
    /// build cannot dequantize is an error naming the tensor and the type.
    pub fn dequantize(&self, name: &str) -> Result<TensorData> {
        let t = self
            .tensor(name)
            .ok_or_else(|| HfError::Gguf { path: self.path.clone(), message: format!("no tensor `{name}`") })?;
        let len = t.len() as usize;
        let bytes = len / t.kind.block_len() * t.kind.block_bytes();
        let start = self.data_start + t.offset as usize;
        let values = dequantize(t.kind, &self.map[start..start + bytes], len).map_err(|message| HfError::Gguf {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {message}"),
        })?;
        Ok(TensorData::new(values, t.shape()))
    }
}

/// A tensor for [`write_gguf`]: its name, type, ggml dimensions (fastest first) and its data
/// already in that type's layout.
#[derive(Debug, Clone)]
pub struct GgufTensorData {
    /// The name.
    pub name: String,
    /// The storage type.
    pub kind: GgmlType,
    /// ggml's dimensions, fastest first.
    pub dims: Vec<u64>,
    /// The bytes, `len / block_len · block_bytes` of them.
    pub bytes: Vec<u8>,
}

fn put_value(out: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => out.push(*v),
        GgufValue::I8(v) => out.extend(v.to_le_bytes()),
        GgufValue::U16(v) => out.extend(v.to_le_bytes()),
        GgufValue::I16(v) => out.extend(v.to_le_bytes()),
        GgufValue::U32(v) => out.extend(v.to_le_bytes()),
        GgufValue::I32(v) => out.extend(v.to_le_bytes()),
        GgufValue::F32(v) => out.extend(v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        GgufValue::Array(values) => {
            let inner = values.first().map_or(4, value_type);
            out.extend(inner.to_le_bytes());
            out.extend((values.len() as u64).to_le_bytes());
            for v in values {
                put_value(out, v);
            }
        }
        GgufValue::U64(v) => out.extend(v.to_le_bytes()),
        GgufValue::I64(v) => out.extend(v.to_le_bytes()),
        GgufValue::F64(v) => out.extend(v.to_le_bytes()),
    }
}

fn value_type(value: &GgufValue) -> u32 {
    match value {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

/// Writes a GGUF version 3 file (alignment 32), atomically: for tests, fixtures and conversions.
pub fn write_gguf(path: &Path, metadata: &[(&str, GgufValue)], tensors: &[GgufTensorData]) -> Result<()> {
    const ALIGN: usize = 32;
    let mut out = Vec::new();
    out.extend(GGUF_MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_value(&mut out, &GgufValue::String(key.to_string()));
        out.extend(value_type(value).to_le_bytes());
        put_value(&mut out, value);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_value(&mut out, &GgufValue::String(t.name.clone()));
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.kind.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = (offset + t.bytes.len()).next_multiple_of(ALIGN);
    }
    out.resize(out.len().next_multiple_of(ALIGN), 0);
    for t in tensors {
        out.extend(&t.bytes);
        out.resize(out.len().next_multiple_of(ALIGN), 0);
    }
    crate::write_atomic(path, &out)
}
