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
//!
//! This leaf picks the hardware: the CPU backend (Burn's Flex) for now.

mod ask;
mod bench_index;
mod index;
mod ingest;
mod parity;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks of the rag workspace", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => ask::eval(args),
        Command::Ask(args) => ask::ask(args),
        Command::Parity(args) => parity::run(args),
        Command::BenchIndex(args) => bench_index::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Index(args) => index::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
