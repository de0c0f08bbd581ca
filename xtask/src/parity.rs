//! `cargo xtask parity DIR [--component NAME]...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::backend::Autodiff;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use rag_parity::{CheckOptions, Component, Outcome};

use crate::device::{DeviceSpec, on_device};

/// Arguments of `cargo xtask parity`.
#[derive(Args)]
pub struct ParityArgs {
    /// A fixture directory in the layout of `shared/fixtures/hf`.
    dir: PathBuf,
    /// Component to check (repeatable); default: every component present in DIR. A requested
    /// component that fails, or is missing from DIR makes the exit non-zero.
    #[arg(long = "component", value_name = "NAME", value_parser = component_names())]
    components: Vec<String>,
    /// Directory of the real all-MiniLM-L6-v2 weights (printed by `fetch-minilm.sh`).
    #[arg(long, value_name = "DIR")]
    minilm_weights: Option<PathBuf>,
    /// SmolLM2-135M-Instruct's GGUF file, or its directory (printed by `fetch-smollm2.sh`).
    #[arg(long, value_name = "DIR")]
    smollm2_gguf: Option<PathBuf>,
    /// Float precision of the check. `losses`: f64 is held to 1e-9 relative, f32 to 1e-5 (in
    /// f32 the RAG-Sequence doc-score gradient of sharp cases cancels, prior − posterior both
    /// near 1, and misses 1e-5 relative while staying within ~1e-5 absolute: judge it in f64).
    /// Encoders (`bert`, `dpr`, `minilm`): f64 is held to 1e-9 absolute, f32 to 1e-4 absolute.
    #[arg(long, value_enum, default_value_t = Precision::F64)]
    precision: Precision,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    F64,
}

fn component_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Component::ALL.map(Component::name))
}

/// Checks each selected component and prints one line per component.
pub fn run(args: ParityArgs, spec: DeviceSpec) -> anyhow::Result<ExitCode> {
    on_device!(spec, args: ParityArgs => run_on)
}

fn run_on<B: Backend>(args: ParityArgs, device: &B::Device, spec: DeviceSpec) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!("fixture directory {} does not exist", args.dir.display());
    }
    let requested: Vec<Component> = args
        .components
        .iter()
        .map(|name| Component::from_name(name).context("clap validated the name"))
        .collect::<anyhow::Result<_>>()?;
    let selected: Vec<Component> = if requested.is_empty() {
        Component::ALL.into_iter().filter(|c| c.present_in(&args.dir)).collect()
    } else {
        requested.clone()
    };
    if selected.is_empty() {
        bail!("{} holds no known component", args.dir.display());
    }
    if let Some(weights) = &args.minilm_weights
        && !weights.is_dir()
    {
        bail!("--minilm-weights {} is not a directory", weights.display());
    }

    let dtype = match args.precision {
        Precision::F32 => DType::F32,
        Precision::F64 => DType::F64,
    };
    if dtype == DType::F64 && !spec.allows_f64() {
        bail!("--precision {dtype:?} is not supported on --device {spec}: use --precision f32");
    }
    if let Some(gguf) = &args.smollm2_gguf
        && !gguf.exists()
    {
        bail!("--smollm2-gguf {}: no such file or directory", gguf.display());
    }
    let options = CheckOptions { minilm_weights: args.minilm_weights.clone(), smollm2_gguf: args.smollm2_gguf.clone() };
    let mut failed = false;
    for component in selected {
        let is_requested = requested.contains(&component);
        if !component.present_in(&args.dir) {
            println!("{}: FAIL missing {}", component.name(), args.dir.join(component.entry()).display());
            failed = true;
            continue;
        }
        match rag_parity::check::<Autodiff<B>>(component, &args.dir, &options, device, dtype) {
            Err(error) => {
                println!("{}: FAIL {error}", component.name());
                failed = true;
            }
            Ok(Outcome::Checked(report)) => {
                println!("{report}");
                failed |= !report.passed();
            }
            Ok(Outcome::Skipped(reason)) => {
                println!("{}: skipped: {reason}", component.name());
                failed |= is_requested;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
