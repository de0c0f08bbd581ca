//! A generic training engine that knows nothing of RAG.
//!
//! - [`TrainTask`]: what a task provides: the loss of a batch, an evaluation, an index refresh.
//! - [`Trainer::fit`]: the loop. AdamW with decoupled weight decay ([`AdamW`], PyTorch's update),
//!   warm-up then constant, linear or cosine decay ([`Schedule`], HF's formulas), global-norm
//!   clipping ([`clip_global_norm`], PyTorch's `clip_grad_norm_`), gradient accumulation,
//!   parameter groups with their own learning rates and freezing ([`ParamGroup`]).
//! - Checkpoints every N steps and at the end, each a directory written under a temporary name
//!   and renamed into place: model and optimizer moments as safetensors by module path, step,
//!   data position and training time in `trainer.json`. `fit(.., resume = true)` continues from
//!   the newest one; the data order and the backend RNG are functions of (seed, step), so a run
//!   killed at any moment and resumed computes what an uninterrupted run computes.
//! - `metrics.jsonl` ([`Record`]), progress with rate and ETA, SVG plots ([`plot_history`]) at
//!   the end. A NaN or infinite loss or gradient norm stops the run before the update
//!   ([`TrainerError::NonFinite`]), leaving the last good checkpoint.
//!
//! It is generic over the Burn backend and never picks one.
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::module::AutodiffModule;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Tensor, TensorData};
//! use rag_trainer::{BoxError, Decay, Metrics, ParamGroup, TrainTask, Trainer, TrainerConfig};
//!
//! type Ad = Autodiff<Flex>;
//! /// Fits y = 2x with one linear layer.
//! struct Regression;
//! impl TrainTask<Ad, Linear<Ad>> for Regression {
//!     type Item = f32;
//!     fn loss(&mut self, model: &Linear<Ad>, batch: &[&f32]) -> Result<Tensor<Ad, 1>, BoxError> {
//!         let x: Vec<f32> = batch.iter().map(|v| **v).collect();
//!         let x = Tensor::<Ad, 2>::from_data(TensorData::new(x.clone(), [x.len(), 1]), &Default::default());
//!         let err = model.forward(x.clone()) - x.mul_scalar(2.0);
//!         Ok(err.square().mean().reshape([1]))
//!     }
//!     fn evaluate(&mut self, model: &Linear<Flex>) -> Result<Metrics, BoxError> {
//!         let w = model.weight.val().into_data().convert::<f64>().iter::<f64>().next().unwrap();
//!         Ok(Metrics::from([("weight".to_string(), w)]))
//!     }
//! }
//! let dir = tempfile::tempdir()?;
//! let config = TrainerConfig {
//!     steps: 200,
//!     batch_size: 4,
//!     decay: Decay::Constant,
//!     groups: vec![ParamGroup::new("all", &[""], 0.05, 0.0)],
//!     progress: false,
//!     ..TrainerConfig::default()
//! };
//! let data: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
//! let model = LinearConfig::new(1, 1).init::<Ad>(&Default::default());
//! let trained = Trainer::new(config, dir.path()).fit(model, &mut Regression, &data, false)?;
//! let (_, last) = trained.summary.evals.last().unwrap();
//! assert!((last["weight"] - 2.0).abs() < 0.1, "{last:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod data;
mod error;
mod log;
mod optim;
mod plot;
mod progress;
mod schedule;
mod trainer;

pub use data::{DataPosition, Loader, Rng, mix};
pub use error::{BoxError, Result, TrainerError};
pub use log::{Metrics, MetricsLog, Record, read_records};
pub use optim::{
    AdamW, AdamWConfig, Gradients, ParamGroup, accumulate, clip_global_norm, freeze, global_norm, group_of,
    trainable_paths,
};
pub use plot::{Series, line_plot, plot_history};
pub use schedule::{Decay, Schedule};
pub use trainer::{
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointState, StepOutcome, TrainSummary, TrainTask, Trained, Trainer,
    TrainerConfig, latest_checkpoint, read_checkpoint,
};
