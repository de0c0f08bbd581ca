//! RA-DIT (Lin et al. 2023) and REPLUG (Shi et al. 2023): losses for a decoder-only LM with
//! parallel retrieval augmentation, where each of the top-k chunks `c` makes its own prompt `c∘x`.
//!
//! - [`lm_nll`]: LM fine-tuning (RA-DIT §2.3), the NLL of the output tokens of each `(c_j∘x_i, y_i)`.
//! - [`lm_scores`] and [`lsr_loss`]: LM-supervised retrieval (RA-DIT §2.4, REPLUG §4): a KL between
//!   the retriever's distribution over the chunks and `p_LSR(c|x,y) = softmax_c(score_LM(c)/τ_LM)`.
//! - [`parallel_marginal_log_likelihood`]: `log Σ_c p_R(c|x) p_LM(y|c∘x)` (REPLUG eq. 1), used to
//!   score answers at inference.

use burn::config::Config;
use burn::tensor::{Bool, Int, Tensor, activation::log_softmax, backend::Backend};

use crate::config::{NllConfig, Reduction, check_temperature};
use crate::error::LossError;
use crate::ops::{VocabLogProbs, check_ids, check_nonempty, check_shape, logsumexp, mask_as, reduce};
use crate::rag::smoothed;

/// The negative log-likelihood of a plain LM on its target tokens, `−Σ_t m_t log p(y_t | y_<t)`,
/// one value per row. RA-DIT's LM fine-tuning loss is this on rows `c_ij∘x_i ∘ y_i` with the mask
/// `true` on the output tokens `y_i` only (the background and the instruction count nothing).
///
/// - `generator`: logits or log-probs `[N, T, V]`; `target`: ids `[N, T]` aligned with it
///   (`target[n, t]` is the token that `generator[n, t]` predicts); `target_mask`: `[N, T]`.
///
/// Label smoothing gives `(1 − ε)·nll − (ε/V)·Σ_t m_t Σ_v log p(v | y_<t)`.
pub fn lm_nll<B: Backend>(
    generator: Tensor<B, 3>,
    target: Tensor<B, 2, Int>,
    target_mask: Tensor<B, 2, Bool>,
    config: &NllConfig,
) -> crate::Result<Tensor<B, 1>> {
    config.validate()?;
    let [rows, len, vocab] = generator.dims();
    check_shape("generator", &generator.dims(), &[('N', rows), ('T', len), ('V', vocab)])?;
    check_shape("target", &target.dims(), &[('N', rows), ('T', len)])?;
    check_shape("target_mask", &target_mask.dims(), &[('N', rows), ('T', len)])?;
    check_ids("target", &target, vocab)?;
    let log_probs = VocabLogProbs::new(generator.unsqueeze_dim::<4>(1), config.input);
    let ignored = target_mask.clone().bool_not();
    let row_sum = |per_token: Tensor<B, 3>| -> Tensor<B, 1> {
        per_token.reshape([rows, len]).mask_fill(ignored.clone(), 0.0).sum_dim(1).reshape([rows])
    };
    let index = target.unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(3);
    let nll = row_sum(log_probs.gather(index)).neg();
    let per_row = if config.label_smoothing > 0.0 {
        let smooth_loss = row_sum(log_probs.vocab_sum()).neg();
        smoothed(nll, smooth_loss, config.label_smoothing, vocab)
    } else {
        nll
    };
    Ok(reduce(per_row, Some(target_mask), config.reduction))
}

/// How the LM's likelihood of the answer given a chunk becomes `score_LM(c)`: sources differ.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LmScore {
    /// `p_LM(y | c∘x) = exp(Σ_t log p)`, as written in the RA-DIT and REPLUG papers. Underflows to
    /// 0 for long answers (every chunk then gets the same score).
    Probability,
    /// `Σ_t log p_LM(y_t | c∘x, y_<t)`.
    SumLogProb,
    /// `(1/|y|)·Σ_t log p_LM(y_t | …)`, length-normalized (Atlas's perplexity distillation).
    MeanLogProb,
}

/// `score_LM` `[B, K]` from per-token log-probabilities of the answer `[B, K, T]` under each of the
/// K augmented prompts, with `mask` `[B, K, T]` `true` on the answer tokens. The result carries no
/// gradient: the LM is a teacher in LSR.
pub fn lm_scores<B: Backend>(
    token_log_probs: Tensor<B, 3>,
    mask: Tensor<B, 3, Bool>,
    kind: LmScore,
) -> crate::Result<Tensor<B, 2>> {
    let [batch, docs, len] = token_log_probs.dims();
    let named = [('B', batch), ('K', docs), ('T', len)];
    check_shape("token_log_probs", &token_log_probs.dims(), &named)?;
    check_shape("mask", &mask.dims(), &named)?;
    let dtype = token_log_probs.dtype();
    let token_log_probs = token_log_probs.detach();
    let summed = token_log_probs.mask_fill(mask.clone().bool_not(), 0.0).sum_dim(2).reshape([batch, docs]);
    let scores = match kind {
        LmScore::SumLogProb => summed,
        LmScore::Probability => summed.exp(),
        LmScore::MeanLogProb => {
            let count = mask_as(mask, dtype).sum_dim(2).reshape([batch, docs]);
            summed / count.clamp_min(1.0)
        }
    };
    Ok(scores.detach())
}

