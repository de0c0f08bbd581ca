//! `cargo xtask <command>`: the project's task runner.
//!
//! - `train`: end-to-end training on the embedded default (arrives with the training issue).
//! - `parity DIR [--component NAME]...`: checks the project against a fixture directory in the
//!   format of `shared/fixtures/hf` and prints `COMPONENT: ok|FAIL max_abs_err=... max_rel_err=...`.
//!
//! This leaf picks the hardware: the CPU backend (Burn's Flex) for now.

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
    Train(train::TrainArgs),
    /// Check the project against HuggingFace reference fixtures.
    Parity(parity::ParityArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Parity(args) => parity::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
