//! Turning the hidden states of a batch into one vector per sequence.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// How an encoder turns `[batch, len, d]` hidden states into `[batch, d]` vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The `[CLS]` (first) hidden state: DPR.
    Cls,
    /// The mean over real tokens (attention mask 1): Contriever, most sentence-transformers.
    Mean,
    /// The elementwise max over real tokens (sentence-transformers' `pooling_mode_max_tokens`).
    Max,
    /// The sum over real tokens divided by √(token count) (`pooling_mode_mean_sqrt_len_tokens`).
    MeanSqrtLen,
    /// BERT's pooler, `tanh(W·h[CLS])` (needs a model with the pooler).
    Pooler,
}

/// Sentence-transformers' guard against an all-padding row (`torch.clamp(sum_mask, min=1e-9)`).
const MIN_TOKENS: f64 = 1e-9;

impl Pooling {
    /// Pools `hidden` `[batch, len, d]` under `mask` `[batch, len]` (1 = token). `pooler_output`
    /// is used by [`Pooling::Pooler`] only (and must then be given).
    pub fn pool<B: Backend>(
        self,
        hidden: Tensor<B, 3>,
        mask: Tensor<B, 2, Int>,
        pooler_output: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let [batch, len, d] = hidden.dims();
        match self {
            Pooling::Cls => hidden.narrow(1, 0, 1).reshape([batch, d]),
            Pooling::Pooler => pooler_output.expect("Encoder checks that Pooling::Pooler has a pooler"),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                // `Int::float` creates the default float dtype: cast to the hidden states' own.
                let weights = mask.float().cast(hidden.dtype()).reshape([batch, len, 1]);
                let counts = weights.clone().sum_dim(1).reshape([batch, 1]).clamp_min(MIN_TOKENS);
                let summed = (hidden * weights).sum_dim(1).reshape([batch, d]);
                let counts = if self == Pooling::Mean { counts } else { counts.sqrt() };
                summed / counts
            }
            Pooling::Max => {
                // Sentence-transformers sets padded positions to -1e9 before the max.
                let padded = mask.equal_elem(0).reshape([batch, len, 1]).expand([batch, len, d]);
                hidden.mask_fill(padded, -1e9).max_dim(1).reshape([batch, d])
            }
        }
    }
}

/// `x / max(‖x‖₂, 1e-12)` per row (PyTorch's `F.normalize`, used by sentence-transformers'
/// `Normalize` module).
pub(crate) fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norms = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norms
}
