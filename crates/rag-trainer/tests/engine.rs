//! The engine against independent references: AdamW's update, global-norm clipping, gradient
//! accumulation, parameter groups and freezing, resume after an interruption, and the NaN stop.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, activation::relu, backend::Backend};
use rag_trainer::{
    AdamW, AdamWConfig, BoxError, Decay, Gradients, Metrics, ParamGroup, TrainTask, Trainer, TrainerConfig,
    TrainerError, clip_global_norm, read_records,
};

type Ad = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    first: Linear<B>,
    second: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.second.forward(relu(self.first.forward(x)))
    }
}

/// A model with fixed weights (the backend RNG is global, and tests run in parallel).
fn mlp_with(seed: u64) -> Mlp<Ad> {
    let device = Default::default();
    let mut rng = rag_trainer::Rng(seed);
    let mut linear = |d_in: usize, d_out: usize| {
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).collect() };
        let mut l: Linear<Ad> = LinearConfig::new(d_in, d_out).init(&device);
        let (w, b) = (draw(d_in * d_out), draw(d_out));
        l.weight = l.weight.map(|_| Tensor::from_data(TensorData::new(w, [d_in, d_out]), &device).require_grad());
        l.bias = l.bias.map(|p| p.map(|_| Tensor::from_data(TensorData::new(b, [d_out]), &device).require_grad()));
        l
    };
    Mlp { first: linear(2, 8), second: linear(8, 1) }
}

fn mlp() -> Mlp<Ad> {
    mlp_with(11)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

/// Regression of `y = x0 − 2·x1` on fixed points; optionally a NaN loss at one step, or an error
/// (a simulated crash) at one step.
struct Regression {
    calls: u64,
    nan_at: Option<u64>,
    crash_at: Option<u64>,
}

impl Regression {
    fn new() -> Self {
        Self { calls: 0, nan_at: None, crash_at: None }
    }
}

fn points() -> Vec<[f32; 2]> {
    (0..24).map(|i| [((i * 7) % 11) as f32 / 5.0 - 1.0, ((i * 5) % 13) as f32 / 6.0 - 1.0]).collect()
}

fn batch_loss<B: Backend>(model: &Mlp<B>, batch: &[&[f32; 2]]) -> Tensor<B, 1> {
    let device = model.first.weight.val().device();
    let flat: Vec<f32> = batch.iter().flat_map(|p| p.iter().copied()).collect();
    let y: Vec<f32> = batch.iter().map(|p| p[0] - 2.0 * p[1]).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [batch.len(), 2]), &device);
    let y = Tensor::<B, 2>::from_data(TensorData::new(y, [batch.len(), 1]), &device);
    (model.forward(x) - y).square().mean().reshape([1])
}

impl TrainTask<Ad, Mlp<Ad>> for Regression {
    type Item = [f32; 2];

    fn loss(&mut self, model: &Mlp<Ad>, batch: &[&[f32; 2]]) -> Result<Tensor<Ad, 1>, BoxError> {
        let call = self.calls;
        self.calls += 1;
        if self.crash_at == Some(call) {
            return Err("simulated crash".into());
        }
        let loss = batch_loss(model, batch);
        Ok(if self.nan_at == Some(call) { loss.mul_scalar(f64::NAN) } else { loss })
    }

    fn evaluate(&mut self, model: &Mlp<Flex>) -> Result<Metrics, BoxError> {
        let all = points();
        let refs: Vec<&[f32; 2]> = all.iter().collect();
        let mse = values(batch_loss(model, &refs))[0];
        Ok(Metrics::from([("mse".to_string(), mse)]))
    }
}

fn config(steps: u64) -> TrainerConfig {
    TrainerConfig {
        steps,
        batch_size: 4,
        warmup_steps: 3,
        decay: Decay::Cosine,
        groups: vec![ParamGroup::new("first", &["first"], 3e-2, 0.01), ParamGroup::new("rest", &[""], 1e-2, 0.1)],
        checkpoint_every: 5,
        eval_every: 10,
        log_every: 2,
        seed: 5,
        progress: false,
        ..TrainerConfig::default()
    }
}

