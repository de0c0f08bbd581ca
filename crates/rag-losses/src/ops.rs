//! Numerical building blocks and input checks shared by the losses.
//!
//! Everything here keeps the dtype of its input: a mask turned into numbers is cast to the dtype of
//! the tensor it meets, because Burn's `Bool::float()` takes the device default (f32 on Flex) and
//! mixing f32 with f64 panics inside the backend.

use burn::tensor::{Bool, DType, Int, Tensor, backend::Backend};

use crate::config::{GeneratorOutput, Reduction};
use crate::error::{LossError, Result};

/// `log Σ exp(x)` along `dim`, keeping the dimension.
///
/// The maximum is subtracted first (and detached: the result does not depend on it), so logits of
/// magnitude 1e4 give no overflow. A slice that is entirely `-inf` gives `-inf` rather than NaN,
/// so a document with a `-inf` score drops out of a sum as if it were absent.
pub fn logsumexp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().max_dim(dim).detach();
    let max = max.clone().mask_fill(max.is_inf(), 0.0);
    (x - max.clone()).exp().sum_dim(dim).log() + max
}

/// A boolean mask as 0/1 numbers of `dtype`.
pub(crate) fn mask_as<B: Backend, const D: usize>(mask: Tensor<B, D, Bool>, dtype: DType) -> Tensor<B, D> {
    mask.float().cast(dtype)
}

