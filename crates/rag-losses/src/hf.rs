//! Entry points that reproduce HuggingFace transformers' `RagTokenForGeneration.get_nll` and
//! `RagSequenceForGeneration.get_nll` (`modeling_rag.py`) exactly, quirks included.
//!
//! Use these to compare against HF or to load a recipe tuned on it; new code should prefer the
//! aligned API ([`rag_token_nll`](crate::rag_token_nll), [`rag_sequence_nll`](crate::rag_sequence_nll)),
//! which agrees with these whenever the quirks below do not trigger.
//!
//! The quirks:
//! 1. `target` is HF's `labels`/`decoder_input_ids`: it is shifted left by one inside the loss and
//!    padded at the end with `pad_id`; every position whose shifted target is `pad_id` counts
//!    nothing (so a real token equal to `pad_id` is never scored).
//! 2. RAG-Sequence adds the document log-prior at shifted position 1 only, before masking: when
//!    that position is padding, or the target has a single position, the prior is lost and the
//!    loss becomes `−logsumexp_z log p(y|x,z)`.
//! 3. Label smoothing is `(1 − ε)·nll + (ε/V)·smooth` after marginalization; for RAG-Sequence the
//!    smoothing sum is itself logsumexp'd over documents and the prior enters it `V` times.
//! 4. `exclude_bos_score` drops shifted position 0 from the likelihood (not from the smoothing
//!    term), and only when every row's shifted target starts with `bos_id`.

use burn::tensor::{Int, Tensor, activation::log_softmax, backend::Backend};

use crate::config::{GeneratorOutput, Reduction, check_smoothing};
use crate::error::{LossError, Result};
use crate::ops::{VocabLogProbs, check_ids, doc_index, ignored_per_doc, reduce};
use crate::rag::{RagDims, check_rag_shapes, marginalize_sequences, rag_token_core, split_docs};

/// The arguments of HF's `get_nll` besides the tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HfNllOptions {
    /// `config.generator.pad_token_id`.
    pub pad_id: i64,
    /// `epsilon` (label smoothing).
    pub epsilon: f64,
    /// `reduce_loss`: sum over the batch (`[1]`) instead of one loss per example (`[B]`).
    pub reduce_loss: bool,
    /// `exclude_bos_score` (RAG-Sequence only; ignored by RAG-Token).
    pub exclude_bos_score: bool,
    /// `config.bos_token_id or config.generator.bos_token_id` (RAG-Sequence only). Note that HF's
    /// `or` skips a RAG-level id of 0; pass the id HF ends up using. `None` disables
    /// `exclude_bos_score`, as in HF.
    pub bos_id: Option<i64>,
}

impl HfNllOptions {
    /// HF's defaults for the given pad id: no smoothing, one loss per example, BOS kept.
    pub fn new(pad_id: i64) -> Self {
        Self { pad_id, epsilon: 0.0, reduce_loss: false, exclude_bos_score: false, bos_id: None }
    }

    fn reduction(&self) -> Reduction {
        if self.reduce_loss { Reduction::Sum } else { Reduction::None }
    }
}

/// HF's shift: `cat([target[:, 1:], pad], 1)`.
fn shift_left<B: Backend>(target: Tensor<B, 2, Int>, pad_id: i64) -> Tensor<B, 2, Int> {
    let [_, len] = target.dims();
    let pad_column = target.clone().narrow(1, 0, 1).full_like(pad_id);
    if len == 1 { pad_column } else { Tensor::cat(vec![target.narrow(1, 1, len - 1), pad_column], 1) }
}

fn prepare<B: Backend>(
    seq_logits: Tensor<B, 3>,
    doc_scores: &Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    options: &HfNllOptions,
) -> Result<(Tensor<B, 4>, Tensor<B, 2, Int>, RagDims)> {
    check_smoothing(options.epsilon)?;
    let [_, n_docs] = doc_scores.dims();
    let generator = split_docs(seq_logits, n_docs)?;
    let vocab = generator.dims()[3];
    if options.pad_id < 0 || options.pad_id as u64 >= vocab as u64 {
        return Err(LossError::InvalidOption {
            field: "pad_id",
            value: options.pad_id.to_string(),
            reason: "must be a token id inside the vocabulary (HF gathers it at padded positions)",
        });
    }
    // Ids are checked as the user passed them, so an error names their position (the shifted
    // copy holds the same ids one column to the left, plus the pad id checked above).
    check_ids("target", &target, vocab)?;
    let shifted = shift_left(target, options.pad_id);
    let dims = check_rag_shapes(&generator, doc_scores, &shifted)?;
    Ok((generator, shifted, dims))
}

