//! Reading the fixture format.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What can go wrong while reading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The file could not be read.
    #[error("cannot read fixture {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON or not in the expected layout.
    #[error("fixture {path} is malformed at line {line}, column {column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde's description.
        message: String,
    },
    /// A field is inconsistent (an array whose data does not fill its shape, an unknown kind…).
    #[error("fixture {path}, case `{case}`, field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The case's name.
        case: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// An array of the fixture format: `{"shape": [d0, d1, ...], "data": [flat, row-major]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Array<T> {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<T>,
}

impl<T> Array<T> {
    /// Checks that `data` fills `shape` exactly and that the rank is `rank`.
    pub fn validate(&self, rank: usize) -> Result<(), String> {
        let expected: usize = self.shape.iter().product();
        if self.shape.len() != rank {
            Err(format!("expected rank {rank}, found shape {:?}", self.shape))
        } else if expected != self.data.len() {
            Err(format!("shape {:?} needs {expected} values, found {}", self.shape, self.data.len()))
        } else {
            Ok(())
        }
    }

    /// The shape as a fixed-size array (after [`Array::validate`]).
    pub fn dims<const D: usize>(&self) -> [usize; D] {
        let mut dims = [0; D];
        dims.copy_from_slice(&self.shape);
        dims
    }
}

/// Reads and parses a JSON fixture file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| FixtureError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}
