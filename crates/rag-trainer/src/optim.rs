//! AdamW with decoupled weight decay, parameter groups and global-norm clipping, with its state
//! keyed by module path.
//!
//! Burn's own optimizers key their state by `ParamId`, which a module loaded from a tensor file
//! does not keep (BURN_0_21.md, trap 21), and clip per tensor (trap 17). Keying by path makes a
//! resumed run find its moments whatever ids the reloaded module has, and lets the state be
//! written as a plain safetensors file; clipping is done here over all gradients at once.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use rag_hf::ModulePath;

use crate::{Result, TrainerError};

/// A set of parameters with its own peak learning rate and weight decay, chosen by module-path
/// prefix (`"retriever.query"` covers every parameter under it; `""` covers all). A parameter
/// belongs to the first group that covers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    /// A name for logs and plots (`"query_encoder"`).
    pub name: String,
    /// Module-path prefixes, whole segments (`"generator"` covers `generator.x`, not `generators`).
    pub prefixes: Vec<String>,
    /// Peak learning rate (the schedule multiplies it).
    pub lr: f64,
    /// Decoupled weight decay, applied to matrices and embeddings (tensors of rank ≥ 2), not to
    /// biases and norm scales, as most transformer recipes do.
    pub weight_decay: f64,
    /// Frozen: the group's parameters get no gradient and are never changed.
    pub frozen: bool,
    /// The group is held still before this optimizer step, then warms up linearly over the
    /// schedule's warm-up length (e.g. a retriever that waits until the generator reads).
    #[serde(default)]
    pub start_step: u64,
}

impl ParamGroup {
    /// A trainable group.
    pub fn new(name: impl Into<String>, prefixes: &[&str], lr: f64, weight_decay: f64) -> Self {
        let prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        Self { name: name.into(), prefixes, lr, weight_decay, frozen: false, start_step: 0 }
    }

    /// A frozen group.
    pub fn frozen(name: impl Into<String>, prefixes: &[&str]) -> Self {
        Self { frozen: true, ..Self::new(name, prefixes, 0.0, 0.0) }
    }

    /// The same group, held still before `step`.
    pub fn starting_at(mut self, step: u64) -> Self {
        self.start_step = step;
        self
    }

    /// The group's learning rate at optimizer step `step` given the schedule's multiplier and
    /// warm-up length: 0 before `start_step`, then `lr × factor`, ramped up linearly over
    /// `warmup` steps when the group starts late.
    pub fn lr_at(&self, step: u64, factor: f64, warmup: u64) -> f64 {
        if self.frozen || step < self.start_step {
            return 0.0;
        }
        let ramp = if self.start_step > 0 && warmup > 0 {
            ((step - self.start_step + 1) as f64 / warmup as f64).min(1.0)
        } else {
            1.0
        };
        self.lr * factor * ramp
    }

    /// Whether `path` is under one of the prefixes.
    pub fn covers(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| {
            p.is_empty() || path == p || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'.'))
        })
    }
}

/// The group a parameter belongs to (the first that covers its path).
pub fn group_of<'a>(groups: &'a [ParamGroup], path: &str) -> Option<&'a ParamGroup> {
    groups.iter().find(|g| g.covers(path))
}

/// AdamW's constants (PyTorch's defaults; Burn's differ, trap 18).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε, added to `√v̂`.
    pub epsilon: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }
}

/// One parameter's AdamW state.
#[derive(Debug, Clone)]
struct Moments<B: Backend> {
    step: u64,
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
}

/// Gradients by module path, flattened, on the inner (non-autodiff) backend.
pub type Gradients<B> = BTreeMap<String, Tensor<B, 1>>;

/// AdamW over parameter groups, PyTorch's `torch.optim.AdamW` update:
/// `p ← p·(1 − lr·λ) − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)`.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    state: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, state: BTreeMap::new() }
    }

    /// The constants.
    pub fn config(&self) -> AdamWConfig {
        self.config
    }

    /// Applies one update to every parameter of `module` that has a gradient in `grads`, with
    /// learning rate `lr(group)`; a group whose rate is 0 is left as it is (no decay, no moment
    /// update). Fails, before changing anything, on a gradient whose parameter belongs to no
    /// group.
    pub fn step<AB, M>(
        &mut self,
        module: M,
        grads: Gradients<B>,
        groups: &[ParamGroup],
        lr: impl Fn(&ParamGroup) -> f64,
    ) -> Result<M>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        if let Some(path) = grads.keys().find(|p| group_of(groups, p).is_none()) {
            return Err(TrainerError::Ungrouped(path.clone()));
        }
        let mut update = Update::<B> { path: ModulePath::default(), grads, optim: self, groups, lr: &lr };
        Ok(module.map(&mut update))
    }

    /// The state as tensors named `exp_avg/<path>`, `exp_avg_sq/<path>`, and the step count of
    /// each path.
    pub fn state(&self) -> (Vec<(String, burn::tensor::TensorData)>, BTreeMap<String, u64>) {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for (path, m) in &self.state {
            tensors.push((format!("exp_avg/{path}"), m.exp_avg.clone().into_data()));
            tensors.push((format!("exp_avg_sq/{path}"), m.exp_avg_sq.clone().into_data()));
            steps.insert(path.clone(), m.step);
        }
        (tensors, steps)
    }

    /// Restores the state written by [`AdamW::state`] to a safetensors file, onto `device`.
    pub fn load_state(&mut self, file: &Path, steps: &BTreeMap<String, u64>, device: &B::Device) -> Result<()> {
        let checkpoint = rag_hf::Checkpoint::open(file)?;
        let mut state = BTreeMap::new();
        for (path, &step) in steps {
            let read = |kind: &str| -> Result<Tensor<B, 1>> {
                let data = checkpoint.read(&format!("{kind}/{path}"))?;
                let dtype = data.dtype;
                let n = data.shape.iter().product::<usize>();
                Ok(Tensor::<B, 1>::from_data(data, (device, dtype)).reshape([n]))
            };
            state.insert(path.clone(), Moments { step, exp_avg: read("exp_avg")?, exp_avg_sq: read("exp_avg_sq")? });
        }
        if checkpoint.names().count() != 2 * steps.len() {
            return Err(TrainerError::Malformed {
                path: file.to_path_buf(),
                message: format!(
                    "{} tensors for {} parameters' moments (written by another run?)",
                    checkpoint.names().count(),
                    steps.len()
                ),
            });
        }
        self.state = state;
        Ok(())
    }
}

