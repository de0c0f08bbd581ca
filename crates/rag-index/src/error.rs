//! The crate's error type.

use std::path::PathBuf;

/// Everything that can be wrong with a corpus, an index file, a vector batch or a query.
///
/// Every variant says where: the file and line of a malformed input record, the file and field of a
/// corrupt index, the row and column of a non-finite vector component. Inputs are validated before
/// any bytes reach usearch's C++ code, so bad input is an `Err`, never a crash.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// An I/O operation on a named file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file that was being read or written.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record of a corpus file (JSONL or TSV) could not be parsed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
    /// A corpus names the same passage id twice.
    #[error("{path}:{line}: duplicate passage id {id} (first stored as passage #{first_row})")]
    DuplicatePassage {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number of the second occurrence.
        line: u64,
        /// The repeated id.
        id: u64,
        /// 0-based position in the store of the first passage with this id.
        first_row: u64,
    },
    /// A file the crate wrote is truncated, corrupted, of another kind, or from another format version.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found wrong (field name and value, or the checksum mismatch).
        message: String,
    },
    /// A vector or query batch does not have the index's width.
    #[error("{what}: {found} values is not a whole number of {dim}-dimensional vectors{detail}")]
    Width {
        /// Which argument (`vectors`, `queries`).
        what: &'static str,
        /// The index's dimension.
        dim: usize,
        /// The number of f32 values that were passed.
        found: usize,
        /// Extra context (the number of ids the batch should match), or empty.
        detail: String,
    },
    /// Two things that must have the same dimension do not.
    #[error("{what}: dimension {found}, expected {expected}")]
    Dimension {
        /// What was being combined (a loaded file, an fvecs record).
        what: String,
        /// The expected dimension.
        expected: usize,
        /// The dimension that was found.
        found: usize,
    },
    /// A vector holds a NaN or an infinity, which would poison every inner product with it.
    #[error("{what}: row {row} (id {id}) component {column} is {value}, vectors must be finite")]
    NonFinite {
        /// Which argument (`vectors`, `queries`).
        what: &'static str,
        /// 0-based row in the batch.
        row: usize,
        /// The row's id, or the row number for queries.
        id: u64,
        /// 0-based component.
        column: usize,
        /// The offending value.
        value: f32,
    },
    /// A vector cannot be stored under the index's metric or quantization (a zero vector under the
    /// cosine metric, a component outside what i8 storage represents).
    #[error("vectors: row {row} (id {id}) {reason}")]
    Unrepresentable {
        /// 0-based row in the batch.
        row: usize,
        /// The row's id.
        id: u64,
        /// Why it cannot be stored.
        reason: String,
    },
    /// `add` was given an id that the index already holds, or the same id twice.
    #[error("id {id} is already in the index (use `update` to replace its vector)")]
    IdExists {
        /// The id.
        id: u64,
    },
    /// An id the index reserves (`NO_ID`, the padding of search results) was passed.
    #[error("id {id} is reserved as the padding id of search results")]
    ReservedId {
        /// The id.
        id: u64,
    },
    /// A configuration value is outside its domain.
    #[error("invalid option `{field}` = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        field: &'static str,
        /// The value that was given, formatted.
        value: String,
        /// What the value must satisfy.
        reason: String,
    },
    /// usearch reported an error (after this crate's own validation passed).
    #[error("usearch: {0}")]
    Usearch(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), message: message.into() }
    }
}

/// Wraps an error of usearch's C++ side (`cxx::Exception`, which this crate does not name).
pub(crate) fn usearch_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Usearch(e.to_string())
}

/// The crate's result type.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
