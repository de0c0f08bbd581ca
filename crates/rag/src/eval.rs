//! Evaluation on question/answer examples: retrieval recall@k of the gold passage (or, without
//! one, of a passage containing an answer), and answer exact match and F1 (SQuAD's
//! normalization) of decoded answers.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use rag_generator::GenerationConfig;

use crate::model::{Knowledge, RagModel, Retrieval};
use crate::qa::{QaExample, exact_match, f1_score, has_answer};
use crate::{DecodeMode, RagError, Result};

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Questions per batch.
    pub batch_size: usize,
    /// The k of each recall@k (may exceed the model's `n_docs`: the index is searched that deep).
    pub ks: Vec<usize>,
    /// Decoding mode.
    pub mode: DecodeMode,
    /// Search options (greedy unless `num_beams > 1`).
    pub generation: GenerationConfig,
    /// Answer without retrieval (a closed-book baseline; the model must have `n_docs == 1`):
    /// recall is not measured.
    pub closed_book: bool,
}

/// What [`evaluate`] measured, as fractions in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Examples evaluated.
    pub examples: usize,
    /// `(k, recall@k)`, empty for closed-book.
    pub recall: Vec<(usize, f64)>,
    /// Exact match.
    pub exact_match: f64,
    /// Token F1.
    pub f1: f64,
}

impl EvalReport {
    /// As named metrics: `recall_at_<k>`, `exact_match`, `f1`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> = self.recall.iter().map(|(k, r)| (format!("recall_at_{k}"), *r)).collect();
        m.insert("exact_match".into(), self.exact_match);
        m.insert("f1".into(), self.f1);
        m
    }

    /// recall@k, if measured.
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|(kk, _)| *kk == k).map(|(_, r)| *r)
    }
}

/// Evaluates `model` on `examples` (give a plain-backend model: this is inference).
pub fn evaluate<B: Backend>(
    model: &RagModel<B>,
    knowledge: &Knowledge,
    examples: &[QaExample],
    options: &EvalOptions,
) -> Result<EvalReport> {
    if examples.is_empty() || options.batch_size == 0 {
        return Err(RagError::Mismatch("evaluation needs examples and a batch size of at least 1".into()));
    }
    if options.closed_book && model.config().n_docs != 1 {
        return Err(RagError::Mismatch("a closed-book evaluation needs a model with n_docs = 1".into()));
    }
    let deepest = options.ks.iter().copied().max().unwrap_or(0);
    let mut hits = vec![0usize; options.ks.len()];
    let (mut em, mut f1) = (0.0, 0.0);
    for chunk in examples.chunks(options.batch_size) {
        let questions: Vec<&str> = chunk.iter().map(|e| e.question.as_str()).collect();
        let retrieval = if options.closed_book {
            Retrieval::closed_book(questions.len(), &model.generator().device())
        } else {
            if deepest > 0 {
                let query = model.encode_questions(&questions)?;
                let values: Vec<f32> = query.into_data().convert::<f32>().into_vec().expect("converted to f32");
                let found = knowledge.index.search(&values, deepest)?;
                for (q, example) in chunk.iter().enumerate() {
                    let ids = found.ids(q);
                    let first_hit = ids.iter().position(|&id| match example.gold {
                        Some(gold) => id == gold,
                        None => knowledge.passage(id).is_ok_and(|p| has_answer(&p.text, &example.answers)),
                    });
                    for (i, &k) in options.ks.iter().enumerate() {
                        hits[i] += usize::from(first_hit.is_some_and(|r| r < k));
                    }
                }
            }
            model.retrieve(knowledge, &questions)?
        };
        let answers = model.answer_retrieved(&questions, &retrieval, options.mode, &options.generation)?;
        for (answer, example) in answers.iter().zip(chunk) {
            em += f64::from(u8::from(exact_match(&answer.text, &example.answers)));
            f1 += f1_score(&answer.text, &example.answers);
        }
    }
    let n = examples.len() as f64;
    let recall = if options.closed_book {
        Vec::new()
    } else {
        options.ks.iter().zip(&hits).map(|(&k, &h)| (k, h as f64 / n)).collect()
    };
    Ok(EvalReport { examples: examples.len(), recall, exact_match: em / n, f1: f1 / n })
}
