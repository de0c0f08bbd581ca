//! Component `losses`: HF's `RagTokenForGeneration.get_nll` / `RagSequenceForGeneration.get_nll`
//! cases of `losses.json`, compared on the per-example loss and the gradients of `sum(loss)` with
//! respect to the doc scores and the logits.

use std::path::Path;

use burn::tensor::{DType, Int, Tensor, TensorData, backend::AutodiffBackend};
use rag_check::{Array, ComponentReport, Errors, FixtureError, LossCase, LossKind, load_loss_cases};
use rag_losses::hf::{HfNllOptions, rag_sequence_get_nll, rag_token_get_nll};

use crate::default_tolerance;

/// What the project computes for a case, flattened row-major like the fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutputs {
    /// Per-example loss.
    pub loss: Vec<f64>,
    /// Gradient of `sum(loss)` w.r.t. the doc scores.
    pub grad_doc_scores: Vec<f64>,
    /// Gradient of `sum(loss)` w.r.t. the logits.
    pub grad_seq_logits: Vec<f64>,
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().expect("converted to f64 just above")
}

/// Runs one case through the HF-compatible entry points on backend `B` with floats of `dtype`.
pub fn run_loss_case<B: AutodiffBackend>(
    case: &LossCase,
    device: &B::Device,
    dtype: DType,
) -> Result<LossOutputs, rag_losses::LossError> {
    let float = |a: &Array<f64>| TensorData::new(a.data.clone(), a.shape.clone());
    let seq_logits = Tensor::<B, 3>::from_data(float(&case.seq_logits), (device, dtype)).require_grad();
    let doc_scores = Tensor::<B, 2>::from_data(float(&case.doc_scores), (device, dtype)).require_grad();
    let target =
        Tensor::<B, 2, Int>::from_data(TensorData::new(case.target.data.clone(), case.target.shape.clone()), device);
    let options = HfNllOptions {
        epsilon: case.epsilon,
        exclude_bos_score: case.exclude_bos_score,
        bos_id: case.bos_id,
        ..HfNllOptions::new(case.pad_id)
    };
    let get_nll = match case.kind {
        LossKind::RagToken => rag_token_get_nll::<B>,
        LossKind::RagSequence => rag_sequence_get_nll::<B>,
    };
    let loss = get_nll(seq_logits.clone(), doc_scores.clone(), target, &options)?;
    let grads = loss.clone().sum().backward();
    // A tensor the loss does not depend on (HF's RAG-Sequence drops the doc scores when T = 1)
    // has no gradient at all: that is a gradient of zeros.
    let zeros = |a: &Array<f64>| vec![0.0; a.data.len()];
    Ok(LossOutputs {
        loss: values(loss),
        grad_doc_scores: (doc_scores.grad(&grads).map(values)).unwrap_or_else(|| zeros(&case.doc_scores)),
        grad_seq_logits: (seq_logits.grad(&grads).map(values)).unwrap_or_else(|| zeros(&case.seq_logits)),
    })
}

/// Checks every case of a `losses.json` file. A case the loss refuses counts as a failure with
/// infinite error (its message is in the report's failure name).
pub fn check_losses<B: AutodiffBackend>(
    path: &Path,
    device: &B::Device,
    dtype: DType,
) -> Result<ComponentReport, FixtureError> {
    let cases = load_loss_cases(path)?;
    let tolerance = default_tolerance(dtype);
    let mut report = ComponentReport {
        component: "losses",
        errors: Errors::default(),
        tolerance,
        absolute: false,
        cases: cases.len(),
        failures: Vec::new(),
    };
    for case in &cases {
        let errors = match run_loss_case::<B>(case, device, dtype) {
            Ok(ours) => Errors::between(&ours.loss, &case.loss.data)
                .max(Errors::between(&ours.grad_doc_scores, &case.grad_doc_scores.data))
                .max(Errors::between(&ours.grad_seq_logits, &case.grad_seq_logits.data)),
            Err(e) => {
                let infinite = Errors { max_abs: f64::INFINITY, max_rel: f64::INFINITY };
                report.failures.push((format!("{} ({e})", case.name), infinite));
                report.errors = report.errors.max(infinite);
                continue;
            }
        };
        report.errors = report.errors.max(errors);
        if errors.max_rel.is_nan() || errors.max_rel > tolerance {
            report.failures.push((case.name.clone(), errors));
        }
    }
    Ok(report)
}
