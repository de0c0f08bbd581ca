//! Decoding a RAG model from retrieved contexts.
//!
//! - RAG-Token: [`RagTokenDecoder`] is a [`StepModel`] whose rows are (example, beam) and whose
//!   next-token distribution is the marginal `log Σ_z p(z|x) p(y_t | x, z, y_<t)` over the
//!   generator's `n` document rows of each; `select_rows` moves a row's `n` document caches
//!   together. So greedy and beam search are `rag_generator::generate` itself, with HF's
//!   semantics (HF's `RagTokenForGeneration.generate` does the same over its marginalized
//!   log-probs). Over a decoder-only LM it is REPLUG / RA-DIT ensemble decoding.
//! - RAG-Sequence, thorough decoding ([`rag_sequence_thorough`]): beam search per document,
//!   duplicates removed, every candidate rescored on every document with RAG-Sequence's
//!   marginal likelihood, the best kept (HF's `RagSequenceForGeneration.generate`).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rag_generator::{Bart, DecodeState, Generated, GenerationConfig, StepModel, generate};
use rag_losses::hf::{HfNllOptions, rag_sequence_get_nll};
use rag_losses::logsumexp;

use crate::Result;

/// RAG-Token's marginalizing decoder over a generator `M` with `n_docs` document rows per row.
///
/// Over a seq2seq generator this is RAG-Token decoding; over a decoder-only LM whose document
/// rows hold the `k` augmented prompts it is REPLUG's / RA-DIT's ensemble decoding, which mixes
/// the `k` next-token distributions with weights `p_R(c|x)`: the same computation.
#[derive(Debug, Clone, Copy)]
pub struct RagTokenDecoder<'a, M> {
    model: &'a M,
    n_docs: usize,
}

/// The state of [`RagTokenDecoder`]: the generator's state `S` over `rows · n_docs` document rows
/// (row `r·n_docs + z`) and each row's document log-prior `log p(z|x)` `[rows, n_docs]`.
#[derive(Debug, Clone)]
pub struct RagTokenState<B: Backend, S> {
    documents: S,
    doc_log_prior: Tensor<B, 2>,
}

impl<'a, M> RagTokenDecoder<'a, M> {
    /// A decoder over `model` with `n_docs` documents per example.
    pub fn new(model: &'a M, n_docs: usize) -> Self {
        Self { model, n_docs }
    }

    /// Starts decoding from the generator's state over the `b·n` document rows (for BART,
    /// `Bart::begin` of the context rows, so each is encoded once) and the document scores
    /// `[b, n]`, whose log-softmax is the prior.
    pub fn begin<B: Backend, S>(&self, documents: S, doc_scores: Tensor<B, 2>) -> RagTokenState<B, S> {
        RagTokenState { documents, doc_log_prior: log_softmax(doc_scores, 1) }
    }
}

impl<B: Backend, S: DecodeState<B>> DecodeState<B> for RagTokenState<B, S> {
    fn rows(&self) -> usize {
        self.doc_log_prior.dims()[0]
    }

    fn len(&self) -> usize {
        self.documents.len()
    }

    fn device(&self) -> B::Device {
        self.doc_log_prior.device()
    }

    fn select_rows(&mut self, rows: Tensor<B, 1, Int>) {
        let n = self.doc_log_prior.dims()[1];
        let r = rows.dims()[0];
        let docs = Tensor::<B, 1, Int>::arange(0..n as i64, &rows.device()).reshape([1, n]);
        let document_rows = (rows.clone().reshape([r, 1]).mul_scalar(n as i64) + docs).reshape([r * n]);
        self.documents.select_rows(document_rows);
        self.doc_log_prior = self.doc_log_prior.clone().select(0, rows);
    }
}

impl<B: Backend, M: StepModel<B>> StepModel<B> for RagTokenDecoder<'_, M> {
    type State = RagTokenState<B, M::State>;

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn max_positions(&self) -> usize {
        self.model.max_positions()
    }

    /// The marginal log-probs `[rows, t, V]` (already normalized: a search's `log_softmax`
    /// leaves them unchanged).
    fn step_all(&self, state: &mut Self::State, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [rows, t] = tokens.dims();
        let n = self.n_docs;
        let per_doc = tokens.reshape([rows, 1, t]).expand([rows, n, t]).reshape([rows * n, t]);
        let logits = self.model.step_all(&mut state.documents, per_doc);
        let vocab = logits.dims()[2];
        let prior = state.doc_log_prior.clone().cast(logits.dtype()).reshape([rows, n, 1, 1]);
        let joint = log_softmax(logits, 2).reshape([rows, n, t, vocab]) + prior;
        logsumexp(joint, 1).reshape([rows, t, vocab])
    }
}

