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
    /// An argument a function cannot take (no questions, mismatched lengths, a batch size of 0,
    /// a question without the gold id its stage reads…); `field` names it.
    #[error("{field}: {message}")]
    Input {
        /// The argument.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A passage store and an index that were not built from the same corpus, or a store that
    /// cannot serve (an id it lacks, no passages at all).
    #[error("{store}: {message}")]
    Corpus {
        /// The passage store file.
        store: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Vectors of another width than the encoder makes.
    #[error("the index holds {index}-dimensional vectors, the {encoder} makes {dim}")]
    Dimension {
        /// The index's width.
        index: usize,
        /// Which encoder.
        encoder: &'static str,
        /// The encoder's width.
        dim: usize,
    },
    /// A tokenizer with more tokens than the model it feeds has embeddings for.
    #[error("the {model} tokenizer {tokenizer} has {tokens} tokens, the {model} only {embeddings}")]
    Vocabulary {
        /// `generator` or `retriever`.
        model: &'static str,
        /// The tokenizer file.
        tokenizer: std::path::PathBuf,
        /// Its vocabulary.
        tokens: usize,
        /// The model's embedding rows.
        embeddings: usize,
    },
    /// A name that is none of the known ones (a recipe, a precision).
    #[error("unknown {what} `{given}`: expected {expected}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        given: String,
        /// The known names.
        expected: String,
    },
    /// A failure inside a named part of a larger job (a stage of an experiment, its test
    /// evaluation, saving its model).
    #[error("{context}: {source}")]
    Context {
        /// Where it happened.
        context: String,
        /// The failure.
        source: Box<RagError>,
    },
}

pub(crate) fn input(field: &'static str, message: impl Into<String>) -> RagError {
    RagError::Input { field, message: message.into() }
}

/// Names the part of a larger job an error happened in ([`RagError::Context`]).
pub(crate) trait WithContext<T> {
    fn within(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<RagError>> WithContext<T> for std::result::Result<T, E> {
    fn within(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| RagError::Context { context: context(), source: Box::new(e.into()) })
    }
}

/// The crate's result type.
pub type Result<T, E = RagError> = std::result::Result<T, E>;