/// `RagTokenForGeneration.get_nll(seq_logits, doc_scores, target, reduce_loss, epsilon, n_docs)`.
///
/// `seq_logits` are `[B·K, T, V]` logits with rows `b·K + k`; `K` is read from `doc_scores`
/// `[B, K]`; `target` is `[B, T]`. Returns `[B]`, or `[1]` with `reduce_loss`.
pub fn rag_token_get_nll<B: Backend>(
    seq_logits: Tensor<B, 3>,
    doc_scores: Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    options: &HfNllOptions,
) -> Result<Tensor<B, 1>> {
    let (generator, shifted, dims) = prepare(seq_logits, &doc_scores, target, options)?;
    let counted = shifted.clone().not_equal_elem(options.pad_id);
    let per_example = rag_token_core(
        VocabLogProbs::new(generator, GeneratorOutput::Logits),
        doc_scores,
        shifted,
        counted.clone(),
        options.epsilon,
        dims,
    );
    Ok(reduce(per_example, Some(counted), options.reduction()))
}

/// `RagSequenceForGeneration.get_nll(seq_logits, doc_scores, target, reduce_loss, epsilon,
/// exclude_bos_score, n_docs)`; shapes as in [`rag_token_get_nll`].
pub fn rag_sequence_get_nll<B: Backend>(
    seq_logits: Tensor<B, 3>,
    doc_scores: Tensor<B, 2>,
    target: Tensor<B, 2, Int>,
    options: &HfNllOptions,
) -> Result<Tensor<B, 1>> {
    let (generator, shifted, dims) = prepare(seq_logits, &doc_scores, target, options)?;
    let RagDims { batch, docs, len, vocab } = dims;
    let counted = shifted.clone().not_equal_elem(options.pad_id);
    let ignored = ignored_per_doc(counted.clone(), docs);
    let doc_log_prior = log_softmax(doc_scores, 1).reshape([batch, docs, 1]);
    // Quirk 2: the prior joins the token scores at shifted position 1 only.
    let with_prior_at_1 = |per_token: Tensor<B, 3>, prior: Tensor<B, 3>| -> Tensor<B, 3> {
        if len < 2 {
            return per_token;
        }
        let mut parts = vec![per_token.clone().narrow(2, 0, 1), per_token.clone().narrow(2, 1, 1) + prior];
        if len > 2 {
            parts.push(per_token.narrow(2, 2, len - 2));
        }
        Tensor::cat(parts, 2)
    };
    let log_probs = VocabLogProbs::new(generator, GeneratorOutput::Logits);
    let token_ll = with_prior_at_1(log_probs.gather(doc_index(shifted.clone(), docs)), doc_log_prior.clone())
        .mask_fill(ignored.clone(), 0.0);
    let mut joint_ll = token_ll.clone().sum_dim(2);
    if options.exclude_bos_score
        && let Some(bos_id) = options.bos_id
    {
        // Quirk 4: evaluated on the device, so no host round trip decides the branch.
        let use_bos = shifted.narrow(1, 0, 1).equal_elem(bos_id).all().reshape([1, 1, 1]).expand([batch, docs, 1]);
        let without_first = joint_ll.clone() - token_ll.narrow(2, 0, 1);
        joint_ll = joint_ll.mask_where(use_bos, without_first);
    }
    let joint_smooth = (options.epsilon > 0.0).then(|| {
        with_prior_at_1(log_probs.vocab_sum(), doc_log_prior.mul_scalar(vocab as f64))
            .mask_fill(ignored, 0.0)
            .sum_dim(2)
            .reshape([batch, docs])
    });
    let per_example = marginalize_sequences(joint_ll.reshape([batch, docs]), joint_smooth, options.epsilon, vocab);
    Ok(reduce(per_example, Some(counted), options.reduction()))
}
