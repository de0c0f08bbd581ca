//! `cargo xtask eval` and `cargo xtask ask`: a trained run's model answering questions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use rag::{DecodeMode, EvalOptions, Knowledge, RagModel, evaluate, read_qa_jsonl};
use serde_json::json;

use crate::device::{DeviceSpec, on_device};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// RAG-Token (BART) or ensemble (decoder-only) decoding.
    Token,
    /// RAG-Sequence thorough decoding: a search per passage, every candidate rescored on all.
    SequenceThorough,
    /// RAG-Sequence fast decoding: a search per passage, no rescoring.
    SequenceFast,
}

impl From<Mode> for DecodeMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Token => DecodeMode::Token,
            Mode::SequenceThorough => DecodeMode::SequenceThorough,
            Mode::SequenceFast => DecodeMode::SequenceFast,
        }
    }
}

/// Where a model comes from.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A run directory of `cargo xtask train` (its `model/`), or a model directory written by
    /// `RagModel::save` with its knowledge paths.
    #[arg(long, default_value = "runs/rag-token")]
    run: PathBuf,
    /// Decoding mode (default: `token` for BART, `sequence-thorough` for a decoder-only LM, as
    /// `cargo xtask train` measures them).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Beams (1: greedy).
    #[arg(long, default_value_t = 1)]
    beams: usize,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
}

fn load<B: Backend>(args: &ModelArgs, device: &B::Device) -> Result<(RagModel<B>, Knowledge, PathBuf)> {
    let dir = if args.run.join("model").join("rag.json").is_file() { args.run.join("model") } else { args.run.clone() };
    if !dir.join("rag.json").is_file() {
        bail!(
            "{}: no trained model here (expected {}/model/rag.json from `cargo xtask train`)",
            args.run.display(),
            args.run.display()
        );
    }
    let loaded = RagModel::<B>::load(&dir, device, DType::F32)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    let paths = loaded.knowledge.with_context(|| format!("{} names no passage store and index", dir.display()))?;
    let knowledge = Knowledge::open(&paths)?;
    Ok((loaded.model, knowledge, dir))
}

fn generation<B: Backend>(model: &RagModel<B>, args: &ModelArgs) -> rag::rag_generator::GenerationConfig {
    let mut g = model.generator().generation_config();
    g.max_new_tokens = Some(args.max_new_tokens);
    g.num_beams = args.beams;
    g
}

/// Arguments of `cargo xtask eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Questions: JSONL of {"question", "answers": [...]} (default: the run's held-out
    /// questions, `data/test.jsonl`).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Evaluate at most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// What the generator reads: `retrieved` (its own top-K), `bm25` (BM25's top-K over the
    /// same store, built in memory when the evaluation starts; recall@k is BM25's), `gold` (the
    /// gold passage alone: the oracle; every question needs a `gold` id) or `closed-book`
    /// (nothing; needs a one-passage model).
    #[arg(long, value_enum, default_value = "retrieved")]
    passages: Reads,
    /// Also write each question's answer here, as JSONL of {"question", "answers",
    /// "prediction", "exact_match"}.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Answer from this corpus instead of the run's (JSONL {"id", "title", "text"} or DPR TSV):
    /// it is ingested and encoded with the run's document encoder into a flat index in a
    /// temporary directory (nothing is written beside the run). --dev's gold ids name its
    /// passages.
    #[arg(long, requires = "dev")]
    corpus: Option<PathBuf>,
    /// Print the result as one JSON object on one line (default: a table, then the JSON).
    #[arg(long)]
    json: bool,
}

/// `--passages` of `cargo xtask eval`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Reads {
    Retrieved,
    Bm25,
    Gold,
    ClosedBook,
}

impl From<Reads> for rag::PassageSource {
    fn from(reads: Reads) -> Self {
        match reads {
            Reads::Retrieved => Self::Retrieved,
            Reads::Bm25 => Self::Bm25,
            Reads::Gold => Self::Gold,
            Reads::ClosedBook => Self::ClosedBook,
        }
    }
}

pub fn eval(args: EvalArgs, spec: DeviceSpec) -> Result<ExitCode> {
    on_device!(spec, args: EvalArgs => eval_on)
}

