//! Answering with a model: [`answer`] (`RagModel::answer`: the decoding modes and the
//! provenance of every answer) over [`search`] (the RAG-Token decoder, and HF's RAG-Sequence
//! decoding of its own checkpoints).

pub(crate) mod answer;
pub(crate) mod search;
