//! Answering questions with a [`RagModel`]: retrieval, decoding in one of the modes, and the
//! provenance of every answer.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rag_generator::{
    DecodeState, GenerationConfig, GeneratorKind, GeneratorState, Padded, PaddingSide, SpecialTokens,
    answer_token_log_probs, continuation_logits, generate,
};
use rag_index::NO_ID;

use crate::Result;
use crate::decoding::search::RagTokenDecoder;
use crate::model::RagModel;
use crate::model::context::instruction_ids;
use crate::model::knowledge::{Knowledge, Retrieval};

/// How answers are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Greedy or beam search over the per-token mixture `Σ_z p(z|x) p(y_t|x,z,y_<t)`: RAG-Token
    /// decoding with BART, REPLUG / RA-DIT ensemble decoding with a decoder-only LM. Costs one
    /// generator pass over the `K` document rows of every beam per step.
    Token,
    /// RAG-Sequence thorough decoding: a search per document (greedy, or beam search keeping
    /// every beam, on each passage's row alone), then every distinct candidate rescored on every
    /// document, ranked by the marginal likelihood `Σ_z p(z|x) p(y|x,z)`. Costs `K` searches
    /// plus one teacher-forced pass over `candidates × K` rows. The same for every generator;
    /// HF's own implementation for its RAG checkpoints, with its padding and
    /// `exclude_bos_score`, is [`crate::rag_sequence_thorough`].
    SequenceThorough,
    /// RAG-Sequence fast decoding: the `K` searches, with a candidate's probability under a
    /// document whose search missed it taken as 0. No extra passes.
    SequenceFast,
}

/// A retrieved passage behind an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The passage id.
    pub id: u64,
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
    /// The retriever's prior `p(z|x)`.
    pub prior: f64,
    /// The posterior given the answer, `p(z|x,y) ∝ p(z|x) Π_t p(y_t|x,z,y_<t)`.
    pub posterior: f64,
}

/// An answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The decoded text (special tokens skipped).
    pub text: String,
    /// The generated tokens, up to and including the end-of-sequence token.
    pub tokens: Vec<u32>,
    /// The model's log-likelihood of `tokens` under the mode's marginalization: RAG-Token's
    /// `Σ_t log Σ_z p(z|x) p(y_t|…)` for [`DecodeMode::Token`], RAG-Sequence's
    /// `log Σ_z p(z|x) Π_t p(y_t|…)` otherwise.
    pub log_prob: f64,
    /// The retrieved passages, best prior first (empty slots left out).
    pub passages: Vec<Provenance>,
    /// For [`DecodeMode::Token`]: per generated token `t`, the posterior of each passage
    /// `p(z | x, y_t, y_<t) ∝ p(z|x) p(y_t | x, z, y_<t)` (in `passages` order); empty for the
    /// sequence modes.
    pub token_posteriors: Vec<Vec<f64>>,
}

impl<B: Backend> RagModel<B> {
    /// The decoding that matches how the generator was trained to use its passages:
    /// [`DecodeMode::Token`] for BART (RAG-Token's marginal, what the RAG recipes are measured
    /// with), [`DecodeMode::SequenceThorough`] for a decoder-only LM (RA-DIT's mixture
    /// `Σ_c p_R(c|x) p_LM(y|c∘x)` is over whole answers, and each passage's prompt was a
    /// training example of its own). On the embedded task's RA-DIT LM, the per-token mixture
    /// splices answers from different passages (`shoubro`, from `shoubrobrais` in one passage and
    /// another row's end of sequence): test exact match 0.408 against 0.617 with whole answers.
    /// A decoder-only LM trained with the RAG-Token loss decodes with the per-token mixture it
    /// was trained with (REPLUG's ensemble).
    pub fn default_decode_mode(&self) -> DecodeMode {
        match (self.generator().kind(), self.config().loss) {
            (GeneratorKind::Seq2Seq, _) => DecodeMode::Token,
            (GeneratorKind::DecoderOnly, crate::RagLoss::RagToken) => DecodeMode::Token,
            (GeneratorKind::DecoderOnly, _) => DecodeMode::SequenceThorough,
        }
    }

