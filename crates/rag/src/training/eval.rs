//! Evaluation on question/answer examples: retrieval recall@k of the gold passage (or, without
//! one, of a passage containing an answer), and answer exact match and F1 (SQuAD's
//! normalization) of decoded answers.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use rag_generator::GenerationConfig;

use crate::files::qa::{QaExample, exact_match, f1_score, has_answer};
use crate::model::RagModel;
use crate::model::knowledge::{Knowledge, Retrieval};
use crate::{DecodeMode, Result};

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
    /// What the generator reads.
    pub passages: PassageSource,
}

/// The passages the generator reads, in training ([`crate::RagTask`]) and in evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassageSource {
    /// The model's own top-K from the index (evaluation measures recall@k).
    #[default]
    Retrieved,
    /// None: a closed-book baseline (the model must have `n_docs == 1`).
    ClosedBook,
    /// The gold passage alone (the other `K − 1` slots empty, prior 1 on the gold): the oracle
    /// that bounds what the generator can read, or a reading warm-up in training. Every example
    /// needs a gold id. The retriever gets no gradient.
    Gold,
    /// The gold passage in the first slot and the retriever's best other passages in the
    /// other `K − 1` (a uniform prior over them; the retriever gets no gradient): LM
    /// fine-tuning in which every question has its passage to read beside hard negatives to
    /// ignore, whatever the retriever's recall. Every example needs a gold id.
    GoldAndRetrieved,
    /// BM25's top-K over the store (its index beside the store, `<store>.bm25/`, built when
    /// missing; a uniform prior over them): the keyword retriever with the same generator, in
    /// evaluation only (recall@k is BM25's).
    Bm25,
}

impl PassageSource {
    /// Its name in reports: `retrieved`, `closed-book`, `gold`, `gold-and-retrieved`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Retrieved => "retrieved",
            Self::ClosedBook => "closed-book",
            Self::Gold => "gold",
            Self::GoldAndRetrieved => "gold-and-retrieved",
            Self::Bm25 => "bm25",
        }
    }
}