fn eval_on<B: Backend>(args: EvalArgs, device: &B::Device, spec: DeviceSpec) -> Result<ExitCode> {
    let (model, knowledge, dir) = load::<B>(&args.model, device)?;
    let scratch = tempfile::tempdir().context("creating a temporary directory for --corpus")?;
    let knowledge = match &args.corpus {
        None => knowledge,
        Some(corpus) => reencoded(&model, corpus, scratch.path(), !args.json)?,
    };
    let dev = args.dev.clone().unwrap_or_else(|| args.model.run.join("data").join("test.jsonl"));
    let mut examples = read_qa_jsonl(&dev)?;
    rag::check_gold_ids(&dev, &examples, &knowledge.store)?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    let options = EvalOptions {
        batch_size: 32,
        ks: vec![1, 5, 20],
        mode: args.model.mode.map_or_else(|| model.default_decode_mode(), Into::into),
        generation: generation(&model, &args.model),
        passages: args.passages.into(),
    };
    let started = std::time::Instant::now();
    let report = evaluate(&model, &knowledge, &examples, &options)?;
    if let Some(path) = &args.predictions {
        let mut lines = String::new();
        for (example, prediction) in examples.iter().zip(&report.predictions) {
            let row = json!({
                "question": example.question,
                "answers": example.answers,
                "prediction": prediction,
                "exact_match": rag::exact_match(prediction, &example.answers),
            });
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
        rag::rag_hf::write_atomic(path, lines.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    let result = json!({
        "model": dir,
        "device": spec.to_string(),
        "corpus": args.corpus.as_ref().map_or_else(|| knowledge.store.path().to_path_buf(), Clone::clone),
        "corpus_passages": knowledge.store.len(),
        "questions": dev,
        "passages": ValueEnum::to_possible_value(&args.passages).map(|v| v.get_name().to_string()),
        "examples": report.examples,
        "metrics": report.metrics(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{} questions of {}, {} passages:", report.examples, dev.display(), knowledge.store.len());
        for (name, value) in report.metrics() {
            println!("  {name:<14} {value:.3}");
        }
        println!("{:.1} s", started.elapsed().as_secs_f64());
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `corpus` ingested into a store under `dir` and encoded with `model`'s document encoder into
/// a flat index: the run's model over another corpus.
fn reencoded<B: Backend>(
    model: &RagModel<B>,
    corpus: &std::path::Path,
    dir: &std::path::Path,
    progress: bool,
) -> Result<Knowledge> {
    use rag::rag_index::{FlatIndex, IngestOptions, Metric, PassageStore, StoreBuilder};
    let store_path = dir.join("corpus.store");
    let mut builder = StoreBuilder::create(&store_path)?;
    builder.ingest(corpus, &IngestOptions::default()).with_context(|| format!("ingesting {}", corpus.display()))?;
    builder.finish()?;
    let store = PassageStore::open(&store_path)?;
    let encoder = model.retriever().document_encoder();
    let mut index = FlatIndex::new(encoder.dim(), Metric::InnerProduct)?;
    if progress {
        eprintln!("encoding {} passages of {} with the run's document encoder", store.len(), corpus.display());
    }
    let options = rag_retriever::EncodeOptions { batch_size: 32, with_titles: true, progress };
    let report = rag::index_store(encoder, model.passage_tokenizer(), &store, &mut index, &options)?;
    if progress {
        eprintln!("encoded in {:.1} s ({:.1} passages/s)", report.seconds, report.rate());
    }
    Ok(Knowledge { store, index: Box::new(index) })
}

/// Arguments of `cargo xtask ask`.
#[derive(Args, Debug)]
pub struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Who finds the passages: `dense` (the model's retriever and index) or `bm25` (BM25's
    /// top-K over the same store, a uniform prior over them; its index is kept beside the
    /// store, `<store>.bm25/`, and built on first use).
    #[arg(long, value_enum, default_value = "dense")]
    retriever: AskRetriever,
}

/// `--retriever` of `cargo xtask ask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AskRetriever {
    Dense,
    Bm25,
}

pub fn ask(args: AskArgs, spec: DeviceSpec) -> Result<ExitCode> {
    on_device!(spec, args: AskArgs => ask_on)
}

fn ask_on<B: Backend>(args: AskArgs, device: &B::Device, _spec: DeviceSpec) -> Result<ExitCode> {
    let (model, knowledge, _) = load::<B>(&args.model, device)?;
    let mode = args.model.mode.map_or_else(|| model.default_decode_mode(), Into::into);
    let generation = generation(&model, &args.model);
    let questions = [args.question.as_str()];
    let answers = match args.retriever {
        AskRetriever::Dense => model.answer(&knowledge, &questions, mode, &generation)?,
        AskRetriever::Bm25 => {
            let bm25 = rag::Bm25::open_or_create(&knowledge.store, true)?;
            let n_docs = model.config().n_docs;
            let found = bm25.passages(&knowledge, &args.question, n_docs)?;
            if found.is_empty() {
                bail!("BM25 found no passage sharing a term with the question");
            }
            let retrieval = rag::Retrieval::given_rows(vec![found], n_docs, device);
            model.answer_retrieved(&questions, &retrieval, mode, &generation)?
        }
    };
    let answer = &answers[0];
    println!("{}", answer.text.trim());
    for p in &answer.passages {
        println!(
            "  [{:>5.1}% prior, {:>5.1}% posterior] #{} {}: {}",
            100.0 * p.prior,
            100.0 * p.posterior,
            p.id,
            p.title,
            p.text
        );
    }
    Ok(ExitCode::SUCCESS)
}
