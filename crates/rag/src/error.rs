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
    /// Parts that do not fit together (e.g. an index narrower than the encoder's vectors).
    #[error("{0}")]
    Mismatch(String),
}

/// The crate's result type.
pub type Result<T, E = RagError> = std::result::Result<T, E>;
