//! The training loop: [`TrainTask`] is what a task provides, [`Trainer::fit`] drives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::data::{DataPosition, Loader, mix};
use crate::error::io;
use crate::log::{Metrics, MetricsLog, Record};
use crate::optim::{
    AdamW, AdamWConfig, Gradients, ParamGroup, accumulate, clip_global_norm, freeze, global_norm, group_of,
    trainable_paths,
};
use crate::progress::Progress;
use crate::schedule::{Decay, Schedule};
use crate::{BoxError, Result, TrainerError};

/// What a task gives the trainer: the loss of a batch, an evaluation, and optionally an index
/// refresh. The trainer knows nothing else of the task.
pub trait TrainTask<AB: AutodiffBackend, M: AutodiffModule<AB>> {
    /// One training example.
    type Item;

    /// The mean loss of `batch` (shape `[1]`), in the autodiff graph of `model`.
    fn loss(&mut self, model: &M, batch: &[&Self::Item]) -> std::result::Result<Tensor<AB, 1>, BoxError>;

    /// Evaluates the model (the inner, non-autodiff module: no dropout, no graph).
    fn evaluate(&mut self, model: &M::InnerModule) -> std::result::Result<Metrics, BoxError>;

    /// Called every [`TrainerConfig::refresh_every`] steps and after a resume: re-encode the
    /// corpus with the current document encoder and update the index (REPLUG, Atlas).
    fn refresh(&mut self, model: &M::InnerModule) -> std::result::Result<(), BoxError> {
        let _ = model;
        Ok(())
    }
}

/// The trainer's options (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Optimizer steps of the run.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (their gradients are averaged).
    pub grad_accumulation: usize,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Parameter groups (learning rates, weight decay, freezing); every trainable parameter
    /// must belong to one.
    pub groups: Vec<ParamGroup>,
    /// AdamW's constants.
    pub adamw: AdamWConfig,
    /// Global-norm clipping threshold (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Seeds the data order and the backend's RNG (dropout), per step.
    pub seed: u64,
    /// Evaluate every this many steps (and before the first and after the last; 0: only those).
    pub eval_every: u64,
    /// Checkpoint every this many steps (and after the last).
    pub checkpoint_every: u64,
    /// Checkpoints kept (the newest).
    pub keep_checkpoints: usize,
    /// A `metrics.jsonl` training line every this many steps.
    pub log_every: u64,
    /// Call [`TrainTask::refresh`] every this many steps (0: never).
    pub refresh_every: u64,
    /// Show progress on stderr.
    pub progress: bool,
    /// A name for progress lines.
    pub label: String,
    /// What else shapes the run besides these settings, named by the caller (the recipe, a hash
    /// of each data file, the model's options...). Saved in every checkpoint; a resume checks it
    /// as it checks the settings.
    #[serde(default)]
    pub run_identity: BTreeMap<String, String>,
    /// Resume even when a setting that shapes the run (or the run identity) differs from the
    /// checkpoint's, on purpose: the run continues with the new settings from the checkpoint's
    /// step. Without it such a resume is refused ([`TrainerError::ChangedRun`]).
    #[serde(default)]
    pub resume_despite_changes: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 8,
            grad_accumulation: 1,
            warmup_steps: 0,
            decay: Decay::Linear,
            groups: vec![ParamGroup::new("all", &[""], 1e-3, 0.01)],
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            seed: 0,
            eval_every: 0,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            log_every: 10,
            refresh_every: 0,
            progress: true,
            label: "train".into(),
            run_identity: BTreeMap::new(),
            resume_despite_changes: false,
        }
    }
}