/// The generator tensor `[B, K, T, V]`, read as log-probabilities: the target's through the
/// fused one-pass kernel where one serves the backend ([`crate::fused`]), everything else from
/// logits shifted by their (detached) maximum, computed once when first needed, so
/// `log_softmax` is never materialized unless a caller asks for the full distribution.
pub(crate) struct VocabLogProbs<B: Backend> {
    generator: Tensor<B, 4>,
    input: GeneratorOutput,
    /// Logits minus their maximum over the vocabulary, and `log Σ_v exp` of that `[B, K, T, 1]`.
    normalized: std::cell::OnceCell<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> VocabLogProbs<B> {
    pub(crate) fn new(generator: Tensor<B, 4>, input: GeneratorOutput) -> Self {
        Self { generator, input, normalized: std::cell::OnceCell::new() }
    }

    fn vocab(&self) -> usize {
        self.generator.dims()[3]
    }

    /// `(shifted, log_norm)` of logits.
    fn normalized(&self) -> &(Tensor<B, 4>, Tensor<B, 4>) {
        self.normalized.get_or_init(|| {
            let max = self.generator.clone().max_dim(3).detach();
            let max = max.clone().mask_fill(max.is_inf(), 0.0);
            let shifted = self.generator.clone() - max;
            let log_norm = shifted.clone().exp().sum_dim(3).log();
            (shifted, log_norm)
        })
    }

    /// `log p(index)` for every `[B, K, T]` position; `index` is `[B, K, T, 1]`.
    pub(crate) fn gather(&self, index: Tensor<B, 4, Int>) -> Tensor<B, 3> {
        let [b, k, t, v] = self.generator.dims();
        match self.input {
            GeneratorOutput::LogProbs => self.generator.clone().gather(3, index).squeeze_dim::<3>(3),
            GeneratorOutput::Logits => {
                let rows = self.generator.clone().reshape([b * k * t, v]);
                if let Some(fused) = crate::fused::target_log_probs(&rows, &index.clone().reshape([b * k * t])) {
                    return fused.reshape([b, k, t]);
                }
                let (shifted, log_norm) = self.normalized();
                (shifted.clone().gather(3, index) - log_norm.clone()).squeeze_dim::<3>(3)
            }
        }
    }

    /// `Σ_v log p(v)` for every `[B, K, T]` position (the label-smoothing term).
    pub(crate) fn vocab_sum(&self) -> Tensor<B, 3> {
        match self.input {
            GeneratorOutput::LogProbs => self.generator.clone().sum_dim(3).squeeze_dim::<3>(3),
            GeneratorOutput::Logits => {
                let (shifted, log_norm) = self.normalized();
                (shifted.clone().sum_dim(3) - log_norm.clone().mul_scalar(self.vocab() as f64)).squeeze_dim::<3>(3)
            }
        }
    }

    /// The full log-probabilities `[B, K, T, V]`.
    pub(crate) fn into_log_probs(self) -> Tensor<B, 4> {
        match self.input {
            GeneratorOutput::LogProbs => self.generator,
            GeneratorOutput::Logits => {
                let (shifted, log_norm) = self.normalized();
                shifted.clone() - log_norm.clone()
            }
        }
    }
}

/// `[B, T]` target ids as a `[B, K, T, 1]` gather index (the same target for every document).
pub(crate) fn doc_index<B: Backend>(target: Tensor<B, 2, Int>, n_docs: usize) -> Tensor<B, 4, Int> {
    target.unsqueeze_dim::<3>(1).repeat_dim(1, n_docs).unsqueeze_dim::<4>(3)
}

/// The positions that count nothing, `[B, T]` → `[B, K, T]` (the same for every document).
pub(crate) fn ignored_per_doc<B: Backend>(counted: Tensor<B, 2, Bool>, n_docs: usize) -> Tensor<B, 3, Bool> {
    counted.bool_not().unsqueeze_dim::<3>(1).repeat_dim(1, n_docs)
}

/// Combines per-example losses `[B]`; `tokens` is the mask of target tokens that count, for
/// [`Reduction::TokenMean`] (losses without tokens refuse that reduction before calling this).
pub(crate) fn reduce<B: Backend>(
    per_example: Tensor<B, 1>,
    tokens: Option<Tensor<B, 2, Bool>>,
    reduction: Reduction,
) -> Tensor<B, 1> {
    match (reduction, tokens) {
        (Reduction::None, _) => per_example,
        (Reduction::Sum, _) => per_example.sum(),
        (Reduction::BatchMean, _) | (Reduction::TokenMean, None) => per_example.mean(),
        (Reduction::TokenMean, Some(tokens)) => {
            let count = mask_as(tokens, per_example.dtype()).sum().clamp_min(1.0);
            per_example.sum() / count
        }
    }
}

/// Names the dimensions of an expected shape for error messages.
pub(crate) fn check_shape(tensor: &'static str, found: &[usize], expected: &[(char, usize)]) -> Result<()> {
    let ok = found.len() == expected.len()
        && found.iter().zip(expected).all(|(f, (_, e))| f == e)
        && found.iter().all(|&d| d > 0);
    if ok {
        Ok(())
    } else {
        let named: Vec<String> = expected.iter().map(|(n, d)| format!("{n}={d}")).collect();
        Err(LossError::Shape {
            tensor,
            expected: format!("[{}] (no dimension may be empty)", named.join(", ")),
            found: found.to_vec(),
        })
    }
}

/// Refuses shapes with an empty dimension (they make the reductions meaningless).
pub(crate) fn check_nonempty(tensor: &'static str, found: &[usize], names: &str) -> Result<()> {
    if found.iter().all(|&d| d > 0) {
        Ok(())
    } else {
        Err(LossError::Shape { tensor, expected: format!("{names} with no empty dimension"), found: found.to_vec() })
    }
}

/// Checks that every id lies in `[0, vocab)`. Out-of-range ids would make `gather` read out of
/// bounds on backends without bound checks; this costs one small device-to-host read of the ids.
pub(crate) fn check_ids<B: Backend, const D: usize>(
    tensor: &'static str,
    ids: &Tensor<B, D, Int>,
    vocab: usize,
) -> Result<()> {
    let data = ids.to_data().convert::<i64>();
    let bad = data.iter::<i64>().enumerate().find(|&(_, id)| id < 0 || id as u64 >= vocab as u64);
    match bad {
        None => Ok(()),
        Some((position, id)) => Err(LossError::TokenOutOfRange { tensor, id, position, vocab }),
    }
}
