//! One training step of the embedded default, on any backend: what `backends` compares across
//! backends and `bench-train` times.
//!
//! The model is initialized on the CPU and copied to the target device, and the corpus is encoded
//! once on the CPU, so every backend starts from the same weights and searches the same index.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use rag::rag_hf::copy_module;
use rag::rag_trainer::{AdamW, AdamWConfig, Gradients, ParamGroup, accumulate, clip_global_norm, mix};
use rag::{EmbeddedConfig, EmbeddedSetup, Knowledge, Precision, QaExample, RagConfig, RagModel, Recipe};

/// The recipe the step trains.
pub const RECIPE: Recipe = Recipe::RagToken;
/// The seed of the initial weights.
const SEED: u64 = 0;

/// The embedded default's data, CPU model and index, made once per process.
pub struct EmbeddedWorld {
    pub setup: EmbeddedSetup,
    pub cpu_model: RagModel<Flex>,
    pub knowledge: Knowledge,
    pub groups: Vec<ParamGroup>,
}

impl EmbeddedWorld {
    /// Generates the task under `dir` and encodes its corpus with the CPU model.
    pub fn create(dir: &Path) -> Result<Self> {
        let setup = EmbeddedSetup::create(EmbeddedConfig::default(), dir)?;
        let n_docs = setup.config.n_docs;
        let cpu_model: RagModel<Flex> = setup.model(RECIPE, n_docs, SEED, &Default::default())?;
        let knowledge = setup.knowledge(&cpu_model)?;
        // Both groups train from step 0, as in `cargo xtask train`'s main stage after its reading
        // warm-up, with the learning rates it uses.
        let groups = RECIPE.param_groups(&rag::GroupOptions::new(5e-4, 2e-3));
        Ok(Self { setup, cpu_model, knowledge, groups })
    }

    /// The CPU model's weights on backend `B`'s `device`, ready to train, its generator's
    /// forward pass in `precision`.
    pub fn model<B: Backend>(&self, device: &B::Device, precision: Precision) -> Result<RagModel<Autodiff<B>>> {
        let skeleton: RagModel<Autodiff<B>> = self.setup.model(RECIPE, self.setup.config.n_docs, SEED, device)?;
        let model = copy_module(&self.cpu_model, skeleton)?;
        let config = RagConfig { generator_precision: precision, ..model.config().clone() };
        Ok(model.with_config(config)?)
    }

    /// The training questions.
    pub fn train(&self) -> &[QaExample] {
        &self.setup.task.train
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
}

/// One AdamW step of `model` on `batch`: loss, backward, global clipping at 1.0, update.
pub fn step<B: Backend>(
    world: &EmbeddedWorld,
    model: RagModel<Autodiff<B>>,
    optim: &mut AdamW<B>,
    batch: &[&QaExample],
    step: u64,
) -> Result<(RagModel<Autodiff<B>>, StepResult<B>)> {
    let device = model.generator().device();
    let questions: Vec<&str> = batch.iter().map(|e| e.question.as_str()).collect();
    let answers: Vec<&str> = batch.iter().map(|e| e.answers[0].as_str()).collect();
    <Autodiff<B> as Backend>::seed(&device, mix(&[SEED, step]));
    let started = Instant::now();
    let output = model.loss(&world.knowledge, &questions, &answers)?;
    let loss = rag_parity::values(output.loss.clone())[0];
    let mut grads = Gradients::new();
    accumulate(&model, &output.loss.backward(), &mut grads);
    let kept = grads.clone();
    clip_global_norm(&mut grads, 1.0);
    let model = optim.step(model, grads, &world.groups, |g| g.lr_at(step, 1.0, 0))?;
    sync::<B>(&device);
    let seconds = started.elapsed().as_secs_f64();

    let rows = model.context_rows(&questions, &output.retrieval.passages)?;
    let mut tokens: usize = rows.iter().map(Vec::len).sum();
    for (answer, passages) in answers.iter().zip(&output.retrieval.passages) {
        tokens += model.answer_ids(answer)?.len() * passages.len();
    }
    Ok((model, StepResult { loss, grads: kept, seconds, tokens }))
}

/// A fresh optimizer for [`step`].
pub fn optimizer<B: Backend>() -> AdamW<B> {
    AdamW::new(AdamWConfig::default())
}

/// Waits for the device's queued work (GPU backends run asynchronously).
pub fn sync<B: Backend>(device: &B::Device) {
    // An execution error shows up again in the next read of a value; timing needs only the wait.
    let _ = B::sync(device);
}