    /// Answers `questions`: retrieves `config.n_docs` passages each, decodes with `mode` and
    /// `generation` (greedy when `num_beams` is 1; the best sequence is kept), and attaches the
    /// provenance of each answer (one more teacher-forced pass over the `K` document rows).
    /// Call it on a plain backend (`model.valid()` under autodiff): this is inference.
    pub fn answer(
        &self,
        knowledge: &Knowledge,
        questions: &[&str],
        mode: DecodeMode,
        generation: &GenerationConfig,
    ) -> Result<Vec<Answer>> {
        let retrieval = self.retrieve(knowledge, questions)?;
        self.answer_retrieved(questions, &retrieval, mode, generation)
    }

    /// [`RagModel::answer`] with passages already retrieved (one row of `config.n_docs` per
    /// question): for evaluating retrieval and answers from one search, or for answering from
    /// passages chosen another way (a closed-book baseline passes one empty passage).
    pub fn answer_retrieved(
        &self,
        questions: &[&str],
        retrieval: &Retrieval<B>,
        mode: DecodeMode,
        generation: &GenerationConfig,
    ) -> Result<Vec<Answer>> {
        let [b, k] = retrieval.doc_scores.dims();
        if b != questions.len() || k != self.config().n_docs || retrieval.passages.len() != b {
            return Err(crate::error::input(
                "retrieval",
                format!(
                    "{} questions, doc scores [{b}, {k}] and {} passage rows; the model retrieves {} passages",
                    questions.len(),
                    retrieval.passages.len(),
                    self.config().n_docs
                ),
            ));
        }
        let contexts = self.context_rows(questions, &retrieval.passages)?;
        // Every passage's prompt is fed once: the searches, the rescoring and the provenance
        // all continue from this state.
        let prefix = self.begin_rows(questions, &contexts, generation)?;
        let tokens = self.decode(&prefix, retrieval, mode, generation)?;
        self.provenance(&prefix, retrieval, tokens, mode)
    }

    /// The best answer tokens of each question (cut after the first end-of-sequence token).
    fn decode(
        &self,
        prefix: &Prefix<B>,
        retrieval: &Retrieval<B>,
        mode: DecodeMode,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        let special = self.special_tokens();
        let k = self.config().n_docs;
        let best_only = GenerationConfig { num_return_sequences: 1, ..generation.clone() };
        let doc_scores = retrieval.doc_scores.clone();
        let rows: Vec<(Vec<u32>, usize)> = match mode {
            DecodeMode::Token => {
                // One search row per question; its `K` passage rows share its prompt.
                let prompt: Vec<Vec<u32>> = prefix.prompts.iter().step_by(k).cloned().collect();
                let decoder = RagTokenDecoder::new(self.generator(), k);
                let out = generate(&decoder, decoder.begin(prefix.state.clone(), doc_scores), &prompt, &best_only)?;
                out.sequences.into_iter().map(|s| (s, out.prompt_len)).collect()
            }
            DecodeMode::SequenceThorough | DecodeMode::SequenceFast => {
                self.sequence_per_passage(prefix, retrieval, mode, &best_only)?.into_iter().map(|s| (s, 0)).collect()
            }
        };
        Ok(rows
            .into_iter()
            .map(|(sequence, prompt_len)| {
                let new = &sequence[prompt_len.min(sequence.len())..];
                let end = new.iter().position(|&t| t == special.eos).map_or(new.len(), |e| e + 1);
                new[..end].to_vec()
            })
            .collect())
    }

