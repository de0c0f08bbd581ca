//! [`Knowledge`]: the passages a model retrieves from (a passage store and a vector index,
//! kept outside the module so an optimizer step can replace the module while the trainer
//! refreshes the index), and [`Retrieval`], what a search found for a batch of questions.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use rag_index::{NO_ID, PassageStore, SearchResults, VectorIndex, open_index};

use crate::model::context::PassageText;
use crate::{RagError, Result};

/// The passages a model retrieves from: a passage store and a vector index over it, built with
/// the model's document encoder.
#[derive(Debug)]
pub struct Knowledge {
    /// The passages, by id.
    pub store: PassageStore,
    /// Their vectors, under the same ids.
    pub index: Box<dyn VectorIndex>,
}

/// Where a [`Knowledge`]'s files are (what a whole-model checkpoint records).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnowledgePaths {
    /// The passage store file.
    pub store: PathBuf,
    /// The index file.
    pub index: PathBuf,
}

impl Knowledge {
    /// Opens a store and an index file of either kind.
    pub fn open(paths: &KnowledgePaths) -> Result<Self> {
        Ok(Self { store: PassageStore::open(&paths.store)?, index: open_index(&paths.index)? })
    }

    /// The `k` nearest passages of each of the row-major `dim`-wide query vectors; vectors of
    /// another width than the index's are refused (the index was built by another encoder).
    pub fn search(&self, queries: &[f32], dim: usize, k: usize) -> Result<SearchResults> {
        if self.index.dim() != dim {
            return Err(RagError::Dimension { index: self.index.dim(), encoder: "query encoder", dim });
        }
        Ok(self.index.search(queries, k)?)
    }

    /// The passage `id`, or an empty one for [`NO_ID`] (an index smaller than K). An id the
    /// index holds and the store lacks is an error: they were built from different corpora.
    pub fn passage(&self, id: u64) -> Result<PassageText> {
        if id == NO_ID {
            return Ok(PassageText { id, ..PassageText::default() });
        }
        let passage = self.store.get(id)?.ok_or_else(|| RagError::Corpus {
            store: self.store.path().to_path_buf(),
            message: format!(
                "the index returned passage {id}, which the store lacks: were they built from the same corpus?"
            ),
        })?;
        Ok(PassageText { id, title: passage.title.to_string(), text: passage.text.to_string() })
    }
}

/// What [`crate::RagModel::retrieve`] found for a batch of `B` questions.
#[derive(Debug, Clone)]
pub struct Retrieval<B: Backend> {
    /// `[B][K]` passages, best first; empty ones (id [`NO_ID`]) when the index holds fewer than K.
    pub passages: Vec<Vec<PassageText>>,
    /// `[B, K]` doc scores `q·d / τ_R`, differentiable in the query encoder (and in the document
    /// encoder when it is trained); `-inf` for empty slots.
    pub doc_scores: Tensor<B, 2>,
}

/// The passage id of a closed-book "retrieval" (one empty passage with score 0).
pub const CLOSED_BOOK_ID: u64 = u64::MAX - 1;

impl<B: Backend> Retrieval<B> {
    /// No retrieval: one empty passage per question with prior 1, so the generator reads the
    /// question alone (a closed-book baseline; the model needs `n_docs == 1`).
    pub fn closed_book(questions: usize, device: &B::Device) -> Self {
        let empty = PassageText { id: CLOSED_BOOK_ID, title: String::new(), text: String::new() };
        Self { passages: vec![vec![empty]; questions], doc_scores: Tensor::zeros([questions, 1], device) }
    }

    /// One given passage per question (the gold one, for an oracle), in the first of `n_docs`
    /// slots with score 0; the other slots are empty (score `-inf`), so the prior is 1 on it.
    pub fn given(passages: Vec<PassageText>, n_docs: usize, device: &B::Device) -> Self {
        Self::given_rows(passages.into_iter().map(|p| vec![p]).collect(), n_docs, device)
    }

    /// Given passages per question (at most `n_docs` each) in its first slots with score 0,
    /// the other slots empty (score `-inf`): a uniform prior over the given ones, and no
    /// gradient to the retriever.
    pub fn given_rows(rows: Vec<Vec<PassageText>>, n_docs: usize, device: &B::Device) -> Self {
        let b = rows.len();
        let empty = PassageText { id: NO_ID, ..PassageText::default() };
        let mut scores = Vec::with_capacity(b * n_docs);
        let rows: Vec<Vec<PassageText>> = rows
            .into_iter()
            .map(|mut row| {
                row.truncate(n_docs);
                scores.extend((0..n_docs).map(|z| if z < row.len() { 0.0 } else { f32::NEG_INFINITY }));
                row.resize(n_docs, empty.clone());
                row
            })
            .collect();
        Self { passages: rows, doc_scores: Tensor::from_data(TensorData::new(scores, [b, n_docs]), device) }
    }

    /// `[B, K]`: `true` where a slot holds no passage.
    pub fn empty_slots(&self) -> Tensor<B, 2, Bool> {
        let [b, k] = self.doc_scores.dims();
        let empty: Vec<bool> = self.passages.iter().flatten().map(|p| p.id == NO_ID).collect();
        Tensor::from_data(TensorData::new(empty, [b, k]), &self.doc_scores.device())
    }
}
