//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while loading, tokenizing or encoding.
#[derive(Debug, thiserror::Error)]
pub enum RetrieverError {
    /// Reading a checkpoint or a config failed (missing tensor, shape mismatch, bad JSON…).
    #[error(transparent)]
    Checkpoint(#[from] rag_hf::HfError),
    /// A config value the encoder cannot use.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config file (or `<in memory>`).
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A model directory whose layout is not one this crate reads.
    #[error("{path}: {message}")]
    Layout {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong or missing.
        message: String,
    },
    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// An input batch the model cannot take (a token id outside the vocabulary, a sequence
    /// longer than the position table…).
    #[error("input `{field}`: {message}")]
    Input {
        /// The offending input.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The consumer of encoded passages (e.g. an index) refused a batch.
    #[error("passages {first_id}..={last_id}: {message}")]
    Sink {
        /// The first passage id of the batch.
        first_id: u64,
        /// The last passage id of the batch.
        last_id: u64,
        /// The consumer's error.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = RetrieverError> = std::result::Result<T, E>;
