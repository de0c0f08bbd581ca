//! [`RagModel`]: question text → query vectors → index top-K passages and their exact stored
//! vectors → differentiable doc scores `q·dᵀ` → generator inputs built from the passages →
//! generator on the `B·K` rows → the configured loss.
//!
//! Beside it, what it is made of: [`config`] (`RagConfig`, the loss and the context format),
//! [`context`] (passages and questions into generator rows), [`knowledge`] (the store and index
//! it retrieves from) and [`indexing`] (a store encoded into an index).

pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod indexing;
pub(crate) mod knowledge;

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rag_generator::{
    AnswerLogits, Generator, GeneratorKind, GeneratorTokenizer, SpecialTokens, answer_token_log_probs,
};
use rag_losses::{
    LsrConfig, NllConfig, Reduction, lm_nll, lm_scores, lsr_loss, rag_sequence_nll, rag_token_nll, split_docs,
};
use rag_retriever::{BiEncoder, TextTokenizer, TokenBatch};

use crate::model::config::{ContextFormat, RagConfig, RagLoss};
use crate::model::context::{PassageText, answer_ids, context_rows};
use crate::model::knowledge::{Knowledge, Retrieval};
use crate::{RagError, Result};

/// What [`RagModel::loss`] returns.
#[derive(Debug, Clone)]
pub struct RagOutput<B: Backend> {
    /// The mean of `per_example`, `[1]`: what a training step differentiates.
    pub loss: Tensor<B, 1>,
    /// The loss of each example `[B]`.
    pub per_example: Tensor<B, 1>,
    /// The retrieval the loss was computed from.
    pub retrieval: Retrieval<B>,
}

/// A RAG model: a bi-encoder retriever, a generator, their tokenizers and a [`RagConfig`].
/// The index and passages live outside it ([`Knowledge`]), so an optimizer step can replace the
/// module while the trainer refreshes the index.
///
/// Gradients reach the generator and the query encoder; the document encoder only when
/// [`RagConfig::train_document_encoder`] is set (the retrieved passages are then re-encoded in
/// the step), never the index.
#[derive(Module, Debug)]
pub struct RagModel<B: Backend> {
    retriever: BiEncoder<B>,
    generator: Generator<B>,
    config: RagConfig,
    /// Questions, truncated to `config.max_query_tokens`.
    query_tokenizer: TextTokenizer,
    /// Passages, as the index was built.
    passage_tokenizer: TextTokenizer,
    generator_tokenizer: GeneratorTokenizer,
}

impl<B: Backend> RagModel<B> {
    /// Composes a model. The retriever's document side is frozen unless
    /// `config.train_document_encoder`; the context format must suit the generator
    /// (`Seq2Seq` for BART, `Background` for LLaMA) and the tokenizers must fit the models'
    /// vocabularies.
    pub fn new(
        retriever: BiEncoder<B>,
        generator: Generator<B>,
        passage_tokenizer: TextTokenizer,
        generator_tokenizer: GeneratorTokenizer,
        config: RagConfig,
    ) -> Result<Self> {
        config.validate()?;
        let fits = match generator.kind() {
            GeneratorKind::Seq2Seq => matches!(config.context, ContextFormat::Seq2Seq { .. }),
            GeneratorKind::DecoderOnly => matches!(config.context, ContextFormat::Background { .. }),
        };
        if !fits {
            return Err(RagError::Config {
                path: "<RagConfig>".into(),
                field: "context".into(),
                message: format!(
                    "a {} generator needs the {} context format",
                    generator.architecture(),
                    if generator.kind() == GeneratorKind::Seq2Seq { "seq2seq" } else { "background" }
                ),
            });
        }
        generator.special_tokens()?;
        if generator_tokenizer.vocab_size() > generator.vocab_size() {
            return Err(RagError::Vocabulary {
                model: "generator",
                tokenizer: generator_tokenizer.path().to_path_buf(),
                tokens: generator_tokenizer.vocab_size(),
                embeddings: generator.vocab_size(),
            });
        }
        let bert = retriever.query_encoder().bert();
        if passage_tokenizer.vocab_size() > bert.vocab_size() {
            return Err(RagError::Vocabulary {
                model: "retriever",
                tokenizer: passage_tokenizer.path().to_path_buf(),
                tokens: passage_tokenizer.vocab_size(),
                embeddings: bert.vocab_size(),
            });
        }
        let query_tokenizer = TextTokenizer::from_tokenizer(
            passage_tokenizer.inner().clone(),
            PathBuf::from("<query tokenizer>"),
            Some(config.max_query_tokens.min(bert.max_positions())),
        )?;
        let retriever = retriever.with_trainable_documents(config.train_document_encoder);
        Ok(Self { retriever, generator, config, query_tokenizer, passage_tokenizer, generator_tokenizer })
    }

