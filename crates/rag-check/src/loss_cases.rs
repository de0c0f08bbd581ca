//! The cases of `losses.json`: HF's `RagTokenForGeneration.get_nll` /
//! `RagSequenceForGeneration.get_nll` inputs and outputs (see `shared/fixtures/README.md`).

use std::path::Path;

use serde::Deserialize;

use crate::fixture::{Array, FixtureError, read_json};

/// Which HF class's `get_nll` a case calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// `RagTokenForGeneration.get_nll`.
    RagToken,
    /// `RagSequenceForGeneration.get_nll`.
    RagSequence,
}

/// One case of `losses.json` (see `shared/fixtures/README.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct LossCase {
    /// The case's name.
    pub name: String,
    /// The HF class.
    pub kind: LossKind,
    /// `[batch·n_docs, tgt_len, vocab]`, rows `b·n_docs + z`.
    pub seq_logits: Array<f64>,
    /// `[batch, n_docs]`.
    pub doc_scores: Array<f64>,
    /// `[batch, tgt_len]`: HF's unshifted target.
    pub target: Array<i64>,
    /// Label smoothing.
    pub epsilon: f64,
    /// RAG-Sequence's `exclude_bos_score` (absent means false).
    #[serde(default)]
    pub exclude_bos_score: bool,
    /// The generator's pad id.
    pub pad_id: i64,
    /// The BOS id HF uses (absent or null: none).
    #[serde(default)]
    pub bos_id: Option<i64>,
    /// Expected per-example loss `[batch]`.
    pub loss: Array<f64>,
    /// Expected gradient of `sum(loss)` w.r.t. `doc_scores`.
    pub grad_doc_scores: Array<f64>,
    /// Expected gradient of `sum(loss)` w.r.t. `seq_logits`.
    pub grad_seq_logits: Array<f64>,
}

impl LossCase {
    fn validate(&self, path: &Path) -> Result<(), FixtureError> {
        let fields: [(&'static str, Result<(), String>); 6] = [
            ("seq_logits", self.seq_logits.validate(3)),
            ("doc_scores", self.doc_scores.validate(2)),
            ("target", self.target.validate(2)),
            ("loss", self.loss.validate(1)),
            ("grad_doc_scores", self.grad_doc_scores.validate(2)),
            ("grad_seq_logits", self.grad_seq_logits.validate(3)),
        ];
        for (field, result) in fields {
            result.map_err(|message| FixtureError::Field {
                path: path.to_path_buf(),
                case: self.name.clone(),
                field,
                message,
            })?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct LossFile {
    cases: Vec<LossCase>,
}

/// Reads and validates every case of a `losses.json`.
pub fn load_loss_cases(path: &Path) -> Result<Vec<LossCase>, FixtureError> {
    let file: LossFile = read_json(path)?;
    for case in &file.cases {
        case.validate(path)?;
    }
    Ok(file.cases)
}
