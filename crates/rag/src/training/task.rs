//! [`RagTask`]: the [`TrainTask`] that lets [`rag_trainer::Trainer`] drive a [`RagModel`].

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rag_retriever::EncodeOptions;
use rag_trainer::{BoxError, Metrics, TrainTask};

use crate::files::qa::QaExample;
use crate::model::RagModel;
use crate::model::indexing::refresh_index;
use crate::model::knowledge::Knowledge;
use crate::training::eval::{EvalOptions, PassageSource, evaluate, fixed_retrieval};

/// A [`RagModel`] as a [`TrainTask`]: the configured loss over the live index, evaluation on
/// held-out questions, and the index refresh (every passage re-encoded with the current
/// document encoder, vectors replaced in place).
pub struct RagTask {
    /// The passages and their index (refreshed in place).
    pub knowledge: Knowledge,
    /// Questions evaluated at every evaluation.
    pub eval: Vec<QaExample>,
    /// How they are evaluated.
    pub eval_options: EvalOptions,
    /// What the generator reads in training: retrieved passages, none (the closed-book
    /// baseline; `n_docs` must be 1), the gold passage (a reading warm-up), or the gold passage
    /// beside retrieved ones. Evaluation reads what `eval_options` says (none for a closed-book
    /// stage).
    pub passages: PassageSource,
    /// How the corpus is re-encoded at a refresh.
    pub refresh: EncodeOptions,
}

impl<AB: AutodiffBackend> TrainTask<AB, RagModel<AB>> for RagTask {
    type Item = QaExample;

    fn loss(&mut self, model: &RagModel<AB>, batch: &[&QaExample]) -> Result<Tensor<AB, 1>, BoxError> {
        let questions: Vec<&str> = batch.iter().map(|e| e.question.as_str()).collect();
        let answers: Vec<&str> = batch.iter().map(|e| e.answers[0].as_str()).collect();
        let output = match fixed_retrieval(model, &self.knowledge, self.passages, batch)? {
            Some(retrieval) => model.loss_from_retrieval(&questions, &answers, retrieval)?,
            None => model.loss(&self.knowledge, &questions, &answers)?,
        };
        Ok(output.loss)
    }

    fn evaluate(&mut self, model: &<RagModel<AB> as AutodiffModule<AB>>::InnerModule) -> Result<Metrics, BoxError> {
        let mut options = self.eval_options.clone();
        if self.passages == PassageSource::ClosedBook {
            options.passages = PassageSource::ClosedBook;
        }
        Ok(evaluate(model, &self.knowledge, &self.eval, &options)?.metrics())
    }

    fn refresh(&mut self, model: &<RagModel<AB> as AutodiffModule<AB>>::InnerModule) -> Result<(), BoxError> {
        let encoder = model.retriever().document_encoder();
        refresh_index(
            encoder,
            model.passage_tokenizer(),
            &self.knowledge.store,
            self.knowledge.index.as_mut(),
            &self.refresh,
        )?;
        Ok(())
    }
}