struct Update<'a, B: Backend> {
    path: ModulePath,
    grads: Gradients<B>,
    optim: &'a mut AdamW<B>,
    groups: &'a [ParamGroup],
    lr: &'a dyn Fn(&ParamGroup) -> f64,
}

impl<AB: AutodiffBackend<InnerBackend = B>, B: Backend> ModuleMapper<AB> for Update<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let path = self.path.name();
        let Some(grad) = self.grads.remove(&path) else { return param };
        let group = group_of(self.groups, &path).expect("checked in AdamW::step");
        let lr = (self.lr)(group);
        if group.frozen || lr == 0.0 {
            return param;
        }
        let AdamWConfig { beta1, beta2, epsilon } = self.optim.config;
        let decay = if D >= 2 { group.weight_decay } else { 0.0 };
        let moments = self.optim.state.entry(path).or_insert_with(|| Moments {
            step: 0,
            exp_avg: grad.zeros_like(),
            exp_avg_sq: grad.zeros_like(),
        });
        moments.step += 1;
        moments.exp_avg = moments.exp_avg.clone().mul_scalar(beta1) + grad.clone().mul_scalar(1.0 - beta1);
        moments.exp_avg_sq = moments.exp_avg_sq.clone().mul_scalar(beta2) + grad.square().mul_scalar(1.0 - beta2);
        let t = moments.step as i32;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        let denominator = moments.exp_avg_sq.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(epsilon);
        let delta = moments.exp_avg.clone().div(denominator).mul_scalar(lr / bias1);
        param.map(|value| {
            let dims = value.dims();
            let n = dims.iter().product::<usize>();
            let updated = value.inner().reshape([n]).mul_scalar(1.0 - lr * decay) - delta;
            Tensor::from_inner(updated.reshape(dims)).require_grad()
        })
    }
}

/// Collects the gradients of `module`'s trainable parameters from `grads` into `into` (added to
/// what is there: gradient accumulation), by module path.
pub fn accumulate<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    module: &M,
    grads: &AB::Gradients,
    into: &mut Gradients<AB::InnerBackend>,
) {
    let mut collect = Collect::<AB> { path: ModulePath::default(), grads, into };
    module.visit(&mut collect);
}

struct Collect<'a, AB: AutodiffBackend> {
    path: ModulePath,
    grads: &'a AB::Gradients,
    into: &'a mut Gradients<AB::InnerBackend>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<'_, AB> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let Some(grad) = value.grad(self.grads) else { return };
        let n = grad.dims().iter().product::<usize>();
        let grad = grad.reshape([n]);
        let path = self.path.name();
        let summed = match self.into.remove(&path) {
            Some(previous) => previous + grad,
            None => grad,
        };
        self.into.insert(path, summed);
    }
}

/// The global L2 norm of all gradients, `‖(g₁, …, gₙ)‖₂`, accumulated in f64 on the host.
pub fn global_norm<B: Backend>(grads: &Gradients<B>) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    let squares: Vec<Tensor<B, 1>> = grads.values().map(|g| g.clone().square().sum()).collect();
    let data = Tensor::cat(squares, 0).into_data().convert::<f64>();
    data.iter::<f64>().sum::<f64>().sqrt()
}

/// PyTorch's `clip_grad_norm_`: when the global norm exceeds `max_norm`, scales every gradient by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
pub fn clip_global_norm<B: Backend>(grads: &mut Gradients<B>, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for g in grads.values_mut() {
            *g = g.clone().mul_scalar(coefficient);
        }
    }
    norm
}

/// Marks the parameters of frozen groups as not requiring gradients, so the backward pass skips
/// them.
pub fn freeze<AB: AutodiffBackend, M: Module<AB>>(module: M, groups: &[ParamGroup]) -> M {
    let mut mapper = Freeze { path: ModulePath::default(), groups };
    module.map(&mut mapper)
}

struct Freeze<'a> {
    path: ModulePath,
    groups: &'a [ParamGroup],
}

impl<B: Backend> ModuleMapper<B> for Freeze<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match group_of(self.groups, &self.path.name()) {
            Some(group) if group.frozen => param.set_require_grad(false),
            _ => param,
        }
    }
}

/// Module paths of the trainable parameters of `module`, in visiting order.
pub fn trainable_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<String> {
    struct Paths {
        path: ModulePath,
        out: Vec<String>,
    }
    impl<B: Backend> ModuleVisitor<B> for Paths {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.val().is_require_grad() {
                self.out.push(self.path.name());
            }
        }
    }
    let mut paths = Paths { path: ModulePath::default(), out: Vec::new() };
    module.visit(&mut paths);
    paths.out
}
