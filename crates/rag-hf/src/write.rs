//! Writing tensors as a safetensors file, atomically.

use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use crate::{HfError, Result};

/// Writes `tensors` (name, data) to `path` in the safetensors format that HF reads. F32, F64,
/// F16 and BF16 data keep their dtype. The file is written next to `path` and renamed into
/// place, so a crash never leaves a truncated checkpoint.
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
                other => return Err(malformed(format!("tensor `{name}`: dtype {other:?} cannot be written"))),
            };
            let view = TensorView::new(dtype, data.shape.to_vec(), data.as_bytes())
                .map_err(|e| malformed(format!("tensor `{name}`: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| malformed(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })
}

/// Writes `bytes` to `path` atomically: to a temporary file beside it, then renamed over it, so a
/// crash leaves the old file or the new one, never a truncated one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).map_err(|source| HfError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })
}