    /// The same model with other options (the same checks as [`RagModel::new`]; the document
    /// encoder's trainability follows `config.train_document_encoder`).
    pub fn with_config(mut self, config: RagConfig) -> Result<Self> {
        config.validate()?;
        let decoder_only = self.generator.kind() == GeneratorKind::DecoderOnly;
        if decoder_only != matches!(config.context, ContextFormat::Background { .. }) {
            return Err(RagError::Config {
                path: "<RagConfig>".into(),
                field: "context".into(),
                message: format!("does not suit the {} generator", self.generator.architecture()),
            });
        }
        self.query_tokenizer = TextTokenizer::from_tokenizer(
            self.passage_tokenizer.inner().clone(),
            PathBuf::from("<query tokenizer>"),
            Some(config.max_query_tokens.min(self.retriever.query_encoder().bert().max_positions())),
        )?;
        self.config = config;
        Ok(self.refreeze())
    }

    /// The same model with the document encoder trained in the step or not
    /// ([`RagConfig::train_document_encoder`]).
    pub fn with_document_training(mut self, trainable: bool) -> Self {
        self.config.train_document_encoder = trainable;
        self.refreeze()
    }

    /// Every parameter marked trainable again, then the document encoder frozen unless the
    /// config trains it: for a model brought back to an autodiff backend
    /// (`RagModel::from_inner`), whose parameters may have lost the flag (BURN_0_21.md, trap 13).
    pub fn into_trainable(self) -> Self {
        self.map(&mut RequireGrad).refreeze()
    }

    /// Re-applies the document encoder's trainability after its parameters were replaced.
    pub(crate) fn refreeze(mut self) -> Self {
        self.retriever = self.retriever.with_trainable_documents(self.config.train_document_encoder);
        self
    }

    /// The retriever.
    pub fn retriever(&self) -> &BiEncoder<B> {
        &self.retriever
    }

    /// The generator.
    pub fn generator(&self) -> &Generator<B> {
        &self.generator
    }

    /// The options.
    pub fn config(&self) -> &RagConfig {
        &self.config
    }

    /// The retriever's tokenizer (for passages; questions use it truncated to
    /// `config.max_query_tokens`).
    pub fn passage_tokenizer(&self) -> &TextTokenizer {
        &self.passage_tokenizer
    }

    /// The generator's tokenizer.
    pub fn generator_tokenizer(&self) -> &GeneratorTokenizer {
        &self.generator_tokenizer
    }

