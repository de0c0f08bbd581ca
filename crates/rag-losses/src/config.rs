//! Options shared by the losses.

use burn::config::Config;

use crate::error::LossError;

/// What the generator tensor passed to a likelihood loss holds along its last (vocabulary) axis.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GeneratorOutput {
    /// Unnormalized scores; the loss applies a log-softmax over the vocabulary itself.
    Logits,
    /// Log-probabilities already normalized over the vocabulary (e.g. a model that returns
    /// `log_softmax` output). Passing logits here gives a wrong loss, not an error.
    LogProbs,
}

/// How per-example losses are combined.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// No reduction: one loss per example, shape `[B]`.
    None,
    /// Sum over examples, shape `[1]`.
    Sum,
    /// Sum over examples divided by the number of target tokens that count (the mask's `true`
    /// entries), shape `[1]`: the per-token NLL of fairseq and of most training loops. Only for
    /// likelihood losses; a distribution loss (LSR) refuses it.
    TokenMean,
    /// Mean over examples, shape `[1]` (PyTorch's `batchmean` for the KL losses).
    BatchMean,
}

/// Options of the marginal likelihood losses ([`rag_token_nll`](crate::rag_token_nll),
/// [`rag_sequence_nll`](crate::rag_sequence_nll), [`lm_nll`](crate::lm_nll)).
#[derive(Config, Debug)]
pub struct NllConfig {
    /// Label smoothing ε in `[0, 1)`: `loss = (1 − ε)·nll + (ε/V)·smooth` with the smoothing term
    /// computed after marginalization over documents, as in HF's `get_nll`.
    #[config(default = 0.0)]
    pub label_smoothing: f64,
    /// How per-example losses are combined.
    #[config(default = "Reduction::None")]
    pub reduction: Reduction,
    /// Whether the generator tensor holds logits or log-probabilities.
    #[config(default = "GeneratorOutput::Logits")]
    pub input: GeneratorOutput,
}

impl NllConfig {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        check_smoothing(self.label_smoothing)
    }
}

pub(crate) fn check_smoothing(epsilon: f64) -> crate::Result<()> {
    if (0.0..1.0).contains(&epsilon) {
        Ok(())
    } else {
        Err(LossError::InvalidOption {
            field: "label_smoothing",
            value: epsilon.to_string(),
            reason: "must lie in [0, 1)",
        })
    }
}

pub(crate) fn check_temperature(field: &'static str, tau: f64) -> crate::Result<()> {
    if tau.is_finite() && tau > 0.0 {
        Ok(())
    } else {
        Err(LossError::InvalidOption { field, value: tau.to_string(), reason: "must be finite and positive" })
    }
}