fn params(model: &Mlp<Ad>) -> Vec<f64> {
    let m = model.valid();
    [m.first.weight.val(), m.second.weight.val()]
        .into_iter()
        .flat_map(values)
        .chain(values(m.first.bias.unwrap().val()))
        .collect()
}

#[test]
fn adamw_matches_pytorch_formula_with_decoupled_decay() {
    // One scalar-per-element parameter through three steps, against torch.optim.AdamW's update
    // written out independently in f64.
    let device = Default::default();
    let mut model = Mlp::<Ad> {
        first: LinearConfig::new(2, 1).init(&device),
        second: LinearConfig::new(1, 1).with_bias(false).init(&device),
    };
    let w0 = values(model.first.weight.val());
    let groups = [ParamGroup::new("all", &[""], 0.1, 0.5)];
    let mut optim = AdamW::<Flex>::new(AdamWConfig::default());
    let grads_seq = [[0.3, -1.2], [0.5, 0.1], [-0.7, 2.0]];
    let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
    let mut want = w0.clone();
    let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
    for (t, g) in grads_seq.iter().enumerate() {
        let mut grads = Gradients::<Flex>::new();
        grads.insert(
            "first.weight".into(),
            Tensor::from_data(TensorData::new(g.map(|x| x as f32).to_vec(), [2]), &device),
        );
        model = optim.step(model, grads, &groups, |g| g.lr).unwrap();
        let t = t as i32 + 1;
        for i in 0..2 {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
            want[i] = want[i] * (1.0 - 0.1 * 0.5) - 0.1 / (1.0 - b1.powi(t)) * m[i] / denom;
        }
    }
    let got = values(model.first.weight.val());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn clipping_uses_the_global_norm_not_each_tensor() {
    let device = Default::default();
    let mut grads = Gradients::<Flex>::new();
    grads.insert("a".into(), Tensor::from_data(TensorData::new(vec![3.0f32, 4.0, 0.0], [3]), &device));
    grads.insert("b".into(), Tensor::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 12.0], [4]), &device));
    let norm = clip_global_norm(&mut grads, 1.0);
    assert!((norm - 13.0).abs() < 1e-5);
    let a = values(grads["a"].clone());
    let b = values(grads["b"].clone());
    // torch.nn.utils.clip_grad_norm_: every gradient times 1/(13 + 1e-6).
    let c = 1.0 / (13.0 + 1e-6);
    assert!((a[0] - 3.0 * c).abs() < 1e-6 && (a[1] - 4.0 * c).abs() < 1e-6 && (b[3] - 12.0 * c).abs() < 1e-6);
    let mut small = Gradients::<Flex>::new();
    small.insert("a".into(), Tensor::from_data(TensorData::new(vec![0.3f32, 0.4], [2]), &device));
    assert!((clip_global_norm(&mut small, 1.0) - 0.5).abs() < 1e-6);
    assert_eq!(values(small["a"].clone()), vec![0.3f32 as f64, 0.4f32 as f64], "below the threshold: untouched");
}

