//! Safetensors checkpoints: one file, or shards listed by `model.safetensors.index.json`,
//! memory-mapped so a multi-gigabyte checkpoint costs no copy until a tensor is read.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use serde::Deserialize;

use crate::json::read_json;
use crate::{HfError, Result};

/// The file name of a single-file checkpoint inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The file name of a sharded checkpoint's index inside a model directory.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Offset of the first data byte (8-byte length + JSON header).
    data_start: usize,
}

struct Entry {
    shard: usize,
    info: TensorInfo,
}

/// A safetensors checkpoint opened read-only: a file, or a model directory holding
/// `model.safetensors` or a sharded checkpoint (`model.safetensors.index.json` + shards).
pub struct Checkpoint {
    location: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
    /// Tensors already in memory ([`Checkpoint::from_tensors`]), with their shapes.
    memory: BTreeMap<String, (Vec<usize>, TensorData)>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("location", &self.location)
            .field("shards", &self.shards.len())
            .field("tensors", &(self.tensors.len() + self.memory.len()))
            .finish()
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, or a model directory (`model.safetensors`, else
    /// `model.safetensors.index.json` and the shards it names).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let single = path.join(WEIGHTS_FILE);
        let file = if !path.is_dir() {
            Some(path.to_path_buf())
        } else if single.is_file() {
            Some(single)
        } else {
            None
        };
        if let Some(file) = file {
            let (shard, tensors) = open_shard(&file, 0)?;
            return Ok(Self { location: file, shards: vec![shard], tensors, memory: BTreeMap::new() });
        }
        let index_path = path.join(WEIGHTS_INDEX_FILE);
        if !index_path.is_file() {
            let also = if path.join("pytorch_model.bin").exists() {
                " (it has pytorch_model.bin: convert it to safetensors first, e.g. with transformers' `save_pretrained(safe_serialization=True)`)"
            } else {
                ""
            };
            return Err(HfError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in the directory{also}"),
                ),
            });
        }
        let index: ShardIndex = read_json(&index_path)?;
        let mut files: Vec<&String> = index.weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            let (shard, mut entries) = open_shard(&path.join(file), i)?;
            tensors.append(&mut entries);
            shards.push(shard);
        }
        let mut names: Vec<_> = index.weight_map.iter().collect();
        names.sort();
        for (name, file) in names {
            let Some(entry) = tensors.get(name) else {
                return Err(HfError::Malformed {
                    path: index_path,
                    message: format!("it maps `{name}` to {file}, which does not hold that tensor"),
                });
            };
            if shards[entry.shard].path != path.join(file) {
                return Err(HfError::Malformed {
                    path: index_path,
                    message: format!("it maps `{name}` to {file}, but the tensor is in another shard"),
                });
            }
        }
        Ok(Self { location: index_path, shards, tensors, memory: BTreeMap::new() })
    }

    /// A checkpoint of tensors already in memory, by HF name (a model converted from another
    /// format, such as GGUF); `location` names its source in errors.
    pub fn from_tensors(location: impl Into<PathBuf>, tensors: Vec<(String, TensorData)>) -> Self {
        let memory = tensors.into_iter().map(|(name, data)| (name, (data.shape.to_vec(), data))).collect();
        Self { location: location.into(), shards: Vec::new(), tensors: BTreeMap::new(), memory }
    }

    /// The file (or the shard index) this checkpoint was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().chain(self.memory.keys()).map(String::as_str)
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.memory.contains_key(name)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match self.memory.get(name) {
            Some((shape, _)) => Some(shape.as_slice()),
            None => self.tensors.get(name).map(|e| e.info.shape.as_slice()),
        }
    }

    /// The file holding a tensor.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        if self.memory.contains_key(name) {
            return Some(&self.location);
        }
        self.tensors.get(name).map(|e| self.shards[e.shard].path.as_path())
    }

    /// Reads a tensor as row-major values: F32 and F64 as stored, F16 and BF16 widened to F32
    /// (exactly).
    pub fn read(&self, name: &str) -> Result<TensorData> {
        if let Some((_, data)) = self.memory.get(name) {
            return Ok(data.clone());
        }
        let entry = self.tensors.get(name).ok_or_else(|| self.missing(name, ""))?;
        let shard = &self.shards[entry.shard];
        let (begin, end) = entry.info.data_offsets;
        let bytes = &shard.map[shard.data_start + begin..shard.data_start + end];
        let shape = entry.info.shape.clone();
        let data = match entry.info.dtype {
            Dtype::F32 => TensorData::new(le_values(bytes, f32::from_le_bytes), shape),
            Dtype::F64 => TensorData::new(le_values(bytes, f64::from_le_bytes), shape),
            Dtype::F16 => TensorData::new(le_values(bytes, |b| half::f16::from_le_bytes(b).to_f32()), shape),
            Dtype::BF16 => TensorData::new(le_values(bytes, |b| half::bf16::from_le_bytes(b).to_f32()), shape),
            other => {
                return Err(HfError::UnsupportedDtype {
                    name: name.to_string(),
                    file: shard.path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(data)
    }

    /// The error for a tensor the model needs and the checkpoint lacks. `prefix` is the part of
    /// `name` that locates the model inside the checkpoint; the hint names a tensor with the same
    /// suffix under another prefix when there is one (the usual cause: a wrong prefix).
    pub fn missing(&self, name: &str, prefix: &str) -> HfError {
        let suffix = name.strip_prefix(prefix).unwrap_or(name);
        let hint = self.names().find(|k| k.ends_with(suffix) && k.len() > suffix.len()).map(|k| {
            let other = &k[..k.len() - suffix.len()];
            format!("the checkpoint has `{k}`: are the weights under prefix `{other}` instead of `{prefix}`?")
        });
        let hint = hint.or_else(|| {
            let sample: Vec<&str> = self.names().take(3).collect();
            (!sample.is_empty()).then(|| format!("its tensors are named like {sample:?}"))
        });
        HfError::MissingTensor { name: name.to_string(), location: self.location.clone(), hint }
    }
}

fn le_values<T, const N: usize>(bytes: &[u8], decode: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| decode(c.try_into().expect("chunks_exact yields N bytes"))).collect()
}

/// Maps one file and reads its header once; `index` is the shard's position, kept in its entries.
fn open_shard(path: &Path, index: usize) -> Result<(Shard, BTreeMap<String, Entry>)> {
    let io = |source| HfError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let map = map_file(&file).map_err(io)?;
    // `read_metadata` checks the header and that the tensors' offsets are contiguous, match their
    // dtypes and shapes, and end exactly at the end of the file; after it, slicing by
    // `data_offsets` cannot go out of bounds.
    let (header_len, metadata) = SafeTensors::read_metadata(&map)
        .map_err(|e| HfError::Malformed { path: path.to_path_buf(), message: e.to_string() })?;
    let entries =
        metadata.tensors().into_iter().map(|(name, info)| (name, Entry { shard: index, info: info.clone() })).collect();
    Ok((Shard { path: path.to_path_buf(), map, data_start: 8 + header_len }, entries))
}

/// Maps a checkpoint file read-only.
#[allow(unsafe_code)]
pub(crate) fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only. Checkpoints are not modified while a model loads from
    // them (the memmap2 contract every mmap-based reader relies on); all reads are slices whose
    // bounds `SafeTensors::read_metadata` validated against the mapping's length.
    unsafe { Mmap::map(file) }
}
