//! Reading JSON files with errors that name the file, line and column.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{HfError, Result};

/// Reads and parses a JSON file (a `config.json`, a sharded-checkpoint index, a
/// sentence-transformers module config).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| HfError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}