    /// RAG-Sequence decoding over any generator: a search on each passage's row alone
    /// (greedy, or beam search returning all its beams), the distinct answers of a question's
    /// rows as its candidates, each ranked by `log Σ_z p(z|x) p(y|x,z)` over the question's
    /// passages: rescored by one teacher-forced pass over every (candidate, passage) pair for
    /// [`DecodeMode::SequenceThorough`]; for [`DecodeMode::SequenceFast`] a passage whose search
    /// did not produce `y` counts as `p(y|x,z) = 0`. Returns each question's best answer tokens
    /// (cut after the end-of-sequence token). Empty passage slots produce no candidates.
    fn sequence_per_passage(
        &self,
        prefix: &Prefix<B>,
        retrieval: &Retrieval<B>,
        mode: DecodeMode,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        let special = self.special_tokens();
        let k = self.config().n_docs;
        let b = retrieval.passages.len();
        let beams = generation.num_beams;
        let config = GenerationConfig { num_return_sequences: beams, ..generation.clone() };
        let out = generate(self.generator(), prefix.state.clone(), &prefix.prompts, &config)?;
        let log_prior = to_f64(log_softmax(retrieval.doc_scores.clone(), 1));
        let trim = |sequence: &[u32]| -> Vec<u32> {
            let new = &sequence[out.prompt_len.min(sequence.len())..];
            let end = new.iter().position(|&t| t == special.eos).map_or(new.len(), |e| e + 1);
            new[..end].to_vec()
        };
        // Per question: its distinct candidates and, for fast decoding, their marginals over
        // the passages whose search produced them.
        let mut candidates: Vec<Vec<(Vec<u32>, f64)>> = vec![Vec::new(); b];
        for (row, sequence) in out.sequences.iter().enumerate() {
            let (i, z) = (row / beams / k, row / beams % k);
            if retrieval.passages[i][z].id == NO_ID {
                continue;
            }
            let mut tokens = trim(sequence);
            if tokens.is_empty() {
                tokens.push(special.eos);
            }
            let joint = log_prior[i * k + z] + out.log_probs[row];
            match candidates[i].iter_mut().find(|(c, _)| *c == tokens) {
                Some((_, marginal)) => *marginal = log_sum_exp(&[*marginal, joint]),
                None => candidates[i].push((tokens, joint)),
            }
        }
        if mode == DecodeMode::SequenceThorough {
            // Rescoring every candidate on every passage from the passages' cached prompts, a
            // few questions at a time (the caches are `candidates · K` rows, the logits
            // `candidates · K · A · V`).
            const QUESTIONS_PER_PASS: usize = 4;
            for first in (0..b).step_by(QUESTIONS_PER_PASS) {
                let last = (first + QUESTIONS_PER_PASS).min(b);
                let mut rows = Vec::new();
                let mut answers = Vec::new();
                for (i, question) in candidates.iter().enumerate().take(last).skip(first) {
                    for (tokens, _) in question {
                        rows.extend(i * k..(i + 1) * k);
                        answers.push(tokens.clone());
                    }
                }
                if answers.is_empty() {
                    continue;
                }
                let (lp, a) = self.score_answers(prefix, &rows, &answers)?;
                let mut c = 0;
                for i in first..last {
                    for (tokens, marginal) in &mut candidates[i] {
                        let joint: Vec<f64> = (0..k)
                            .filter(|&z| retrieval.passages[i][z].id != NO_ID)
                            .map(|z| {
                                log_prior[i * k + z] + (0..tokens.len()).map(|t| lp[(c * k + z) * a + t]).sum::<f64>()
                            })
                            .collect();
                        *marginal = log_sum_exp(&joint);
                        c += 1;
                    }
                }
            }
        }
        Ok(candidates
            .into_iter()
            .map(|mut c| {
                // The first of equals wins, as in a stable sort.
                c.sort_by(|x, y| y.1.total_cmp(&x.1));
                c.into_iter().next().map(|(tokens, _)| tokens).unwrap_or_default()
            })
            .collect())
    }

    /// `log p(answers[c][t] | row rows[c·K + z])` `[C, K, A]` (flattened) and `A`: each answer
    /// teacher-forced on `K` rows of `prefix`, continuing their cached prompts.
    fn score_answers(&self, prefix: &Prefix<B>, rows: &[usize], answers: &[Vec<u32>]) -> Result<(Vec<f64>, usize)> {
        let k = rows.len() / answers.len();
        let target = Padded::new(answers, self.special_tokens().pad, PaddingSide::Right);
        let a = target.len();
        let mut state = prefix.state.clone();
        if rows.len() != state.rows() || rows.iter().enumerate().any(|(i, &r)| i != r) {
            let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            state.select_rows(Tensor::from_data(TensorData::new(index, [rows.len()]), &self.generator().device()));
        }
        let prompts: Vec<Vec<u32>> = rows.iter().map(|&r| prefix.prompts[r].clone()).collect();
        let per_row: Vec<Vec<u32>> = target.ids.iter().flat_map(|t| std::iter::repeat_n(t.clone(), k)).collect();
        let logits = continuation_logits(self.generator(), &mut state, &prompts, &per_row)?;
        let (target, _) = target.tensors::<B>(&self.generator().device());
        Ok((to_f64(answer_token_log_probs(logits, target)), a))
    }