/// Settings that change what is logged or kept, not what the run computes: a resume may change
/// them.
const NOT_SHAPING: [&str; 7] =
    ["eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "progress", "label", "resume_despite_changes"];

impl TrainerConfig {
    /// Every setting that shapes the run (all but [`NOT_SHAPING`]) that differs between `self`
    /// (a checkpoint's) and `new`: (name, old value, new value), names as paths into the config
    /// (`groups[1].lr`, `run_identity.train`).
    pub fn changes_to(&self, new: &TrainerConfig) -> Vec<(String, String, String)> {
        fn flatten(prefix: String, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        flatten(path, v, out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        flatten(format!("{prefix}[{i}]"), v, out);
                    }
                }
                other => {
                    out.insert(prefix, other.to_string());
                }
            }
        }
        let shaping = |config: &TrainerConfig| {
            let mut value = serde_json::to_value(config).expect("the config serializes");
            let map = value.as_object_mut().expect("a struct");
            for key in NOT_SHAPING {
                map.remove(key);
            }
            let mut out = BTreeMap::new();
            flatten(String::new(), &value, &mut out);
            out
        };
        let (old, new) = (shaping(self), shaping(new));
        let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        let absent = || "absent".to_string();
        keys.into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| {
                (k.clone(), old.get(k).cloned().unwrap_or_else(absent), new.get(k).cloned().unwrap_or_else(absent))
            })
            .collect()
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule { warmup_steps: self.warmup_steps, total_steps: self.steps, decay: self.decay }
    }

    fn validate(&self, examples: usize) -> Result<()> {
        let err = |field, message: String| Err(TrainerError::Config { field, message });
        if self.steps == 0 {
            return err("steps", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.grad_accumulation == 0 {
            return err("batch_size", "and grad_accumulation must be at least 1".into());
        }
        if examples < self.batch_size {
            return err(
                "batch_size",
                format!("is {} but there are only {examples} training examples", self.batch_size),
            );
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return err("checkpoint_every", "and log_every must be at least 1".into());
        }
        if self.groups.is_empty() {
            return err("groups", "needs at least one parameter group".into());
        }
        for g in &self.groups {
            if !(g.lr.is_finite() && g.lr >= 0.0 && g.weight_decay.is_finite() && g.weight_decay >= 0.0) {
                return err("groups", format!("group `{}`: lr and weight_decay must be finite and ≥ 0", g.name));
            }
        }
        if let Some(m) = self.max_grad_norm
            && !(m.is_finite() && m > 0.0)
        {
            return err("max_grad_norm", "must be finite and positive".into());
        }
        Ok(())
    }
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimizer steps done.
    pub steps: u64,
    /// Training examples consumed (micro-batches × batch size).
    pub examples: u64,
    /// Seconds spent training (evaluations excluded; a resumed run adds its earlier part).
    pub train_seconds: f64,
    /// `examples / train_seconds`.
    pub examples_per_second: f64,
    /// Every evaluation, by step (the first is before training).
    pub evals: Vec<(u64, Metrics)>,
    /// The mean loss of the last logged interval.
    pub final_loss: Option<f64>,
    /// The step this run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// The plots written.
    pub plots: Vec<PathBuf>,
}

/// What one optimizer step did ([`Trainer::step`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Each micro-batch's mean loss.
    pub losses: Vec<f64>,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of each trained group at this step.
    pub lr: BTreeMap<String, f64>,
    /// Training examples of the step.
    pub examples: usize,
}

/// A trained model and its summary.
#[derive(Debug)]
pub struct Trained<M> {
    /// The model after the last step.
    pub model: M,
    /// What the run measured.
    pub summary: TrainSummary,
}

/// The format name of `trainer.json`.
pub const CHECKPOINT_FORMAT: &str = "rag-trainer-checkpoint";
/// Its version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// A checkpoint's `trainer.json`: where the run was and with which settings
/// ([`read_checkpoint`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// Where the data order stands.
    pub data: DataPosition,
    /// Seconds of training so far.
    pub train_seconds: f64,
    /// Examples consumed so far.
    pub examples: u64,
    /// AdamW's step count per parameter, by module path.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// The loss sum and micro-batch count since the last `metrics.jsonl` line, so a resumed
    /// run logs the same means.
    pub window: (f64, u64),
    /// The settings the run was written with.
    pub config: TrainerConfig,
}

/// Runs training in a run directory: `metrics.jsonl`, `checkpoints/`, plots.
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainerConfig,
    dir: PathBuf,
}

impl Trainer {
    /// A trainer writing into `dir` (created if needed).
    pub fn new(config: TrainerConfig, dir: impl Into<PathBuf>) -> Self {
        Self { config, dir: dir.into() }
    }

