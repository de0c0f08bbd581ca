//! `cargo xtask ingest`: builds a passage store from corpus files (JSONL or DPR TSV) and prints what
//! ingestion did as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rag_index::{Chunking, IngestOptions, InputFormat, OnDuplicate, OnMalformed, StoreBuilder};
use serde_json::json;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Corpus files, ingested in order: `.jsonl`/`.json` ({"id", "title", "text"}) or DPR's `.tsv`.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The store file to write (replaced atomically when the build succeeds).
    #[arg(long, short)]
    output: PathBuf,
    /// Read every input as this format instead of guessing from the extension.
    #[arg(long, value_parser = ["jsonl", "tsv"])]
    format: Option<String>,
    /// Split documents into passages of this many words (DPR: 100); passages get consecutive ids.
    #[arg(long)]
    chunk_words: Option<usize>,
    /// Words between passage starts when chunking (default: --chunk-words, no overlap).
    #[arg(long, requires = "chunk_words")]
    stride: Option<usize>,
    /// Skip and count malformed lines instead of failing at the first one.
    #[arg(long)]
    skip_malformed: bool,
    /// Keep the first passage of a repeated id instead of failing.
    #[arg(long)]
    keep_first_duplicate: bool,
}

pub fn run(args: IngestArgs) -> Result<std::process::ExitCode> {
    let options = IngestOptions {
        format: args.format.as_deref().map(|f| if f == "tsv" { InputFormat::DprTsv } else { InputFormat::Jsonl }),
        on_malformed: if args.skip_malformed { OnMalformed::Skip } else { OnMalformed::Fail },
        on_duplicate: if args.keep_first_duplicate { OnDuplicate::KeepFirst } else { OnDuplicate::Fail },
        chunking: args.chunk_words.map(|words| Chunking { words, stride: args.stride.unwrap_or(words) }),
    };
    let mut builder = StoreBuilder::create(&args.output)?;
    let mut reports = Vec::new();
    for input in &args.inputs {
        let report = builder.ingest(input, &options).with_context(|| format!("ingesting {}", input.display()))?;
        reports.push(json!({"input": input, "report": report}));
    }
    let store = builder.finish()?;
    let summary = json!({
        "output": args.output,
        "passages": store.len(),
        "text_bytes": store.text_bytes(),
        "file_bytes": std::fs::metadata(&args.output).map(|m| m.len()).ok(),
        "inputs": reports,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(std::process::ExitCode::SUCCESS)
}