/// Which way the LSR KL divergence points.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum KlDirection {
    /// `KL(p_LSR ‖ p_R) = Σ_c p_LSR (log p_LSR − log p_R)`: what the released code of REPLUG and
    /// Atlas computes (PyTorch's `kl_div(log p_R, p_LSR)`). The default.
    LsrToRetriever,
    /// `KL(p_R ‖ p_LSR) = Σ_c p_R (log p_R − log p_LSR)`: the formula in the RA-DIT paper (eq. 4).
    RetrieverToLsr,
}

/// Options of [`lsr_loss`].
#[derive(Config, Debug)]
pub struct LsrConfig {
    /// τ_R in `p_R(c|x) = softmax_c(s(c, x)/τ_R)`.
    #[config(default = 1.0)]
    pub retriever_temperature: f64,
    /// τ_LM in `p_LSR(c|x,y) = softmax_c(score_LM(c)/τ_LM)`.
    #[config(default = 1.0)]
    pub lm_temperature: f64,
    /// Direction of the KL divergence.
    #[config(default = "KlDirection::LsrToRetriever")]
    pub direction: KlDirection,
    /// `None` (`[B]`), `Sum`, or `BatchMean`; `TokenMean` is refused.
    #[config(default = "Reduction::BatchMean")]
    pub reduction: Reduction,
}

/// LM-supervised retrieval loss: `KL` between `p_R = softmax(retriever_scores/τ_R)` and
/// `p_LSR = softmax(lm_scores/τ_LM)` over the top K chunks, per example.
///
/// - `retriever_scores`: `[B, K]` query–chunk scores, differentiable (the gradient trains the
///   query encoder). A `-inf` score removes a chunk from `p_R`.
/// - `lm_scores`: `[B, K]`, e.g. from [`lm_scores`]; detached here, so no gradient reaches the LM.
///
/// A chunk with `p = 0` contributes `0·log 0 = 0` to the KL, with a finite gradient.
pub fn lsr_loss<B: Backend>(
    retriever_scores: Tensor<B, 2>,
    lm_scores: Tensor<B, 2>,
    config: &LsrConfig,
) -> crate::Result<Tensor<B, 1>> {
    check_temperature("retriever_temperature", config.retriever_temperature)?;
    check_temperature("lm_temperature", config.lm_temperature)?;
    if config.reduction == Reduction::TokenMean {
        return Err(LossError::InvalidOption {
            field: "reduction",
            value: "TokenMean".into(),
            reason: "LSR is a loss per example, not per token: use None, Sum or BatchMean",
        });
    }
    let [batch, docs] = retriever_scores.dims();
    check_nonempty("retriever_scores", &retriever_scores.dims(), "[B, K]")?;
    check_shape("lm_scores", &lm_scores.dims(), &[('B', batch), ('K', docs)])?;
    let log_p_r = log_softmax(retriever_scores.div_scalar(config.retriever_temperature), 1);
    let log_p_lsr = log_softmax(lm_scores.detach().div_scalar(config.lm_temperature), 1);
    let (log_p, log_q) = match config.direction {
        KlDirection::LsrToRetriever => (log_p_lsr, log_p_r),
        KlDirection::RetrieverToLsr => (log_p_r, log_p_lsr),
    };
    let p = log_p.clone().exp();
    // 0·(log 0 − log q) is 0; zero the difference first so neither value nor gradient is NaN.
    let absent = p.clone().equal_elem(0.0);
    let log_ratio = (log_p - log_q).mask_fill(absent, 0.0);
    let per_example = (p * log_ratio).sum_dim(1).reshape([batch]);
    Ok(reduce(per_example, None, config.reduction))
}

/// REPLUG's ensemble likelihood `log p(y|x) = log Σ_c p_R(c|x) p_LM(y | c∘x)` per example `[B]`,
/// with `p_R = softmax(retriever_scores/τ_R)` and `lm_sequence_log_probs` `[B, K]` the LM's summed
/// log-likelihood of `y` under each augmented prompt ([`lm_scores`] with [`LmScore::SumLogProb`],
/// or a differentiable sum). Differentiable in both inputs.
pub fn parallel_marginal_log_likelihood<B: Backend>(
    retriever_scores: Tensor<B, 2>,
    lm_sequence_log_probs: Tensor<B, 2>,
    retriever_temperature: f64,
) -> crate::Result<Tensor<B, 1>> {
    check_temperature("retriever_temperature", retriever_temperature)?;
    let [batch, docs] = retriever_scores.dims();
    check_nonempty("retriever_scores", &retriever_scores.dims(), "[B, K]")?;
    check_shape("lm_sequence_log_probs", &lm_sequence_log_probs.dims(), &[('B', batch), ('K', docs)])?;
    let log_p_r = log_softmax(retriever_scores.div_scalar(retriever_temperature), 1);
    Ok(logsumexp(log_p_r + lm_sequence_log_probs, 1).reshape([batch]))
}