    /// The options.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The newest complete checkpoint of the run directory, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        latest_checkpoint(&self.dir)
    }

    /// Trains `model` on `examples` with `task`. With `resume`, continues from the newest
    /// checkpoint of the run directory when there is one (model, optimizer moments, step,
    /// data position, training time; the backend RNG is reseeded per step, so the result is the
    /// one an uninterrupted run gets); otherwise starts afresh, replacing what is there.
    pub fn fit<AB, M, T>(&self, model: M, task: &mut T, examples: &[T::Item], resume: bool) -> Result<Trained<M>>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
        T: TrainTask<AB, M>,
    {
        let cfg = &self.config;
        cfg.validate(examples.len())?;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut model = self.prepare(model)?;
        let device = model
            .devices()
            .into_iter()
            .next()
            .ok_or(TrainerError::Config { field: "model", message: "has no parameters".into() })?;
        let mut optim = self.optimizer::<AB::InnerBackend>();
        let metrics_path = self.dir.join("metrics.jsonl");
        let checkpoint = if resume { latest_checkpoint(&self.dir)? } else { None };
        let (mut step, position, mut train_seconds, mut seen, mut log, window) = match &checkpoint {
            Some(dir) => {
                let state = read_checkpoint(dir)?;
                let changes = state.config.changes_to(cfg);
                if !changes.is_empty() && !cfg.resume_despite_changes {
                    return Err(TrainerError::ChangedRun { checkpoint: dir.clone(), changes });
                }
                model = rag_hf::load_module(model, &dir.join("model.safetensors"), None)?;
                optim.load_state(&dir.join("optimizer.safetensors"), &state.optimizer_steps, &device)?;
                let log = MetricsLog::resume(&metrics_path, state.step)?;
                (state.step, state.data, state.train_seconds, state.examples, log, state.window)
            }
            None => (0, DataPosition { epoch: 0, cursor: 0 }, 0.0, 0, MetricsLog::create(&metrics_path)?, (0.0, 0)),
        };
        let resumed_from = checkpoint.as_ref().map(|_| step);
        let mut last_checkpoint = checkpoint.clone();
        let mut loader = Loader::new(examples.len(), cfg.batch_size, cfg.seed, position);
        let progress = Progress::new(&cfg.label, step, cfg.steps, cfg.progress);
        if resumed_from.is_some() {
            progress.announce(&format!("{}: resuming at step {step} from {}", cfg.label, self.dir.display()));
            if cfg.refresh_every > 0 {
                run_task("index refresh after resume", step, || task.refresh(&model.valid()))?;
            }
        }
        let has_eval = |log: &MetricsLog, s: u64| {
            log.records().iter().any(|r| matches!(r, Record::Eval { step, .. } if *step == s))
        };
        if !has_eval(&log, step) && (step == 0 || cfg.eval_every > 0 && step % cfg.eval_every == 0) {
            self.evaluate(task, &model, step, &mut log, &progress)?;
        }

        let (mut window_loss, mut window_batches, mut window_examples) = (window.0, window.1, 0u64);
        let mut window_start = Instant::now();
        let mut last_loss = None;
        while step < cfg.steps {
            if cfg.refresh_every > 0 && step > 0 && step % cfg.refresh_every == 0 && resumed_from != Some(step) {
                run_task("index refresh", step, || task.refresh(&model.valid()))?;
            }
            let started = Instant::now();
            let batches: Vec<Vec<&T::Item>> = (0..cfg.grad_accumulation)
                .map(|_| loader.next_batch().into_iter().map(|i| &examples[i]).collect())
                .collect();
            let with_checkpoint = |e: TrainerError| match e {
                TrainerError::NonFinite { step, what, value, .. } => non_finite(step, what, value, &last_checkpoint),
                e => e,
            };
            let (next, outcome) = self.step(model, &mut optim, task, &batches, step).map_err(with_checkpoint)?;
            model = next;
            for loss in &outcome.losses {
                window_loss += loss;
                window_batches += 1;
            }
            window_examples += outcome.examples as u64;
            seen += outcome.examples as u64;
            let (norm, lr) = (outcome.grad_norm, outcome.lr);
            step += 1;
            train_seconds += started.elapsed().as_secs_f64();

            let loss_now = window_loss / window_batches.max(1) as f64;
            if step % cfg.log_every == 0 || step == cfg.steps {
                let rate = window_examples as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
                log.push(Record::Train {
                    step,
                    epoch: loader.epochs(),
                    loss: loss_now,
                    grad_norm: norm,
                    lr: lr.clone(),
                    examples_per_second: rate,
                    seconds: train_seconds,
                })?;
                last_loss = Some(loss_now);
                (window_loss, window_batches, window_examples) = (0.0, 0, 0);
                window_start = Instant::now();
            }
            progress.update(step, &format!("loss {loss_now:.4} |g| {norm:.3}"));
            if step % cfg.checkpoint_every == 0 || step == cfg.steps {
                let state = CheckpointState {
                    format: CHECKPOINT_FORMAT.into(),
                    version: CHECKPOINT_VERSION,
                    step,
                    data: loader.position(),
                    train_seconds,
                    examples: seen,
                    optimizer_steps: BTreeMap::new(),
                    window: (window_loss, window_batches),
                    config: cfg.clone(),
                };
                last_checkpoint = Some(self.save_checkpoint(&model, &optim, state)?);
            }
            if step == cfg.steps || (cfg.eval_every > 0 && step % cfg.eval_every == 0) {
                self.evaluate(task, &model, step, &mut log, &progress)?;
            }
        }
        if !has_eval(&log, step) {
            self.evaluate(task, &model, step, &mut log, &progress)?;
        }
        progress.finish();
        let plots = crate::plot::plot_history(&self.dir, log.records())?;
        let evals = log
            .records()
            .iter()
            .filter_map(|r| match r {
                Record::Eval { step, metrics, .. } => Some((*step, metrics.clone())),
                _ => None,
            })
            .collect();
        let final_loss = last_loss.or_else(|| {
            log.records().iter().rev().find_map(|r| match r {
                Record::Train { loss, .. } => Some(*loss),
                _ => None,
            })
        });
        let summary = TrainSummary {
            steps: step,
            examples: seen,
            train_seconds,
            examples_per_second: seen as f64 / train_seconds.max(1e-9),
            evals,
            final_loss,
            resumed_from,
            plots,
        };
        Ok(Trained { model, summary })
    }

    /// A fresh optimizer with the configured AdamW constants, for [`Trainer::step`].
    pub fn optimizer<B: Backend>(&self) -> AdamW<B> {
        AdamW::new(self.config.adamw)
    }

    /// `model` made ready for [`Trainer::step`], as [`Trainer::fit`] makes it: the frozen
    /// groups' parameters stop requiring gradients, and a trainable parameter outside every
    /// group is an error.
    pub fn prepare<AB: AutodiffBackend, M: AutodiffModule<AB>>(&self, model: M) -> Result<M> {
        let model = freeze(model, &self.config.groups);
        match trainable_paths(&model).into_iter().find(|p| group_of(&self.config.groups, p).is_none()) {
            Some(path) => Err(TrainerError::Ungrouped(path)),
            None => Ok(model),
        }
    }

    /// One optimizer step exactly as [`Trainer::fit`] takes it at step index `step`: the
    /// gradients of `micro_batches` ([`Trainer::gradients`]), then the update
    /// ([`Trainer::apply`]). `model` comes from [`Trainer::prepare`].
    pub fn step<AB, M, T>(
        &self,
        model: M,
        optim: &mut AdamW<AB::InnerBackend>,
        task: &mut T,
        micro_batches: &[Vec<&T::Item>],
        step: u64,
    ) -> Result<(M, StepOutcome)>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
        T: TrainTask<AB, M>,
    {
        let (grads, losses) = self.gradients(&model, task, micro_batches, step)?;
        let (model, grad_norm, lr) = self.apply(model, optim, grads, step)?;
        let examples = micro_batches.iter().map(Vec::len).sum();
        Ok((model, StepOutcome { losses, grad_norm, lr, examples }))
    }

    /// The gradients of one optimizer step, before clipping: for each micro-batch, the backend
    /// seeded from `(seed, step, micro-batch)` (dropout), the task's loss and its backward pass;
    /// the micro-batches' gradients averaged. Also each micro-batch's loss; a non-finite one is
    /// an error ([`TrainerError::NonFinite`], its checkpoint `none`).
    pub fn gradients<AB, M, T>(
        &self,
        model: &M,
        task: &mut T,
        micro_batches: &[Vec<&T::Item>],
        step: u64,
    ) -> Result<(Gradients<AB::InnerBackend>, Vec<f64>)>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
        T: TrainTask<AB, M>,
    {
        let device = model
            .devices()
            .into_iter()
            .next()
            .ok_or(TrainerError::Config { field: "model", message: "has no parameters".into() })?;
        let mut grads: Gradients<AB::InnerBackend> = Gradients::new();
        let mut losses = Vec::with_capacity(micro_batches.len());
        for (micro, batch) in micro_batches.iter().enumerate() {
            AB::seed(&device, mix(&[self.config.seed, step, micro as u64]));
            let loss = run_task("loss", step, || task.loss(model, batch))?;
            let value = scalar(&loss);
            if !value.is_finite() {
                return Err(non_finite(step, "loss", value, &None));
            }
            accumulate(model, &loss.backward(), &mut grads);
            losses.push(value);
        }
        if micro_batches.len() > 1 {
            let scale = 1.0 / micro_batches.len() as f64;
            for g in grads.values_mut() {
                *g = g.clone().mul_scalar(scale);
            }
        }
        Ok((grads, losses))
    }

    /// The update of one optimizer step from its unclipped gradients: global-norm clipping at
    /// [`TrainerConfig::max_grad_norm`], then AdamW at each group's scheduled learning rate for
    /// step `step`. Returns the model, the gradient norm before clipping (a non-finite one is an
    /// error) and the learning rate of each trained group.
    pub fn apply<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: M,
        optim: &mut AdamW<B::InnerBackend>,
        mut grads: Gradients<B::InnerBackend>,
        step: u64,
    ) -> Result<(M, f64, BTreeMap<String, f64>)> {
        let cfg = &self.config;
        let norm = match cfg.max_grad_norm {
            Some(max) => clip_global_norm(&mut grads, max),
            None => global_norm(&grads),
        };
        if !norm.is_finite() {
            return Err(non_finite(step, "gradient norm", norm, &None));
        }
        let factor = cfg.schedule().factor(step);
        let lr_of = |g: &ParamGroup| g.lr_at(step, factor, cfg.warmup_steps);
        let model = optim.step(model, grads, &cfg.groups, lr_of)?;
        let lr = cfg.groups.iter().filter(|g| !g.frozen).map(|g| (g.name.clone(), lr_of(g))).collect();
        Ok((model, norm, lr))
    }

    fn evaluate<AB, M, T>(
        &self,
        task: &mut T,
        model: &M,
        step: u64,
        log: &mut MetricsLog,
        progress: &Progress,
    ) -> Result<()>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
        T: TrainTask<AB, M>,
    {
        let started = Instant::now();
        let metrics = run_task("evaluation", step, || task.evaluate(&model.valid()))?;
        let seconds = started.elapsed().as_secs_f64();
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        progress.println(&format!("{}: eval at step {step}: {} ({seconds:.1}s)", self.config.label, shown.join(", ")));
        log.push(Record::Eval { step, metrics, seconds })
    }

    /// Writes a checkpoint directory atomically (built under a temporary name, then renamed),
    /// points `checkpoints/latest` at it and prunes the oldest beyond `keep_checkpoints`.
    fn save_checkpoint<B: Backend, M: Module<B>>(
        &self,
        model: &M,
        optim: &AdamW<impl Backend>,
        mut state: CheckpointState,
    ) -> Result<PathBuf> {
        let root = self.dir.join("checkpoints");
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let name = format!("step-{:08}", state.step);
        let tmp = root.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        rag_hf::save_module(model, &tmp.join("model.safetensors"))?;
        let (tensors, steps) = optim.state();
        rag_hf::write_safetensors(&tmp.join("optimizer.safetensors"), &tensors)?;
        state.optimizer_steps = steps;
        let json = serde_json::to_vec_pretty(&state).expect("the state serializes");
        rag_hf::write_atomic(&tmp.join("trainer.json"), &json)?;
        let dir = root.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        rag_hf::write_atomic(&root.join("latest"), name.as_bytes())?;
        let mut all: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
            .collect();
        all.sort();
        let keep = self.config.keep_checkpoints.max(1);
        for old in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        }
        Ok(dir)
    }
}

