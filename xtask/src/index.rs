//! `cargo xtask index`: encodes a passage store with a retriever's document encoder into a
//! vector index file, and prints what it did as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use rag_index::{Metric, PassageStore};
use rag_retriever::{EncodeOptions, Encoder, EncoderOptions, Pooling, TextTokenizer};
use serde_json::json;

use crate::device::{DeviceSpec, on_device};

use crate::bench_index::{Kind, MetricArg};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PoolingArg {
    Cls,
    Mean,
    Max,
    MeanSqrtLen,
    Pooler,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The passage store to encode (built by `cargo xtask ingest`).
    #[arg(long)]
    store: PathBuf,
    /// The document encoder: a HF model directory (BertModel, DPRContextEncoder or
    /// sentence-transformers) with config.json and model.safetensors.
    #[arg(long)]
    encoder: PathBuf,
    /// The tokenizer.json to use (default: the one in --encoder).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The index file to write.
    #[arg(long, short)]
    output: PathBuf,
    /// The index kind.
    #[arg(long, value_enum, default_value_t = Kind::Flat)]
    kind: Kind,
    /// Similarity (DPR: inner product; normalised sentence embeddings: either).
    #[arg(long, value_enum, default_value_t = MetricArg::Ip)]
    metric: MetricArg,
    /// Override the encoder's pooling (default: the checkpoint's, else CLS).
    #[arg(long, value_enum)]
    pooling: Option<PoolingArg>,
    /// Passages per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Truncate passages to this many tokens (default: the tokenizer's, else 512).
    #[arg(long)]
    max_len: Option<usize>,
    /// Encode the text alone instead of DPR's (title, text) pair.
    #[arg(long)]
    no_titles: bool,
}

pub fn run(args: IndexArgs, spec: DeviceSpec) -> Result<ExitCode> {
    on_device!(spec, args: IndexArgs => run_on)
}

fn run_on<B: Backend>(args: IndexArgs, device: &B::Device, _spec: DeviceSpec) -> Result<ExitCode> {
    let store = PassageStore::open(&args.store).with_context(|| format!("opening store {}", args.store.display()))?;
    let pooling = args.pooling.map(|p| match p {
        PoolingArg::Cls => Pooling::Cls,
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Max => Pooling::Max,
        PoolingArg::MeanSqrtLen => Pooling::MeanSqrtLen,
        PoolingArg::Pooler => Pooling::Pooler,
    });
    let options = EncoderOptions { pooling, ..EncoderOptions::default() };
    let encoder = Encoder::<B>::from_pretrained(&args.encoder, &options, device, DType::F32)?;
    let tokenizer = TextTokenizer::from_file(args.tokenizer.as_ref().unwrap_or(&args.encoder), args.max_len)?;
    if tokenizer.max_len() > encoder.bert().max_positions() {
        bail!(
            "the tokenizer truncates to {} tokens but the encoder has {} positions: pass --max-len {}",
            tokenizer.max_len(),
            encoder.bert().max_positions(),
            encoder.bert().max_positions()
        );
    }
    let metric = Metric::from(args.metric);
    let dim = encoder.dim();
    let mut index = rag_index::empty_index(dim, metric, args.kind.hnsw_storage())?;
    eprintln!("encoding {} passages from {} into a {dim}-dimensional index", store.len(), args.store.display());
    let encode = EncodeOptions { batch_size: args.batch_size, with_titles: !args.no_titles, progress: true };
    let report = rag::index_store(&encoder, &tokenizer, &store, index.as_mut(), &encode)?;
    index.save(&args.output).with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}",
        json!({
            "passages": report.passages,
            "seconds": report.seconds,
            "passages_per_second": report.rate(),
            "dim": dim,
            "index": args.output,
        })
    );
    Ok(ExitCode::SUCCESS)
}
