//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while reading a HuggingFace checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A GGUF file that is damaged, of another version, or holds a tensor this build cannot
    /// dequantize.
    #[error("{path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the byte offset, metadata key or tensor name).
        message: String,
    },
    /// A `tokenizer.json` that the `tokenizers` crate cannot read.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A JSON file (config, sharded-checkpoint index) is not valid JSON or lacks a field.
    #[error("{path}:{line}:{column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde's description.
        message: String,
    },
    /// A safetensors file whose header is malformed or whose offsets leave the file.
    #[error("{path} is not a valid safetensors file: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing a checkpoint failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model needs a tensor the checkpoint does not have.
    #[error("missing tensor `{name}` in {location}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingTensor {
        /// The full tensor name looked up.
        name: String,
        /// The checkpoint's file or directory.
        location: PathBuf,
        /// A near miss, e.g. the same name under another prefix.
        hint: Option<String>,
    },
    /// A tensor whose shape does not fit the model's config.
    #[error("tensor `{name}` in {file}: the model expects shape {expected:?}, the checkpoint has {found:?}")]
    ShapeMismatch {
        /// The tensor's name in the checkpoint.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
    },
    /// A tensor stored in a dtype that is not a float this crate converts (F64, F32, F16, BF16).
    #[error("tensor `{name}` in {file} has dtype {dtype}; only F64, F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        /// The tensor's name.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The stored dtype.
        dtype: String,
    },
}

/// The crate's result type.
pub type Result<T, E = HfError> = std::result::Result<T, E>;