/// The newest complete checkpoint under `run_dir/checkpoints` (the one `latest` names).
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let latest = run_dir.join("checkpoints").join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(io(&latest))?;
    let dir = run_dir.join("checkpoints").join(name.trim());
    if !dir.join("trainer.json").is_file() {
        return Err(TrainerError::Malformed {
            path: latest,
            message: format!("names {}, which has no trainer.json", dir.display()),
        });
    }
    Ok(Some(dir))
}

/// Reads and checks a checkpoint directory's `trainer.json` (format, version, settings). A
/// missing, malformed or foreign file is an error naming it.
pub fn read_checkpoint(dir: &Path) -> Result<CheckpointState> {
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| TrainerError::Malformed {
        path: path.clone(),
        message: format!("not a trainer checkpoint: {e}"),
    })?;
    if state.format != CHECKPOINT_FORMAT || state.version != CHECKPOINT_VERSION {
        return Err(TrainerError::Malformed {
            path,
            message: format!(
                "format {} version {}; this build reads {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION}",
                state.format, state.version
            ),
        });
    }
    Ok(state)
}

fn scalar<B: Backend>(loss: &Tensor<B, 1>) -> f64 {
    loss.clone().into_data().convert::<f64>().iter::<f64>().next().unwrap_or(f64::NAN)
}

fn non_finite(step: u64, what: &'static str, value: f64, checkpoint: &Option<PathBuf>) -> TrainerError {
    let checkpoint = checkpoint.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string());
    TrainerError::NonFinite { step, what, value, checkpoint }
}

fn run_task<R>(what: &str, step: u64, f: impl FnOnce() -> std::result::Result<R, BoxError>) -> Result<R> {
    f().map_err(|source| TrainerError::Task { context: format!("{what} at step {step}"), source })
}