    /// The special tokens the generator's rows are built with.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.generator.special_tokens().expect("checked in RagModel::new")
    }

    /// Query vectors `[B, d]` of questions, in the autodiff graph.
    pub fn encode_questions(&self, questions: &[&str]) -> Result<Tensor<B, 2>> {
        let tokens = self.question_tokens(questions)?;
        Ok(self.retriever.encode_queries(&tokens)?)
    }

    /// The query encoder's input for questions: tokenized, truncated to
    /// `config.max_query_tokens`, padded to the longest.
    pub fn question_tokens(&self, questions: &[&str]) -> Result<TokenBatch> {
        if questions.is_empty() {
            return Err(crate::error::input("questions", "no questions"));
        }
        Ok(self.query_tokenizer.encode(questions)?)
    }

    /// Retrieves `config.n_docs` passages per question from `knowledge`: the index searches with
    /// the query vectors' values, and the doc scores are recomputed as `q·d` from the exact
    /// stored vectors (or, when the document encoder is trained, from the passages re-encoded
    /// now), so they are differentiable.
    pub fn retrieve(&self, knowledge: &Knowledge, questions: &[&str]) -> Result<Retrieval<B>> {
        let query = self.encode_questions(questions)?;
        let [b, d] = query.dims();
        let k = self.config.n_docs;
        let values: Vec<f32> =
            query.clone().into_data().convert::<f32>().into_vec().expect("converted to f32 just above");
        let hits = knowledge.search(&values, d, k)?;
        let passages: Vec<Vec<PassageText>> = (0..b)
            .map(|q| hits.ids(q).iter().map(|&id| knowledge.passage(id)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let device = query.device();
        let documents = if self.config.train_document_encoder {
            self.encode_passages(&passages.concat())?.reshape([b, k, d])
        } else {
            Tensor::<B, 3>::from_data(TensorData::new(hits.vectors, [b, k, d]), (&device, query.dtype()))
        };
        let scores = BiEncoder::<B>::scores(query, documents).div_scalar(self.config.retriever_temperature);
        let mut retrieval = Retrieval { passages, doc_scores: scores };
        retrieval.doc_scores = retrieval.doc_scores.clone().mask_fill(retrieval.empty_slots(), f64::NEG_INFINITY);
        Ok(retrieval)
    }

    /// Document vectors `[n, d]` of passages, encoded as an index is built (`(title, text)`
    /// pairs, the text alone when untitled), in the autodiff graph when the document encoder is
    /// trained.
    pub fn encode_passages(&self, passages: &[PassageText]) -> Result<Tensor<B, 2>> {
        let titled: Vec<usize> = (0..passages.len()).filter(|&i| !passages[i].title.is_empty()).collect();
        let untitled: Vec<usize> = (0..passages.len()).filter(|&i| passages[i].title.is_empty()).collect();
        let mut parts = Vec::new();
        if !titled.is_empty() {
            let pairs: Vec<(&str, &str)> =
                titled.iter().map(|&i| (passages[i].title.as_str(), passages[i].text.as_str())).collect();
            parts.push(self.retriever.encode_documents(&self.passage_tokenizer.encode_pairs(&pairs)?)?);
        }
        if !untitled.is_empty() {
            let texts: Vec<&str> = untitled.iter().map(|&i| passages[i].text.as_str()).collect();
            parts.push(self.retriever.encode_documents(&self.passage_tokenizer.encode(&texts)?)?);
        }
        let vectors = Tensor::cat(parts, 0);
        // Back to input order: input row i sits at position order[i] of the concatenation.
        let mut order = vec![0i64; passages.len()];
        for (position, &i) in titled.iter().chain(&untitled).enumerate() {
            order[i] = position as i64;
        }
        let device = vectors.device();
        Ok(vectors.select(0, Tensor::from_data(TensorData::new(order, [passages.len()]), &device)))
    }

    /// The generator's input rows (`B·K`, row `b·K + z`) for the questions and their passages.
    pub fn context_rows(&self, questions: &[&str], passages: &[Vec<PassageText>]) -> Result<Vec<Vec<u32>>> {
        let special = self.special_tokens();
        let mut rows = Vec::new();
        for (question, passages) in questions.iter().zip(passages) {
            rows.extend(context_rows(&self.config.context, &self.generator_tokenizer, special, question, passages)?);
        }
        Ok(rows)
    }

    /// The target tokens of an answer (see [`crate::ContextFormat`]).
    pub fn answer_ids(&self, answer: &str) -> Result<Vec<u32>> {
        answer_ids(&self.config.context, &self.generator_tokenizer, self.special_tokens(), answer)
    }

    /// Retrieves for `questions` and computes the configured loss of `answers` (one per
    /// question).
    pub fn loss(&self, knowledge: &Knowledge, questions: &[&str], answers: &[&str]) -> Result<RagOutput<B>> {
        if questions.len() != answers.len() {
            return Err(crate::error::input(
                "answers",
                format!("{} questions and {} answers", questions.len(), answers.len()),
            ));
        }
        let retrieval = self.retrieve(knowledge, questions)?;
        self.loss_from_retrieval(questions, answers, retrieval)
    }

    /// The configured loss of `answers` given an existing retrieval for `questions`.
    pub fn loss_from_retrieval(
        &self,
        questions: &[&str],
        answers: &[&str],
        retrieval: Retrieval<B>,
    ) -> Result<RagOutput<B>> {
        let contexts = self.context_rows(questions, &retrieval.passages)?;
        let answers: Vec<Vec<u32>> = answers.iter().map(|a| self.answer_ids(a)).collect::<Result<_>>()?;
        let AnswerLogits { logits, target, mask } = match self.config.generator_precision.half_dtype() {
            None => self.generator.answer_logits(&contexts, &answers, self.special_tokens())?,
            Some(half) => {
                // Mixed precision: the forward pass in `half` over the f32 weights, the loss in f32.
                let master = self.generator.dtype();
                let generator = rag_hf::cast_module_in_graph(self.generator.clone(), half);
                let out = generator.answer_logits(&contexts, &answers, self.special_tokens())?;
                AnswerLogits { logits: out.logits.cast(master), ..out }
            }
        };
        let per_example = self.loss_of_logits(logits, &retrieval, target, mask)?;
        let loss = per_example.clone().mean();
        Ok(RagOutput { loss, per_example, retrieval })
    }

    /// The configured per-example loss `[B]` of answer-aligned logits `[B·K, A, V]`.
    fn loss_of_logits(
        &self,
        logits: Tensor<B, 3>,
        retrieval: &Retrieval<B>,
        target: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
    ) -> Result<Tensor<B, 1>> {
        let [b, k] = retrieval.doc_scores.dims();
        let a = target.dims()[1];
        let doc_scores = retrieval.doc_scores.clone();
        let nll = NllConfig::new().with_label_smoothing(self.config.label_smoothing).with_reduction(Reduction::None);
        let per_doc = |t: Tensor<B, 2, Int>| t.reshape([b, 1, a]).expand([b, k, a]).reshape([b * k, a]);
        let per_doc_mask = |m: Tensor<B, 2, Bool>| m.reshape([b, 1, a]).expand([b, k, a]);
        Ok(match self.config.loss {
            RagLoss::RagToken => rag_token_nll(split_docs(logits, k)?, doc_scores, target, mask, &nll)?,
            RagLoss::RagSequence => rag_sequence_nll(split_docs(logits, k)?, doc_scores, target, mask, &nll)?,
            RagLoss::LmFinetune => {
                let rows = lm_nll(logits, per_doc(target), per_doc_mask(mask).reshape([b * k, a]), &nll)?;
                rows.reshape([b, k]).mask_fill(retrieval.empty_slots(), 0.0).sum_dim(1).reshape([b])
            }
            RagLoss::Lsr => {
                let token_log_probs = answer_token_log_probs(logits.detach(), target);
                let scores = lm_scores(token_log_probs, per_doc_mask(mask), self.config.lsr.score)?
                    .mask_fill(retrieval.empty_slots(), f64::NEG_INFINITY);
                let lsr = LsrConfig::new()
                    .with_lm_temperature(self.config.lsr.lm_temperature)
                    .with_direction(self.config.lsr.direction)
                    .with_reduction(Reduction::None);
                lsr_loss(doc_scores, scores, &lsr)?
            }
        })
    }
}

/// Marks every float parameter trainable.
struct RequireGrad;

impl<B: Backend> burn::module::ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}
