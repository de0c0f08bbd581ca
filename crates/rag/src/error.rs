//! The crate's error type.

/// What can go wrong while composing the parts of a RAG model.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The passage store or the vector index failed.
    #[error(transparent)]
    Index(#[from] rag_index::IndexError),
    /// The retriever failed (loading, tokenizing, encoding).
    #[error(transparent)]
    Retriever(#[from] rag_retriever::RetrieverError),
    /// The generator failed (loading, generating).
    #[error(transparent)]
    Generator(#[from] rag_generator::GeneratorError),
    /// A checkpoint or config could not be read.
    #[error(transparent)]
    Checkpoint(#[from] rag_hf::HfError),
    /// A loss refused its inputs.
    #[error(transparent)]
    Loss(#[from] rag_losses::LossError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config value this crate cannot use.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config file.
        path: std::path::PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A bad line of a data file.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file.
        path: std::path::PathBuf,
        /// The line (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The trainer failed.
    #[error(transparent)]
    Trainer(#[from] rag_trainer::TrainerError),
    /// Parts that do not fit together (e.g. an index narrower than the encoder's vectors).
    #[error("{0}")]
    Mismatch(String),
}

/// The crate's result type.
pub type Result<T, E = RagError> = std::result::Result<T, E>;