/// RAG-Sequence thorough decoding of `b` examples: for example `i`, beam search with
/// `config.num_beams` beams (returning all of them) on each of its `n` context rows, duplicates
/// removed when `deduplicate`, every candidate's RAG-Sequence loss computed on all `n` documents
/// with `doc_scores[i]` (`options` as HF's: `exclude_bos_score = true`), and the
/// `num_return_sequences` candidates of lowest loss kept, best first. Rows are padded with the
/// generator's pad id to the longest, as HF's `_cat_and_pad`.
pub fn rag_sequence_thorough<B: Backend>(
    generator: &Bart<B>,
    context_input_ids: Tensor<B, 2, Int>,
    context_attention_mask: Tensor<B, 2, Int>,
    doc_scores: Tensor<B, 2>,
    config: &GenerationConfig,
    deduplicate: bool,
    options: &HfNllOptions,
) -> Result<Vec<Vec<u32>>> {
    let [b, n] = doc_scores.dims();
    let device = doc_scores.device();
    let mut best = Vec::new();
    for i in 0..b {
        let ids = context_input_ids.clone().narrow(0, i * n, n);
        let mask = context_attention_mask.clone().narrow(0, i * n, n);
        // The example's contexts are encoded once, for the beams and for the rescoring.
        let encoded = generator.encode(ids, mask.clone());
        let out = beams_per_document(generator, encoded.clone(), mask.clone(), config)?;
        let mut candidates: Vec<Vec<u32>> = Vec::new();
        for seq in out.sequences {
            if !deduplicate || !candidates.contains(&seq) {
                candidates.push(seq);
            }
        }
        let c = candidates.len();
        let len = candidates[0].len();
        let flat: Vec<i64> = candidates.iter().flatten().map(|&t| i64::from(t)).collect();
        let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [c, len]), &device);
        let repeat: Vec<i64> = (0..c).flat_map(|_| 0..n as i64).collect();
        let repeat = Tensor::<B, 1, Int>::from_data(TensorData::new(repeat, [c * n]), &device);
        let (encoded, mask) = (encoded.select(0, repeat.clone()), mask.select(0, repeat));
        let decoder_ids = labels.clone().reshape([c, 1, len]).expand([c, n, len]).reshape([c * n, len]);
        let logits = generator.decode(decoder_ids, None, encoded, mask);
        let scores = doc_scores.clone().narrow(0, i, 1).expand([c, n]);
        let loss = rag_sequence_get_nll(logits, scores, labels, options)?;
        let loss: Vec<f64> = loss.into_data().convert::<f64>().to_vec().expect("converted to f64 just above");
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| loss[a].total_cmp(&loss[b]));
        best.extend(order.into_iter().take(config.num_return_sequences).map(|k| candidates[k].clone()));
    }
    Ok(padded(best, generator.config().pad_token_id))
}

/// Beam search with all `num_beams` hypotheses returned, from each of an example's `n` encoded
/// context rows `[n, L, d]` (output rows `z·num_beams + j`).
fn beams_per_document<B: Backend>(
    generator: &Bart<B>,
    encoded: Tensor<B, 3>,
    mask: Tensor<B, 2, Int>,
    config: &GenerationConfig,
) -> Result<Generated> {
    let n = encoded.dims()[0];
    let start = config.decoder_start_token_id.unwrap_or(generator.config().decoder_start_token_id);
    let per_doc = GenerationConfig { num_return_sequences: config.num_beams, ..config.clone() };
    Ok(generate(generator, generator.begin_from_encoded(encoded, mask), &vec![vec![start]; n], &per_doc)?)
}

/// Pads rows with `pad` to the longest (HF's `_cat_and_pad`).
fn padded(mut rows: Vec<Vec<u32>>, pad: u32) -> Vec<Vec<u32>> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    for row in &mut rows {
        row.resize(longest, pad);
    }
    rows
}

/// RAG-Sequence fast decoding (the paper's approximation, no extra forward passes): beam search
/// per document as in [`rag_sequence_thorough`], then each distinct candidate `y` gets
/// `log Σ_{z: y ∈ beam(z)} p(z|x) p(y|x,z)`: documents whose beam did not produce `y` count as
/// probability 0 instead of being rescored. The `num_return_sequences` best are kept.
pub fn rag_sequence_fast<B: Backend>(
    generator: &Bart<B>,
    context_input_ids: Tensor<B, 2, Int>,
    context_attention_mask: Tensor<B, 2, Int>,
    doc_scores: Tensor<B, 2>,
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let [b, n] = doc_scores.dims();
    let log_prior: Vec<f64> =
        log_softmax(doc_scores, 1).into_data().convert::<f64>().to_vec().expect("converted to f64 just above");
    let mut best = Vec::new();
    for i in 0..b {
        let ids = context_input_ids.clone().narrow(0, i * n, n);
        let mask = context_attention_mask.clone().narrow(0, i * n, n);
        let out = beams_per_document(generator, generator.encode(ids, mask.clone()), mask, config)?;
        // (candidate, log marginal) in order of first appearance.
        let mut candidates: Vec<(Vec<u32>, f64)> = Vec::new();
        for (row, seq) in out.sequences.into_iter().enumerate() {
            let z = row / config.num_beams;
            let joint = log_prior[i * n + z] + out.log_probs[row];
            match candidates.iter_mut().find(|(c, _)| *c == seq) {
                Some((_, marginal)) => {
                    let m = marginal.max(joint);
                    *marginal = m + ((*marginal - m).exp() + (joint - m).exp()).ln();
                }
                None => candidates.push((seq, joint)),
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        best.extend(candidates.into_iter().take(config.num_return_sequences).map(|(c, _)| c));
    }
    Ok(padded(best, generator.config().pad_token_id))
}