/// The retrieval of `source` for `examples` when it does not come from the retriever
/// (closed book, gold passage), `None` for [`PassageSource::Retrieved`].
pub(crate) fn fixed_retrieval<B: Backend>(
    model: &RagModel<B>,
    knowledge: &Knowledge,
    source: PassageSource,
    examples: &[&QaExample],
) -> Result<Option<Retrieval<B>>> {
    let device = model.generator().device();
    Ok(match source {
        PassageSource::Retrieved => None,
        PassageSource::Bm25 => {
            return Err(crate::error::input("passages", "BM25 passages are read in evaluation only, not in training"));
        }
        PassageSource::ClosedBook => Some(Retrieval::closed_book(examples.len(), &device)),
        PassageSource::Gold | PassageSource::GoldAndRetrieved => {
            let golds = examples
                .iter()
                .map(|e| {
                    let id = e.gold.ok_or_else(|| {
                        crate::error::input(
                            "examples",
                            format!("reading the gold passage needs a gold id; `{}` has none", e.question),
                        )
                    })?;
                    knowledge.passage(id)
                })
                .collect::<Result<Vec<_>>>()?;
            let n_docs = model.config().n_docs;
            let rows = if source == PassageSource::GoldAndRetrieved && n_docs > 1 {
                // The retriever's own top-K (its scores are not used), the gold passage first.
                let questions: Vec<&str> = examples.iter().map(|e| e.question.as_str()).collect();
                let retrieved = model.retrieve(knowledge, &questions)?;
                golds
                    .into_iter()
                    .zip(retrieved.passages)
                    .map(|(gold, found)| {
                        let gold_id = gold.id;
                        let others = found.into_iter().filter(|p| p.id != gold_id).take(n_docs - 1);
                        std::iter::once(gold).chain(others).collect()
                    })
                    .collect()
            } else {
                golds.into_iter().map(|gold| vec![gold]).collect()
            };
            Some(Retrieval::given_rows(rows, n_docs, &device))
        }
    })
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
    /// The generated answer of each example, in order.
    pub predictions: Vec<String>,
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
        return Err(crate::error::input("examples", "evaluation needs examples and a batch size of at least 1"));
    }
    if options.passages == PassageSource::ClosedBook && model.config().n_docs != 1 {
        return Err(crate::error::input("passages", "a closed-book evaluation needs a model with n_docs = 1"));
    }
    let retrieved = matches!(options.passages, PassageSource::Retrieved | PassageSource::Bm25);
    let deepest = options.ks.iter().copied().max().unwrap_or(0);
    let bm25 = match options.passages {
        PassageSource::Bm25 => Some(crate::Bm25::open_or_create(&knowledge.store, false)?),
        _ => None,
    };
    let mut hits = vec![0usize; options.ks.len()];
    let (mut em, mut f1) = (0.0, 0.0);
    let mut predictions = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(options.batch_size) {
        let questions: Vec<&str> = chunk.iter().map(|e| e.question.as_str()).collect();
        let examples: Vec<&QaExample> = chunk.iter().collect();
        let fixed = match &bm25 {
            Some(bm25) => {
                let n_docs = model.config().n_docs;
                let mut rows = Vec::with_capacity(chunk.len());
                for (q, example) in questions.iter().zip(chunk) {
                    let ranked: Vec<u64> = bm25.search(q, deepest.max(n_docs))?.into_iter().map(|(id, _)| id).collect();
                    let first_hit = first_relevant(&ranked, example, |id| {
                        Ok(has_answer(&knowledge.passage(id)?.text, &example.answers))
                    })?;
                    for (i, &k) in options.ks.iter().enumerate() {
                        hits[i] += usize::from(first_hit.is_some_and(|r| r < k));
                    }
                    rows.push(ranked.iter().take(n_docs).map(|&id| knowledge.passage(id)).collect::<Result<Vec<_>>>()?);
                }
                Some(Retrieval::given_rows(rows, n_docs, &model.generator().device()))
            }
            None => fixed_retrieval(model, knowledge, options.passages, &examples)?,
        };
        let retrieval = match fixed {
            Some(fixed) => fixed,
            None => {
                if deepest > 0 {
                    let query = model.encode_questions(&questions)?;
                    let dim = query.dims()[1];
                    let values: Vec<f32> = query.into_data().convert::<f32>().into_vec().expect("converted to f32");
                    let found = knowledge.search(&values, dim, deepest)?;
                    for (q, example) in chunk.iter().enumerate() {
                        let first_hit = first_relevant(found.ids(q), example, |id| {
                            Ok(has_answer(&knowledge.passage(id)?.text, &example.answers))
                        })?;
                        for (i, &k) in options.ks.iter().enumerate() {
                            hits[i] += usize::from(first_hit.is_some_and(|r| r < k));
                        }
                    }
                }
                model.retrieve(knowledge, &questions)?
            }
        };
        let answers = model.answer_retrieved(&questions, &retrieval, options.mode, &options.generation)?;
        for (answer, example) in answers.iter().zip(chunk) {
            em += f64::from(u8::from(exact_match(&answer.text, &example.answers)));
            f1 += f1_score(&answer.text, &example.answers);
        }
        predictions.extend(answers.into_iter().map(|a| a.text));
    }
    let n = examples.len() as f64;
    let recall =
        if retrieved { options.ks.iter().zip(&hits).map(|(&k, &h)| (k, h as f64 / n)).collect() } else { Vec::new() };
    Ok(EvalReport { examples: examples.len(), recall, exact_match: em / n, f1: f1 / n, predictions })
}

/// The rank of the first relevant passage of `ranked` for `example`: its gold id when it has
/// one, else the first for which `contains_answer` holds (DPR's has-answer).
pub(crate) fn first_relevant(
    ranked: &[u64],
    example: &QaExample,
    mut contains_answer: impl FnMut(u64) -> Result<bool>,
) -> Result<Option<usize>> {
    for (rank, &id) in ranked.iter().enumerate() {
        let relevant = match example.gold {
            Some(gold) => id == gold,
            None => contains_answer(id)?,
        };
        if relevant {
            return Ok(Some(rank));
        }
    }
    Ok(None)
}
