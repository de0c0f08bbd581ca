//! One training step of the embedded default, on any backend: what `backends` compares across
//! backends and `bench-train` times.
//!
//! The model is initialized on the CPU and copied to the target device, and the corpus is encoded
//! once on the CPU, so every backend starts from the same weights and searches the same index.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use rag::rag_hf::copy_module;
use rag::rag_retriever::EncodeOptions;
use rag::rag_trainer::{AdamW, Decay, Gradients, Trainer, TrainerConfig};
use rag::{
    EmbeddedConfig, EmbeddedSetup, EvalOptions, PassageSource, Precision, QaExample, RagConfig, RagModel, RagTask,
    Recipe,
};

/// The recipe the step trains.
pub const RECIPE: Recipe = Recipe::RagToken;
/// The seed of the initial weights.
const SEED: u64 = 0;

/// The embedded default's data, CPU model, and the training task over its index, made once per
/// process.
pub struct EmbeddedWorld {
    pub setup: EmbeddedSetup,
    pub cpu_model: RagModel<Flex>,
    /// The task `cargo xtask train` trains (retrieved passages), over the CPU model's index;
    /// backends take turns with it.
    task: Mutex<RagTask>,
    /// The trainer whose step is measured: both groups from step 0 at the main stage's learning
    /// rates (as after its reading warm-up), clipping at 1.0, no warm-up or decay.
    trainer: Trainer,
}

impl EmbeddedWorld {
    /// Generates the task under `dir` and encodes its corpus with the CPU model.
    pub fn create(dir: &Path) -> Result<Self> {
        let setup = EmbeddedSetup::create(EmbeddedConfig::default(), dir)?;
        let n_docs = setup.config.n_docs;
        let cpu_model: RagModel<Flex> = setup.model(RECIPE, n_docs, SEED, &Default::default())?;
        let knowledge = setup.knowledge(&cpu_model)?;
        let task = RagTask {
            knowledge,
            eval: Vec::new(),
            // The step never evaluates.
            eval_options: EvalOptions {
                batch_size: 32,
                ks: vec![1],
                mode: rag::DecodeMode::Token,
                generation: Default::default(),
                passages: PassageSource::Retrieved,
            },
            passages: PassageSource::Retrieved,
            refresh: EncodeOptions::default(),
        };
        let (_, rlr, glr) = rag::experiment::recipe_defaults(RECIPE);
        let config = TrainerConfig {
            groups: RECIPE.param_groups(&rag::GroupOptions::new(rlr, glr)),
            decay: Decay::Constant,
            warmup_steps: 0,
            max_grad_norm: Some(1.0),
            seed: SEED,
            progress: false,
            ..TrainerConfig::default()
        };
        let trainer = Trainer::new(config, dir.join("unused-run-dir"));
        Ok(Self { setup, cpu_model, task: Mutex::new(task), trainer })
    }

    /// The CPU model's weights on backend `B`'s `device`, ready to train, its generator's
    /// forward pass in `precision`.
    pub fn model<B: Backend>(&self, device: &B::Device, precision: Precision) -> Result<RagModel<Autodiff<B>>> {
        let skeleton: RagModel<Autodiff<B>> = self.setup.model(RECIPE, self.setup.config.n_docs, SEED, device)?;
        let model = copy_module(&self.cpu_model, skeleton)?;
        let config = RagConfig { generator_precision: precision, ..model.config().clone() };
        Ok(self.trainer.prepare(model.with_config(config)?)?)
    }

    /// The training questions.
    pub fn train(&self) -> &[QaExample] {
        &self.setup.task.train
    }

    /// The trainer's options (groups, AdamW's constants, clipping).
    pub fn trainer_config(&self) -> &TrainerConfig {
        self.trainer.config()
    }

