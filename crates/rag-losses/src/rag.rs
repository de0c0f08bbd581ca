//! RAG-Token and RAG-Sequence negative log-likelihoods (Lewis et al. 2020, eq. 1 and 2).
//!
//! Inputs are aligned: `generator[b, k, t]` scores `target[b, t]`. Use [`hf`](crate::hf) for HF's
//! `get_nll`, which takes unshifted decoder inputs instead.

use burn::tensor::{Bool, Int, Tensor, activation::log_softmax, backend::Backend};

use crate::config::NllConfig;
use crate::error::{LossError, Result};
use crate::ops::{VocabLogProbs, check_ids, check_shape, doc_index, ignored_per_doc, logsumexp, reduce};

/// Views a generator output laid out `[B·K, T, V]` (rows `b·K + k`, as HF's RAG produces it) as
/// `[B, K, T, V]`.
pub fn split_docs<B: Backend>(generator: Tensor<B, 3>, n_docs: usize) -> Result<Tensor<B, 4>> {
    let [rows, t, v] = generator.dims();
    if n_docs == 0 || rows == 0 || rows % n_docs != 0 {
        return Err(LossError::Shape {
            tensor: "generator",
            expected: format!("[B·K, T, V] with rows a positive multiple of K={n_docs}"),
            found: vec![rows, t, v],
        });
    }
    Ok(generator.reshape([rows / n_docs, n_docs, t, v]))
}

/// Dimensions `(B, K, T, V)` of a checked RAG input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RagDims {
    pub batch: usize,
    pub docs: usize,
    pub len: usize,
    pub vocab: usize,
}

/// Checks the shapes of a RAG input (ids are range-checked by the caller, on the tensor the user
/// passed, so an error names the position they know).
pub(crate) fn check_rag_shapes<B: Backend>(
    generator: &Tensor<B, 4>,
    doc_scores: &Tensor<B, 2>,
    target: &Tensor<B, 2, Int>,
) -> Result<RagDims> {
    let [batch, docs, len, vocab] = generator.dims();
    let named = [('B', batch), ('K', docs), ('T', len), ('V', vocab)];
    check_shape("generator", &generator.dims(), &named)?;
    check_shape("doc_scores", &doc_scores.dims(), &[('B', batch), ('K', docs)])?;
    check_shape("target", &target.dims(), &[('B', batch), ('T', len)])?;
    Ok(RagDims { batch, docs, len, vocab })
}

/// Everything the aligned API checks before computing: options, shapes, the mask, the ids.
fn check_aligned<B: Backend>(
    generator: &Tensor<B, 4>,
    doc_scores: &Tensor<B, 2>,
    target: &Tensor<B, 2, Int>,
    target_mask: &Tensor<B, 2, Bool>,
    config: &NllConfig,
) -> Result<RagDims> {
    config.validate()?;
    let dims = check_rag_shapes(generator, doc_scores, target)?;
    check_shape("target_mask", &target_mask.dims(), &[('B', dims.batch), ('T', dims.len)])?;
    check_ids("target", target, dims.vocab)?;
    Ok(dims)
}

/// RAG-Token: `−log p(y|x) = −Σ_t m_t · log Σ_z p(z|x) p(y_t | x, z, y_<t)`.
///
/// - `generator`: logits or log-probs `[B, K, T, V]` (see [`NllConfig::input`]; [`split_docs`]
///   turns HF's `[B·K, T, V]` into this)
/// - `doc_scores`: retrieval scores `[B, K]`; `p(z|x) = softmax_z(doc_scores)`. A `-inf` score
///   removes that document. At least one score per example must be finite.
/// - `target`: ids `[B, T]` aligned with the generator's positions
/// - `target_mask`: `[B, T]`, `true` where the token counts
///
/// With label smoothing ε the loss is `(1 − ε)·nll − (ε/V)·Σ_t m_t Σ_v log p(v | …)`, the smoothing
/// term taken on the marginalized distribution (HF's convention). The gradient reaches both the
/// generator and the doc scores.
pub fn rag_token_nll<B: Backend>(
    generator: Tensor<B, 4>,
    doc_scores: Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    target_mask: Tensor<B, 2, Bool>,
    config: &NllConfig,
) -> Result<Tensor<B, 1>> {
    let dims = check_aligned(&generator, &doc_scores, &target, &target_mask, config)?;
    let per_example = rag_token_core(
        VocabLogProbs::new(generator, config.input),
        doc_scores,
        target,
        target_mask.clone(),
        config.label_smoothing,
        dims,
    );
    Ok(reduce(per_example, Some(target_mask), config.reduction))
}

