//! End-to-end trainable retrieval-augmented generation: the crate users mean by "a RAG model".
//!
//! It composes [`rag_retriever`], [`rag_index`], [`rag_generator`] and [`rag_losses`], driven by
//! [`rag_trainer`]. This crate will hold (issue "rag"): `RagModel` (question → query vectors →
//! top-K passages and exact stored vectors → differentiable doc scores → generator on B·K rows →
//! loss), the RAG-Token, RAG-Sequence and RA-DIT training tasks, RAG-Token / RAG-Sequence
//! (thorough and fast) / REPLUG ensemble decoding with provenance, whole-model checkpoints and HF
//! RAG checkpoint loading, and the generated datasets of the embedded default.
//!
//! Today it holds [`index_store`] (a passage store encoded into a vector index by the retriever's
//! document encoder), [`HfRag`] (HF's RAG checkpoints: doc scores, generator logits and losses
//! from given contexts), RAG-Token decoding as a marginalizing [`RagTokenDecoder`] and
//! RAG-Sequence thorough decoding ([`rag_sequence_thorough`]).
//!
//! It picks no backend: the leaf (xtask, benches, tests) does.

mod decoding;
mod error;
mod hf_rag;
mod indexing;

pub use decoding::{RagTokenDecoder, RagTokenState, rag_sequence_fast, rag_sequence_thorough};
pub use error::{RagError, Result};
pub use hf_rag::{HfRag, HfRagConfig, Marginalization, hf_loss};
pub use indexing::index_store;

pub use rag_generator;
pub use rag_index;
pub use rag_losses;
pub use rag_retriever;
pub use rag_trainer;
