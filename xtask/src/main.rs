//! `cargo xtask <command>`: the project's task runner.
//!
//! - `train`: end-to-end training, on the embedded generated task by default or on your data.
//! - `eval --run DIR`: recall@k, exact match and F1 of a trained run on a question file.
//! - `ask "question" --run DIR`: an answer with its passages, priors and posteriors.
//! - `parity DIR [--component NAME]...`: checks the project against a fixture directory in the
//!   format of `shared/fixtures/hf` and prints `COMPONENT: ok|FAIL max_abs_err=... max_rel_err=...`.
//! - `ingest FILE... -o STORE`: builds a passage store from JSONL / DPR TSV corpus files.
//! - `index --store S --encoder DIR -o INDEX`: encodes a store into a vector index.
//! - `bench-index`: build time, QPS, recall@k and memory per vector of one index kind, as JSON.
//! - `backends`: the same seeded losses, gradients and training step on every backend compiled
//!   in and present, compared with the CPU.
//! - `bench-train`: training throughput of the embedded default on one device, as JSON.
//! - `bench-vs-torch`: the same work here and in PyTorch / HF transformers / sentence-transformers
//!   / FAISS, in one run, with the ratios.
//!
//! This leaf picks the hardware: `--device cpu|cuda[:N]|wgpu|vulkan|metal` (or `RAG_DEVICE`) on
//! every command, among the backends compiled in (features `cuda`, `wgpu`, `vulkan`, `metal`;
//! see `device.rs`).

mod ask;
mod backends;
mod bench_index;
mod bench_train;
mod device;
mod index;
mod ingest;
mod parity;
mod repo;
mod squad;
mod step;
mod train;
mod vs_torch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks of the rag workspace", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where tensors live: cpu, cuda, cuda:N, wgpu, vulkan, metal or tch (LibTorch on the CPU).
    /// The GPU backends need the matching feature (`cargo xtask-gpu ...` has cuda and wgpu), tch
    /// needs `scripts/libtorch.sh ...`. `ingest` and `bench-index` run on the host whatever it
    /// says.
    #[arg(long, global = true, env = "RAG_DEVICE", default_value = "cpu")]
    device: device::DeviceSpec,
}

#[derive(Subcommand)]
enum Command {
    /// Train a RAG model end to end (default: the embedded generated task).
    Train(Box<train::TrainArgs>),
    /// Evaluate a trained run on questions: recall@k, exact match, F1.
    Eval(ask::EvalArgs),
    /// Answer a question with a trained run, with provenance.
    Ask(ask::AskArgs),
    /// Check the project against HuggingFace reference fixtures.
    Parity(parity::ParityArgs),
    /// Build a passage store from corpus files (JSONL or DPR TSV).
    Ingest(ingest::IngestArgs),
    /// Encode a passage store into a vector index with a retriever's document encoder.
    Index(index::IndexArgs),
    /// Measure an index kind: build time, queries/s, recall@k against exact search, bytes/vector.
    BenchIndex(bench_index::BenchIndexArgs),
    /// Run the same seeded losses, gradients and training step on every backend present and
    /// compare them with the CPU.
    Backends(backends::BackendsArgs),
    /// Measure training throughput (examples/s, tokens/s) of the embedded default on --device.
    BenchTrain(bench_train::BenchTrainArgs),
    /// Run the same training steps, scoring, encoding and searches here and in PyTorch / HF
    /// transformers / sentence-transformers / FAISS, and print the ratios.
    BenchVsTorch(vs_torch::VsTorchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let device = cli.device;
    if matches!(cli.command, Command::Ingest(_) | Command::BenchIndex(_)) && device != device::DeviceSpec::Cpu {
        eprintln!("note: this command runs on the host; --device {device} does not apply to it");
    }
    let outcome = match cli.command {
        Command::Train(args) => train::run(*args, device),
        Command::Eval(args) => ask::eval(args, device),
        Command::Ask(args) => ask::ask(args, device),
        Command::Parity(args) => parity::run(args, device),
        Command::BenchIndex(args) => bench_index::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Index(args) => index::run(args, device),
        Command::Backends(args) => backends::run(args, device),
        Command::BenchTrain(args) => bench_train::run(args, device),
        Command::BenchVsTorch(args) => vs_torch::run(args, device),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