    /// The generator's decoding state over `contexts` (each question's `K` rows in turn, one
    /// search row each) and each row's search prompt: for a decoder-only LM the last token of
    /// the instruction every prompt of the question ends with (all before it is fed now, once);
    /// for a seq2seq one the decoder start token (`generation`'s, else the config's), the
    /// contexts encoded now.
    fn begin_rows(
        &self,
        questions: &[&str],
        contexts: &[Vec<u32>],
        generation: &GenerationConfig,
    ) -> Result<Prefix<B>> {
        let special = self.special_tokens();
        let special =
            SpecialTokens { decoder_start: generation.decoder_start_token_id.or(special.decoder_start), ..special };
        let shared_suffix = match self.generator().kind() {
            GeneratorKind::Seq2Seq => Vec::new(),
            GeneratorKind::DecoderOnly => questions
                .iter()
                .enumerate()
                .map(|(i, question)| {
                    let n = instruction_ids(&self.config().context, self.generator_tokenizer(), question)?.len();
                    if n == 0 {
                        return Err(crate::error::input(
                            "questions",
                            format!("question {i} makes an empty instruction"),
                        ));
                    }
                    // Every passage row of the question ends with it.
                    Ok(std::iter::repeat_n(n, self.config().n_docs))
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect(),
        };
        let (state, prompts) = self.generator().begin_rows(contexts, 1, &shared_suffix, special)?;
        Ok(Prefix { state, prompts })
    }

    /// Teacher-forces each answer on its `K` passages (from their cached prompts) and fills in
    /// the provenance.
    fn provenance(
        &self,
        prefix: &Prefix<B>,
        retrieval: &Retrieval<B>,
        tokens: Vec<Vec<u32>>,
        mode: DecodeMode,
    ) -> Result<Vec<Answer>> {
        let [b, k] = retrieval.doc_scores.dims();
        let scored: Vec<Vec<u32>> =
            tokens.iter().map(|t| if t.is_empty() { vec![self.special_tokens().eos] } else { t.clone() }).collect();
        let rows: Vec<usize> = (0..b * k).collect();
        let (token_log_probs, a) = self.score_answers(prefix, &rows, &scored)?;
        let log_prior = to_f64(log_softmax(retrieval.doc_scores.clone(), 1));
        let mut answers = Vec::with_capacity(b);
        for (i, tokens) in tokens.into_iter().enumerate() {
            let n = tokens.len();
            let prior = &log_prior[i * k..(i + 1) * k];
            let real: Vec<usize> = (0..k).filter(|&z| retrieval.passages[i][z].id != NO_ID).collect();
            let lp = |z: usize, t: usize| token_log_probs[(i * k + z) * a + t];
            let sequence: Vec<f64> = real.iter().map(|&z| prior[z] + (0..n).map(|t| lp(z, t)).sum::<f64>()).collect();
            let posterior = softmax(&sequence);
            let per_token: Vec<Vec<f64>> =
                (0..n).map(|t| softmax(&real.iter().map(|&z| prior[z] + lp(z, t)).collect::<Vec<_>>())).collect();
            let log_prob = match mode {
                DecodeMode::Token => {
                    (0..n).map(|t| log_sum_exp(&real.iter().map(|&z| prior[z] + lp(z, t)).collect::<Vec<_>>())).sum()
                }
                _ => log_sum_exp(&sequence),
            };
            let passages = real
                .iter()
                .zip(&posterior)
                .map(|(&z, &posterior)| {
                    let p = &retrieval.passages[i][z];
                    Provenance {
                        id: p.id,
                        title: p.title.clone(),
                        text: p.text.clone(),
                        prior: prior[z].exp(),
                        posterior,
                    }
                })
                .collect();
            let text = self.generator_tokenizer().decode(&tokens, true)?;
            answers.push(Answer {
                text,
                tokens,
                log_prob,
                passages,
                token_posteriors: if mode == DecodeMode::Token { per_token } else { Vec::new() },
            });
        }
        Ok(answers)
    }
}

/// The generator's state after every passage row's prompt prefix was fed (or, for a seq2seq
/// generator, every context encoded), and each row's search prompt: what searches and
/// teacher-forced scoring continue from, so no passage is read twice.
struct Prefix<B: Backend> {
    state: GeneratorState<B>,
    prompts: Vec<Vec<u32>>,
}

fn to_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().expect("converted to f64 just above")
}

fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn softmax(values: &[f64]) -> Vec<f64> {
    let total = log_sum_exp(values);
    values.iter().map(|v| (v - total).exp()).collect()
}