    /// The index's passage ids, in store order, and their stored vectors `[n, d]`, row-major.
    pub fn corpus(&self) -> Result<(Vec<u64>, Vec<f32>)> {
        let task = self.task.lock().expect("a step panicked with the task");
        let knowledge = &task.knowledge;
        let mut ids = Vec::with_capacity(knowledge.store.len());
        let mut vectors = Vec::with_capacity(knowledge.store.len() * knowledge.index.dim());
        for row in 0..knowledge.store.len() {
            let id = knowledge.store.id_at(row).expect("row < len");
            let vector =
                knowledge.index.vector(id).ok_or_else(|| anyhow::anyhow!("passage {id} is not in the index"))?;
            ids.push(id);
            vectors.extend_from_slice(vector);
        }
        Ok((ids, vectors))
    }
}

/// What one step computed.
pub struct StepResult<B: Backend> {
    /// The batch's mean loss.
    pub loss: f64,
    /// The gradients before clipping, by module path.
    pub grads: Gradients<B>,
    /// Forward, backward and the optimizer update, synchronized with the device.
    pub seconds: f64,
    /// Generator input tokens of the step: each context row (question and passage) plus the
    /// answer once per passage, without padding.
    pub tokens: usize,
    /// What the step read: its questions' query-encoder input, the passages retrieved for
    /// them (`[B][K]` ids), the generator's context rows (`B·K`) and the answers' target ids.
    pub read: StepInputs,
}

/// The inputs of one step, as the generator and the query encoder saw them.
pub struct StepInputs {
    pub questions: rag_retriever::TokenBatch,
    pub doc_ids: Vec<Vec<u64>>,
    pub contexts: Vec<Vec<u32>>,
    pub answers: Vec<Vec<u32>>,
}

/// One step of `model` on `batch` at step index `step`: the trainer's own
/// ([`Trainer::gradients`], then [`Trainer::apply`]: loss, backward, global clipping at 1.0,
/// AdamW), with the gradients kept before clipping.
pub fn step<B: Backend>(
    world: &EmbeddedWorld,
    model: RagModel<Autodiff<B>>,
    optim: &mut AdamW<B>,
    batch: &[&QaExample],
    step: u64,
) -> Result<(RagModel<Autodiff<B>>, StepResult<B>)> {
    let device = model.generator().device();
    let mut task = world.task.lock().expect("a step panicked with the task");
    let batches = [batch.to_vec()];
    // What the step's generator reads: the passages the model retrieves before its update
    // (untimed).
    let questions: Vec<&str> = batch.iter().map(|e| e.question.as_str()).collect();
    let retrieval = model.retrieve(&task.knowledge, &questions)?;
    let rows = model.context_rows(&questions, &retrieval.passages)?;
    let answers: Vec<Vec<u32>> = batch.iter().map(|e| model.answer_ids(&e.answers[0])).collect::<rag::Result<_>>()?;
    let mut tokens: usize = rows.iter().map(Vec::len).sum();
    for (answer, passages) in answers.iter().zip(&retrieval.passages) {
        tokens += answer.len() * passages.len();
    }
    let read = StepInputs {
        questions: model.question_tokens(&questions)?,
        doc_ids: retrieval.passages.iter().map(|row| row.iter().map(|p| p.id).collect()).collect(),
        contexts: rows,
        answers,
    };
    let started = Instant::now();
    let (grads, losses) = world.trainer.gradients(&model, &mut *task, &batches, step)?;
    let kept = grads.clone();
    let (model, _norm, _lr) = world.trainer.apply(model, optim, grads, step)?;
    sync::<B>(&device);
    let seconds = started.elapsed().as_secs_f64();

    Ok((model, StepResult { loss: losses[0], grads: kept, seconds, tokens, read }))
}

/// A fresh optimizer for [`step`].
pub fn optimizer<B: Backend>(world: &EmbeddedWorld) -> AdamW<B> {
    world.trainer.optimizer()
}

/// Waits for the device's queued work (GPU backends run asynchronously).
pub fn sync<B: Backend>(device: &B::Device) {
    // An execution error shows up again in the next read of a value; timing needs only the wait.
    let _ = B::sync(device);
}
