//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while loading, tokenizing or generating.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// Reading a checkpoint or a config failed (missing tensor, shape mismatch, bad JSON…).
    #[error(transparent)]
    Checkpoint(#[from] rag_hf::HfError),
    /// A config value this crate cannot use.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config file (or `<in memory>`).
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The `tokenizer.json` (or `<in memory>`).
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// An input the model cannot take (a token id outside the vocabulary, a sequence longer than
    /// the position table, mismatched batch sizes…).
    #[error("input `{field}`: {message}")]
    Input {
        /// The offending input.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = GeneratorError> = std::result::Result<T, E>;

pub(crate) fn config_error(path: &std::path::Path, field: &'static str, message: impl Into<String>) -> GeneratorError {
    GeneratorError::Config { path: path.to_path_buf(), field, message: message.into() }
}

pub(crate) fn input_error(field: &'static str, message: impl Into<String>) -> GeneratorError {
    GeneratorError::Input { field, message: message.into() }
}
