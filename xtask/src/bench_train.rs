//! `cargo xtask bench-train --device D`: training throughput of the embedded default (RAG-Token,
//! batch 16, K = 3) on one device, as JSON, with a CPU reference run in the same process.
//!
//! A step is the whole of training's inner loop: retrieval (query encoding on the device, search
//! on the host), the generator over every (question, passage) pair, the marginalized loss,
//! backward, global clipping and the AdamW update, synchronized with the device. Warm-up steps
//! (kernel compilation and autotuning on the GPU backends) are not timed.

use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use rag::QaExample;
use rag::rag_trainer::{DataPosition, Loader};
use serde_json::{Value, json};

use crate::device::{DeviceSpec, OnBackend, check_precision, dispatch};
use crate::step::{self, EmbeddedWorld};

/// Arguments of `cargo xtask bench-train`.
#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Questions per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Skip the CPU reference run (when --device is not the CPU).
    #[arg(long)]
    no_reference: bool,
    /// The generator's forward precision: f32, or f16/bf16 over f32 weights with an f32 loss.
    /// The CPU reference runs in f32.
    #[arg(long, default_value = "f32")]
    precision: rag::Precision,
}

pub fn run(args: BenchTrainArgs, spec: DeviceSpec) -> Result<ExitCode> {
    if args.steps == 0 || args.batch_size == 0 {
        anyhow::bail!("--steps and --batch-size must be at least 1");
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    eprintln!("generating the embedded task and encoding its corpus on the CPU");
    let world = EmbeddedWorld::create(scratch.path())?;
    let measured = dispatch(spec, Bench { world: &world, args: &args, precision: args.precision })?;
    let mut report = json!({
        "bench": "train_step",
        "model": "embedded default",
        "recipe": step::RECIPE.name(),
        "device": spec.to_string(),
        "batch_size": args.batch_size,
        "n_docs": world.setup.config.n_docs,
        "d_model": world.setup.config.d_model,
        "steps": args.steps,
        "warmup": args.warmup,
        "result": measured,
    });
    if spec != DeviceSpec::Cpu && !args.no_reference {
        eprintln!("reference: the same steps on the CPU");
        let reference =
            dispatch(DeviceSpec::Cpu, Bench { world: &world, args: &args, precision: rag::Precision::F32 })?;
        let speedup = measured["examples_per_second"].as_f64().unwrap_or(f64::NAN)
            / reference["examples_per_second"].as_f64().unwrap_or(f64::NAN);
        report["reference"] = json!({"device": "cpu", "result": reference});
        report["speedup_over_cpu"] = json!(speedup);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

struct Bench<'a> {
    world: &'a EmbeddedWorld,
    args: &'a BenchTrainArgs,
    precision: rag::Precision,
}

impl OnBackend for Bench<'_> {
    type Output = Value;

    fn run<B: Backend>(self, device: B::Device, spec: DeviceSpec) -> Result<Value> {
        check_precision::<B>(&device, spec, self.precision)?;
        let train: &[QaExample] = self.world.train();
        let mut loader = Loader::new(train.len(), self.args.batch_size, 0, DataPosition { epoch: 0, cursor: 0 });
        let mut model = self.world.model::<B>(&device, self.precision)?;
        let mut optim = step::optimizer::<B>(self.world);
        let (mut seconds, mut examples, mut tokens, mut times, mut last_loss) = (0.0, 0usize, 0usize, Vec::new(), 0.0);
        for i in 0..self.args.warmup + self.args.steps {
            let batch: Vec<&QaExample> = loader.next_batch().into_iter().map(|j| &train[j]).collect();
            let (next, result) = step::step(self.world, model, &mut optim, &batch, i as u64)?;
            model = next;
            if i >= self.args.warmup {
                seconds += result.seconds;
                examples += batch.len();
                tokens += result.tokens;
                times.push(result.seconds * 1e3);
                last_loss = result.loss;
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(json!({
            "backend": B::name(&device),
            "precision": format!("{:?}", self.precision).to_lowercase(),
            "examples_per_second": examples as f64 / seconds,
            "tokens_per_second": tokens as f64 / seconds,
            "tokens_per_step": tokens as f64 / self.args.steps as f64,
            "step_ms_median": times[times.len() / 2],
            "step_ms_min": times[0],
            "step_ms_max": times[times.len() - 1],
            "final_loss": last_loss,
        }))
    }
}