#[test]
fn accumulating_two_half_batches_equals_one_full_batch() {
    let dir = tempfile::tempdir().unwrap();
    let full = TrainerConfig { batch_size: 8, grad_accumulation: 1, ..config(6) };
    let halves = TrainerConfig { batch_size: 4, grad_accumulation: 2, ..config(6) };
    // Same examples per step in the same order needs the same permutation: with batch 8 the
    // loader takes 8 of the epoch's order, with 2×4 the same 8.
    let a = Trainer::new(full, dir.path().join("a")).fit(mlp(), &mut Regression::new(), &points(), false).unwrap();
    let b = Trainer::new(halves, dir.path().join("b")).fit(mlp(), &mut Regression::new(), &points(), false).unwrap();
    for (x, y) in params(&a.model).iter().zip(params(&b.model)) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn the_public_step_is_the_step_fit_takes() {
    // What `bench-train` and `backends` time: `prepare` then `step` on the batches the loader
    // draws, with the optimizer `optimizer` makes, must end bit for bit where `fit` does.
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainerConfig { grad_accumulation: 2, eval_every: 0, ..config(7) };
    let fitted = Trainer::new(cfg.clone(), dir.path().join("fit")).fit(mlp(), &mut Regression::new(), &points(), false);
    let fitted = fitted.unwrap();
    let trainer = Trainer::new(cfg.clone(), dir.path().join("unused"));
    let (mut model, mut optim) = (trainer.prepare(mlp()).unwrap(), trainer.optimizer());
    let all = points();
    let start = rag_trainer::DataPosition { epoch: 0, cursor: 0 };
    let mut loader = rag_trainer::Loader::new(all.len(), cfg.batch_size, cfg.seed, start);
    let mut task = Regression::new();
    let mut last = None;
    for step in 0..cfg.steps {
        let batches: Vec<Vec<&[f32; 2]>> =
            (0..2).map(|_| loader.next_batch().into_iter().map(|i| &all[i]).collect()).collect();
        let (next, outcome) = trainer.step(model, &mut optim, &mut task, &batches, step).unwrap();
        assert_eq!((outcome.losses.len(), outcome.examples), (2, 2 * cfg.batch_size));
        assert!(outcome.grad_norm.is_finite() && outcome.lr.len() == 2, "{outcome:?}");
        (model, last) = (next, Some(outcome));
    }
    assert_eq!(params(&model), params(&fitted.model));
    let lr = &last.unwrap().lr;
    let factor = cfg.schedule().factor(cfg.steps - 1);
    assert!((lr["first"] - 3e-2 * factor).abs() < 1e-12, "{lr:?}");
}

#[test]
fn groups_get_their_learning_rates_and_frozen_groups_stay_put() {
    let dir = tempfile::tempdir().unwrap();
    let before = mlp().valid();
    let frozen = TrainerConfig {
        groups: vec![ParamGroup::frozen("first", &["first"]), ParamGroup::new("rest", &[""], 1e-2, 0.0)],
        ..config(5)
    };
    let trained = Trainer::new(frozen, dir.path()).fit(mlp(), &mut Regression::new(), &points(), false).unwrap();
    let after = trained.model.valid();
    assert_eq!(values(before.first.weight.val()), values(after.first.weight.val()));
    assert_ne!(values(before.second.weight.val()), values(after.second.weight.val()));
    let lines = read_records(&dir.path().join("metrics.jsonl")).unwrap();
    let lr = lines.iter().find_map(|r| match r {
        rag_trainer::Record::Train { lr, .. } => Some(lr.clone()),
        _ => None,
    });
    assert_eq!(lr.unwrap().keys().collect::<Vec<_>>(), vec!["rest"], "frozen groups have no learning rate");
    let ungrouped = TrainerConfig { groups: vec![ParamGroup::new("first", &["first"], 1e-2, 0.0)], ..config(5) };
    let err = Trainer::new(ungrouped, dir.path()).fit(mlp(), &mut Regression::new(), &points(), false).unwrap_err();
    assert!(err.to_string().contains("second."), "{err}");
}

#[test]
fn a_run_interrupted_and_resumed_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let whole = Trainer::new(config(23), dir.path().join("whole"))
        .fit(mlp(), &mut Regression::new(), &points(), false)
        .unwrap();
    let run = dir.path().join("cut");
    let trainer = Trainer::new(config(23), &run);
    // Fails in the 14th step, after the checkpoint at step 10 and some logged lines past it.
    let mut crashing = Regression { crash_at: Some(13), ..Regression::new() };
    let err = trainer.fit(mlp(), &mut crashing, &points(), false).unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert!(trainer.latest_checkpoint().unwrap().unwrap().ends_with("step-00000010"));
    // A fresh model (other ids, other values) resumes from the checkpoint.
    let fresh = mlp_with(99);
    let resumed = trainer.fit(fresh, &mut Regression::new(), &points(), true).unwrap();
    assert_eq!(resumed.summary.resumed_from, Some(10));
    assert_eq!(params(&whole.model), params(&resumed.model), "bit-identical after resume");
    let strip = |evals: &[(u64, Metrics)]| evals.to_vec();
    assert_eq!(strip(&whole.summary.evals), strip(&resumed.summary.evals));
    let losses = |dir: &std::path::Path| -> Vec<(u64, f64)> {
        read_records(&dir.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                rag_trainer::Record::Train { step, loss, .. } => Some((step, loss)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(losses(&dir.path().join("whole")), losses(&run), "the log has each step once, with the same losses");
    let kept: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(kept.len(), 3, "two checkpoints and `latest`: {kept:?}");
    assert!(run.join("loss.svg").is_file() && run.join("eval_mse.svg").is_file() && run.join("lr.svg").is_file());
    let svg = std::fs::read_to_string(run.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{}", &svg[..200.min(svg.len())]);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer::new(config(20), dir.path());
    let mut task = Regression { nan_at: Some(7), ..Regression::new() };
    let err = trainer.fit(mlp(), &mut task, &points(), false).unwrap_err();
    match &err {
        TrainerError::NonFinite { step, what, checkpoint, .. } => {
            assert_eq!((*step, *what), (7, "loss"));
            assert!(checkpoint.ends_with("step-00000005"), "{checkpoint}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("not finite"), "{err}");
    assert!(trainer.latest_checkpoint().unwrap().unwrap().ends_with("step-00000005"));
    let resumed = trainer.fit(mlp(), &mut Regression::new(), &points(), true).unwrap();
    assert_eq!(resumed.summary.resumed_from, Some(5));
    assert_eq!(resumed.summary.steps, 20);
}

#[test]
fn a_checkpoint_of_another_run_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(config(5), dir.path()).fit(mlp(), &mut Regression::new(), &points(), false).unwrap();
    let other = TrainerConfig { batch_size: 3, ..config(10) };
    let err = Trainer::new(other, dir.path()).fit(mlp(), &mut Regression::new(), &points(), true).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("batch_size was 4, is now 3") && err.contains("steps was 5, is now 10"), "{err}");
    // Every setting that shapes the run is compared, by name: a learning rate, the caller's
    // identity of the data (a changed file's hash).
    let mut lr = config(5);
    lr.groups[1].lr = 5e-3;
    lr.run_identity.insert("train".into(), "sha256:bbbb".into());
    let err = Trainer::new(lr.clone(), dir.path()).fit(mlp(), &mut Regression::new(), &points(), true).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("groups[1].lr was 0.01, is now 0.005"), "{err}");
    assert!(err.contains("run_identity.train was absent, is now \"sha256:bbbb\""), "{err}");
    // What changes only the logs may change; a change on purpose resumes.
    let quieter = TrainerConfig { log_every: 5, eval_every: 0, progress: false, ..config(5) };
    Trainer::new(quieter, dir.path()).fit(mlp(), &mut Regression::new(), &points(), true).unwrap();
    let on_purpose = TrainerConfig { resume_despite_changes: true, ..lr };
    let resumed = Trainer::new(on_purpose, dir.path()).fit(mlp(), &mut Regression::new(), &points(), true).unwrap();
    assert_eq!(resumed.summary.resumed_from, Some(5));
    // A damaged trainer.json.
    let latest = Trainer::new(config(5), dir.path()).latest_checkpoint().unwrap().unwrap();
    std::fs::write(latest.join("trainer.json"), b"{\"format\": 3").unwrap();
    let err = Trainer::new(config(10), dir.path()).fit(mlp(), &mut Regression::new(), &points(), true).unwrap_err();
    assert!(err.to_string().contains("trainer.json") && err.to_string().contains("not a trainer checkpoint"), "{err}");
}

#[test]
fn training_reduces_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let trained = Trainer::new(TrainerConfig { eval_every: 0, ..config(60) }, dir.path())
        .fit(mlp(), &mut Regression::new(), &points(), false)
        .unwrap();
    let evals = &trained.summary.evals;
    assert_eq!(evals.first().unwrap().0, 0);
    assert_eq!(evals.last().unwrap().0, 60);
    let (before, after) = (evals[0].1["mse"], evals.last().unwrap().1["mse"]);
    assert!(after < before * 0.5, "mse {before} -> {after}");
    assert!(trained.summary.examples_per_second > 0.0 && trained.summary.examples == 240);
}
