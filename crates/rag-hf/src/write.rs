//! Writing tensors as a safetensors file, atomically.

use std::io::Write;
use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use crate::{HfError, Result};

/// Writes `tensors` (name, data) to `path` in the safetensors format that HF reads. F32, F64,
/// F16, BF16, I64 and I32 data keep their dtype. Written as [`write_atomic`] writes, so neither a crash nor
/// a power loss leaves a truncated checkpoint.
pub fn write_safetensors(path: &Path, tensors: &[(String, TensorData)]) -> Result<()> {
    let malformed = |message: String| HfError::Write { path: path.to_path_buf(), message };
    let views = tensors
        .iter()
        .map(|(name, data)| {
            let dtype = match data.dtype {
                DType::F32 => Dtype::F32,
                DType::F64 => Dtype::F64,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::I64 => Dtype::I64,
                DType::I32 => Dtype::I32,
                other => return Err(malformed(format!("tensor `{name}`: dtype {other:?} cannot be written"))),
            };
            let view = TensorView::new(dtype, data.shape.to_vec(), data.as_bytes())
                .map_err(|e| malformed(format!("tensor `{name}`: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    atomically(path, |tmp| safetensors::serialize_to_file(views, None, tmp).map_err(|e| malformed(e.to_string())))
}

/// Writes `bytes` to `path` atomically and durably: into a temporary file of its own (a unique
/// name in the same directory, so concurrent writers never share one), synced to disk, renamed
/// over `path`, and the directory synced after the rename. A crash or a power loss leaves the
/// old file or the new one, never a truncated one; a failed write (a full disk) leaves the old
/// file untouched and no temporary file, and the error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    atomically(path, |tmp| {
        let io = |source| HfError::Io { path: tmp.to_path_buf(), source };
        let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)
    })
}

/// Runs `write` on a fresh temporary file beside `path`, then syncs it, renames it over `path`
/// and syncs the directory. The temporary file is removed if anything fails.
fn atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
        move |source| HfError::Io { path: path.to_path_buf(), source }
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir).map_err(io(path))?;
    write(tmp.path())?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| HfError::Io { path: path.to_path_buf(), source: e.error })?;
    sync_dir(dir).map_err(io(dir))
}

/// Makes a rename in `dir` durable (POSIX: fsync the directory). Elsewhere a directory cannot
/// be opened for syncing, and the rename is as durable as the platform makes it.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) { std::fs::File::open(dir)?.sync_all() } else { Ok(()) }
}
