//! End-to-end trainable retrieval-augmented generation: the crate users mean by "a RAG model".
//!
//! It composes [`rag_retriever`], [`rag_index`], [`rag_generator`] and [`rag_losses`]:
//!
//! - [`RagModel`]: question text → query vectors → index top-K passages and their exact stored
//!   vectors ([`Knowledge`]) → differentiable doc scores `q·dᵀ` → generator inputs built from the
//!   passages ([`ContextFormat`]: HF's `title / text // question` for BART, RA-DIT's
//!   `Background: …` prompt for a decoder-only LM) → generator on the `B·K` rows → the loss the
//!   [`RagConfig`] names ([`RagLoss`]: RAG-Token, RAG-Sequence, RA-DIT LM fine-tuning, LSR).
//!   Gradients reach the generator and the query encoder, and the document encoder only when
//!   [`RagConfig::train_document_encoder`] re-encodes the retrieved passages in the step.
//! - [`RagModel::answer`]: decoding ([`DecodeMode`]: RAG-Token, or REPLUG / RA-DIT ensemble
//!   decoding for a decoder-only LM; RAG-Sequence thorough and fast) with the [`Provenance`] of
//!   every answer: passage ids, titles, prior and posterior, per token for RAG-Token.
//! - [`RagModel::save`] / [`RagModel::load`]: whole-model checkpoints in one directory.
//! - [`HfRag`]: HF's RAG checkpoints (`RagTokenForGeneration` layout), with HF's losses and
//!   decoding ([`RagTokenDecoder`], [`rag_sequence_thorough`], [`rag_sequence_fast`]).
//! - [`index_store`] / [`refresh_index`]: a passage store encoded into a vector index by the
//!   document encoder, and re-encoded in place after the encoder changed.
//! - Training: [`Recipe`] (RAG-Token, RAG-Sequence, RA-DIT LM fine-tuning, RA-DIT LSR: loss and
//!   parameter groups) and [`RagTask`], the [`rag_trainer::TrainTask`] of a model over live
//!   [`Knowledge`]; [`evaluate`] (recall@k, exact match, F1; retrieved, closed-book or gold
//!   passages) and the [`Bm25`] baseline; [`QaExample`] files
//!   ([`read_qa_jsonl`]); the embedded task ([`SyntheticTask`], [`EmbeddedSetup`]).
//! - [`experiment`]: a whole run (warm-ups, the recipe, the ablation and baselines) from an
//!   [`experiment::ExperimentConfig`] to a typed [`experiment::RunReport`]; what `cargo xtask
//!   train` calls.
//!
//! It picks no backend: the leaf (xtask, benches, tests) does.

mod decoding;
mod embedded;
mod error;
mod files;
mod model;
mod training;

pub use decoding::answer::{Answer, DecodeMode, Provenance};
pub use decoding::search::{RagTokenDecoder, RagTokenState, rag_sequence_fast, rag_sequence_thorough};
pub use embedded::setup::{EmbeddedConfig, EmbeddedSetup};
pub use embedded::synthetic::{SyntheticConfig, SyntheticPassage, SyntheticTask, copy_examples};
pub use error::{RagError, Result};
pub use files::checkpoint::{CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LoadedRag, ModelManifest, read_manifest};
pub use files::hf_rag::{HfRag, HfRagConfig, Marginalization, hf_loss};
pub use files::qa::{
    QaExample, check_gold_ids, exact_match, f1_score, has_answer, normalize_answer, read_qa_jsonl, write_qa_jsonl,
};
pub use files::squad;
pub use model::config::{ContextFormat, LsrOptions, Precision, RagConfig, RagLoss};
pub use model::context::{PassageText, seq2seq_text};
pub use model::indexing::{check_index, index_store, refresh_index};
pub use model::knowledge::{CLOSED_BOOK_ID, Knowledge, KnowledgePaths, Retrieval};
pub use model::{RagModel, RagOutput};
pub use rag_generator::{AnswerLogits, Generator, GeneratorKind, SpecialTokens};
pub use training::bm25::Bm25;
pub use training::eval::{EvalOptions, EvalReport, PassageSource, evaluate};
pub use training::experiment;
pub use training::recipe::{GroupOptions, Recipe, train_only};
pub use training::task::RagTask;

pub use rag_generator;
pub use rag_hf;
pub use rag_index;
pub use rag_losses;
pub use rag_retriever;
pub use rag_trainer;