/// Per-example RAG-Token loss `[B]`; shared with the HF entry point.
pub(crate) fn rag_token_core<B: Backend>(
    log_probs: VocabLogProbs<B>,
    doc_scores: Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    target_mask: Tensor<B, 2, Bool>,
    epsilon: f64,
    dims: RagDims,
) -> Tensor<B, 1> {
    let RagDims { batch, docs, len, vocab } = dims;
    let ignored = target_mask.bool_not();
    let doc_log_prior = log_softmax(doc_scores, 1);
    let target_ll = |marginal_ll: Tensor<B, 2>| -> Tensor<B, 1> {
        marginal_ll.mask_fill(ignored.clone(), 0.0).sum_dim(1).squeeze_dim::<1>(1)
    };
    if epsilon == 0.0 {
        // Only the target's probability is needed: marginalize the gathered log-probs [B, K, T]
        // and never build the [B, T, V] mixture.
        let picked = log_probs.gather(doc_index(target, docs));
        let joint = picked + doc_log_prior.reshape([batch, docs, 1]);
        let marginal = logsumexp(joint, 1).reshape([batch, len]);
        return target_ll(marginal).neg();
    }
    // log Σ_z p(z|x) p(v | x, z, y_<t) for every v: the smoothing term needs the whole mixture.
    let joint = log_probs.into_log_probs() + doc_log_prior.reshape([batch, docs, 1, 1]);
    let mixture = logsumexp(joint, 1).reshape([batch, len, vocab]);
    let picked = mixture.clone().gather(2, target.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    let smooth = mixture.sum_dim(2).squeeze_dim::<2>(2).mask_fill(ignored.clone(), 0.0).sum_dim(1).squeeze_dim::<1>(1);
    let nll = target_ll(picked).neg();
    smoothed(nll, smooth.neg(), epsilon, vocab)
}

/// RAG-Sequence: `−log p(y|x) = −log Σ_z p(z|x) Π_t p(y_t | x, z, y_<t)^{m_t}`.
///
/// Arguments as in [`rag_token_nll`]. With label smoothing ε the smoothing term is HF's: the
/// per-document sum `Σ_t m_t Σ_v log p(v | x, z, …)` is marginalized like the likelihood, with the
/// log-prior counted once per vocabulary entry, `smooth = logsumexp_z(V·log p(z|x) + Σ_t m_t Σ_v …)`.
///
/// The gradient with respect to `doc_scores` (ε = 0, untruncated) is `p(z|x) − p(z|x, y)`: prior
/// minus posterior.
pub fn rag_sequence_nll<B: Backend>(
    generator: Tensor<B, 4>,
    doc_scores: Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    target_mask: Tensor<B, 2, Bool>,
    config: &NllConfig,
) -> Result<Tensor<B, 1>> {
    let dims = check_aligned(&generator, &doc_scores, &target, &target_mask, config)?;
    let RagDims { batch, docs, .. } = dims;
    let epsilon = config.label_smoothing;
    let log_probs = VocabLogProbs::new(generator, config.input);
    let ignored = ignored_per_doc(target_mask.clone(), docs);
    let per_doc_sum = |per_token: Tensor<B, 3>| -> Tensor<B, 2> {
        per_token.mask_fill(ignored.clone(), 0.0).sum_dim(2).reshape([batch, docs])
    };
    let doc_log_prior = log_softmax(doc_scores, 1);
    let sequence_ll = per_doc_sum(log_probs.gather(doc_index(target, docs)));
    let joint_ll = sequence_ll + doc_log_prior.clone();
    let joint_smooth =
        (epsilon > 0.0).then(|| per_doc_sum(log_probs.vocab_sum()) + doc_log_prior.mul_scalar(dims.vocab as f64));
    let per_example = marginalize_sequences(joint_ll, joint_smooth, epsilon, dims.vocab);
    Ok(reduce(per_example, Some(target_mask), config.reduction))
}

/// `−logsumexp_z` of per-document joint sequence log-likelihoods `[B, K]` (prior included), with
/// the smoothing term marginalized the same way; shared with the HF entry point.
pub(crate) fn marginalize_sequences<B: Backend>(
    joint_ll: Tensor<B, 2>,
    joint_smooth: Option<Tensor<B, 2>>,
    epsilon: f64,
    vocab: usize,
) -> Tensor<B, 1> {
    let [batch, _] = joint_ll.dims();
    let nll = logsumexp(joint_ll, 1).reshape([batch]).neg();
    match joint_smooth {
        Some(smooth) => smoothed(nll, logsumexp(smooth, 1).reshape([batch]).neg(), epsilon, vocab),
        None => nll,
    }
}

/// `(1 − ε)·nll + (ε/V)·smooth_loss`: HF's label smoothing, applied after marginalization.
pub(crate) fn smoothed<B: Backend>(
    nll: Tensor<B, 1>,
    smooth_loss: Tensor<B, 1>,
    epsilon: f64,
    vocab: usize,
) -> Tensor<B, 1> {
    nll.mul_scalar(1.0 - epsilon) + smooth_loss.mul_scalar(epsilon / vocab as f64)
}
