//! `cargo xtask train`: end-to-end training, on the embedded generated task by default or on the
//! user's data, with the baselines that show what the training did. The experiment itself is
//! [`rag::experiment::run`]; this module turns flags into its config and prints its report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use clap::Args;
use rag::Recipe;
use rag::experiment::{self, DataFiles, ExperimentConfig, ExperimentData, ROWS, RunReport, SeedSummary};

use crate::device::{DeviceSpec, on_device};

/// `--prompt`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Prompt {
    /// RA-DIT's background-then-question prompt.
    RaDit,
    /// A ChatML user turn (instruction-tuned models).
    Chatml,
}

/// Arguments of `cargo xtask train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Run a whole prepared experiment instead: `squad` (SQuAD split by article, MiniLM and
    /// SmolLM2 fetched from PyPI, every baseline and recipe; see docs/training.md). The other
    /// flags override its settings.
    #[arg(long, value_parser = ["squad"])]
    pub preset: Option<String>,
    /// Training recipe: rag-token, rag-sequence, ra-dit-lm or ra-dit-lsr.
    #[arg(long, default_value = "rag-token")]
    pub recipe: String,
    /// Run name: output goes to `<runs-dir>/<name>/` (default: the recipe's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where runs are written.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue every stage of the run from its newest checkpoint. A stage whose settings (steps,
    /// learning rates, recipe, passages, a data file's content...) differ from its checkpoint's is
    /// refused, naming each change.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue from the checkpoints even though settings changed, on purpose
    /// (each stage goes on with the new settings from its checkpoint's step).
    #[arg(long, requires = "resume")]
    pub allow_changed_resume: bool,
    /// Seed of the data order, dropout and the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Optimizer steps of the main training (default: the recipe's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Questions per step.
    #[arg(long, default_value_t = defaults().batch_size)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = defaults().grad_accumulation)]
    pub grad_accumulation: usize,
    /// Peak learning rate of the query (and document) encoder.
    #[arg(long)]
    pub retriever_lr: Option<f64>,
    /// Peak learning rate of the generator.
    #[arg(long)]
    pub generator_lr: Option<f64>,
    /// Train only the generator's top N layers (and a LLaMA's final norm) in every stage that
    /// trains it: the layers below and the embeddings carry no gradient and cost no backward
    /// pass (a 135M-parameter LM on two cores).
    #[arg(long, value_name = "N")]
    pub generator_layers: Option<usize>,
    /// Hold the retriever still for this many steps while the generator learns to read
    /// (default: 0 after a reading warm-up, else a third of the steps for the RAG recipes; 0 for
    /// RA-DIT's LSR stage).
    #[arg(long)]
    pub retriever_start: Option<u64>,
    /// Evaluate every this many steps as well as before and after (0: before and after only).
    #[arg(long, default_value_t = defaults().eval_every)]
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = defaults().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Passages per question (default: 3 on the embedded task, 8 for the RA-DIT recipes there; 5
    /// on your data).
    #[arg(long)]
    pub n_docs: Option<usize>,
    /// Train the document encoder too (RAG recipes), re-encoding the corpus into the index every
    /// --refresh-every steps.
    #[arg(long)]
    pub train_doc_encoder: bool,
    /// Steps between index refreshes with --train-doc-encoder.
    #[arg(long, default_value_t = defaults().refresh_every)]
    pub refresh_every: u64,
    /// Do not measure the untrained model on the test questions (no `before` row).
    #[arg(long)]
    pub no_before: bool,
    /// Do not measure the warm-up stages on the test questions after they train (their dev
    /// evaluations stay).
    #[arg(long)]
    pub no_warmup_tests: bool,
    /// Skip the frozen-retriever ablation and the closed-book baseline.
    #[arg(long)]
    pub no_baselines: bool,
    /// Entities of the embedded task (30 dev and 60 test entities, or a tenth and a fifth of
    /// fewer than 300; the rest are asked about in training).
    #[arg(long, default_value_t = rag::SyntheticConfig::default().entities)]
    pub entities: usize,
    /// Evaluate on at most this many questions.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Evaluate during training on at most this many dev questions (default: --eval-limit).
    #[arg(long)]
    pub dev_limit: Option<usize>,
    /// Your corpus: JSONL ({"id", "title", "text"}) or DPR TSV.
    #[arg(long, requires_all = ["train", "dev", "generator"])]
    pub corpus: Option<PathBuf>,
    /// Training questions: JSONL of {"question", "answers": [...]}.
    #[arg(long, requires = "corpus")]
    pub train: Option<PathBuf>,
    /// Evaluation questions, same format.
    #[arg(long, requires = "corpus")]
    pub dev: Option<PathBuf>,
    /// Held-out questions the report's rows are measured on (default: the --dev questions).
    #[arg(long, requires = "corpus")]
    pub test: Option<PathBuf>,
    /// A HF retriever checkpoint directory (BERT, DPR or sentence-transformers) with
    /// tokenizer.json; it becomes both encoders (--question-encoder / --document-encoder set
    /// them apart, as DPR's two).
    #[arg(long, requires = "corpus")]
    pub retriever: Option<PathBuf>,
    /// The query encoder (default: --retriever).
    #[arg(long, requires = "corpus")]
    pub question_encoder: Option<PathBuf>,
    /// The document encoder (default: --retriever); it shares the query encoder's tokenizer.
    #[arg(long, requires = "corpus")]
    pub document_encoder: Option<PathBuf>,
    /// An index of --corpus by the document encoder, from `cargo xtask index`, used instead of
    /// encoding the corpus (checked against the store and the encoder first); with --corpus
    /// or --preset.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// How a decoder-only generator is prompted with a passage and a question: `ra-dit`
    /// ("Background: {title} {text}" then "{question}\nAnswer:") or `chatml` (a ChatML user
    /// turn asking for a few words from the background, for an instruction-tuned model such as
    /// SmolLM2-Instruct).
    #[arg(long, value_enum)]
    pub prompt: Option<Prompt>,
    /// How every row is decoded (default: RAG-Token's mixture for BART, RAG-Sequence thorough
    /// for a decoder-only LM; `token` is the per-token ensemble for one, about 1.5 times faster).
    #[arg(long, value_enum)]
    pub decode: Option<crate::ask::Mode>,
    /// The index the corpus is encoded into.
    #[arg(long, value_enum, default_value_t = crate::bench_index::Kind::Flat)]
    pub index_kind: crate::bench_index::Kind,
    /// The generator: a HF checkpoint directory (BART or LLaMA) with tokenizer.json, or a LLaMA
    /// GGUF file (llama.cpp's format; its tokenizer is in its metadata) or a directory holding
    /// one. Every recipe takes a LLaMA; RA-DIT's need one.
    #[arg(long, requires = "corpus")]
    pub generator: Option<PathBuf>,
    /// The generator's forward precision in training: f32, or f16/bf16 over f32 weights with
    /// the loss in f32 (where the backend has the dtype; evaluation decodes in f32).
    #[arg(long, default_value = "f32")]
    pub precision: rag::Precision,
    /// Show progress bars.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub progress: bool,
    /// Run the whole thing for this many seeds (--seed, --seed + 1, ...), each under
    /// `<name>/seed-<s>/`, and report every row's mean and spread in `<name>/seeds.json`.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Steps of a gold-passage reading warm-up of the generator before the recipe's own
    /// training, reported as stage `read` (default: the recipe's on the embedded task, 0 on
    /// your data).
    #[arg(long)]
    pub read_steps: Option<u64>,
    /// Steps of a copying warm-up of a decoder-only LM trained from scratch, before the
    /// reading warm-up (stage `copy`): closed-book questions `repeat : w1 … wn` answered
    /// `w1 … wn`, over freshly invented words (see `rag::copy_examples`). Default: 2000 for the
    /// RA-DIT recipes on the embedded task, 0 on your data.
    #[arg(long)]
    pub copy_steps: Option<u64>,
    /// Passage slots of RA-DIT's LM fine-tuning (`ra-dit-lm`, and ra-dit-lsr's `lm` stage): the
    /// gold passage and the retriever's best K − 1 others, each its own example (every
    /// training question needs a gold id); 0: the retriever's top --n-docs, RA-DIT's own.
    /// Default: 3 on the embedded task, 0 on your data.
    #[arg(long)]
    pub lm_docs: Option<usize>,
    /// Steps of ra-dit-lsr's `lm` stage, which trains the LM that LSR learns from.
    #[arg(long)]
    pub lm_steps: Option<u64>,
    /// ra-dit-lsr trains its retriever only when its teacher LM, given the gold passage,
    /// answers at least this fraction of the test questions exactly (LSR from an LM that does
    /// not read is noise).
    #[arg(long, default_value_t = defaults().min_teacher_exact_match)]
    pub min_teacher_exact_match: f64,
}

/// The library's defaults, which the flags show.
pub(crate) fn defaults() -> ExperimentConfig {
    ExperimentConfig::new(Recipe::RagToken, "runs")
}

impl TrainArgs {
    /// One of the two encoders: its own flag, else --retriever.
    fn encoder(&self, own: &Option<PathBuf>, flag: &str) -> Result<PathBuf> {
        own.clone().or_else(|| self.retriever.clone()).ok_or_else(|| {
            anyhow::anyhow!("--corpus needs the retriever: --retriever DIR (both encoders) or {flag} DIR")
        })
    }

    /// The experiment these flags describe.
    fn config(&self, spec: DeviceSpec) -> Result<ExperimentConfig> {
        let recipe: Recipe = self.recipe.parse()?;
        let name = self.name.clone().unwrap_or_else(|| recipe.name().to_string());
        let data = match &self.corpus {
            None if self.index.is_some() => {
                anyhow::bail!("--index: the embedded task builds its own index; --index is for --corpus or --preset")
            }
            None => ExperimentData::Embedded { entities: self.entities },
            Some(corpus) => ExperimentData::Files(DataFiles {
                corpus: corpus.clone(),
                train: self.train.clone().expect("clap requires --train with --corpus"),
                dev: self.dev.clone().expect("clap requires --dev"),
                test: self.test.clone(),
                question_encoder: self.encoder(&self.question_encoder, "--question-encoder")?,
                document_encoder: self.encoder(&self.document_encoder, "--document-encoder")?,
                generator: self.generator.clone().expect("clap requires --generator"),
                index: self.index.clone(),
            }),
        };
        Ok(ExperimentConfig {
            recipe,
            run_dir: self.runs_dir.join(&name),
            name,
            device: spec.to_string(),
            data,
            resume: self.resume,
            resume_despite_changes: self.allow_changed_resume,
            seed: self.seed,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accumulation: self.grad_accumulation,
            retriever_lr: self.retriever_lr,
            generator_lr: self.generator_lr,
            generator_layers: self.generator_layers,
            retriever_start: self.retriever_start,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            n_docs: self.n_docs,
            train_doc_encoder: self.train_doc_encoder,
            refresh_every: self.refresh_every,
            baselines: !self.no_baselines,
            eval_limit: self.eval_limit,
            dev_limit: self.dev_limit,
            precision: self.precision,
            progress: self.progress,
            read_steps: self.read_steps,
            copy_steps: self.copy_steps,
            lm_docs: self.lm_docs,
            lm_steps: self.lm_steps,
            min_teacher_exact_match: self.min_teacher_exact_match,
            index_storage: self.index_kind.hnsw_storage(),
            decode: self.decode.map(Into::into),
            measure_before: !self.no_before,
            test_warmups: !self.no_warmup_tests,
            prompt: self.prompt.map(|p| match p {
                Prompt::RaDit => rag::ContextFormat::ra_dit(),
                Prompt::Chatml => rag::ContextFormat::chatml(),
            }),
        })
    }
}

pub fn run(args: TrainArgs, spec: DeviceSpec) -> Result<ExitCode> {
    if args.preset.is_some() {
        return crate::squad::run(&args, spec);
    }
    if args.seeds <= 1 {
        return on_device!(spec, args: TrainArgs => train);
    }
    let recipe: Recipe = args.recipe.parse()?;
    let name = args.name.clone().unwrap_or_else(|| recipe.name().to_string());
    let mut reports = Vec::new();
    for seed in args.seed..args.seed + args.seeds {
        let mut one = args.clone();
        (one.seed, one.seeds, one.name) = (seed, 1, Some(format!("{name}/seed-{seed}")));
        on_device!(spec, one: TrainArgs => train)?;
        let path = args.runs_dir.join(&name).join(format!("seed-{seed}")).join("report.json");
        reports.push(RunReport::read(&path)?);
    }
    let summary = SeedSummary::of(&reports);
    let path = args.runs_dir.join(&name).join("seeds.json");
    rag::rag_hf::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    print_seed_summary(&name, recipe, &summary);
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn train<B: Backend>(args: TrainArgs, device: &B::Device, spec: DeviceSpec) -> Result<ExitCode> {
    crate::device::check_precision::<B>(device, spec, args.precision)?;
    let config = args.config(spec)?;
    // The embedded task's models are initialized on the CPU, so every backend starts from the
    // same weights.
    let report = experiment::run::<Autodiff<B>, Flex>(&config, device).map_err(|e| match e {
        // The library names its config's fields; here they are flags (an encoder the user gave
        // as --retriever is named so).
        rag::RagError::Input { field, message } => {
            let flag = match field {
                "question_encoder" if args.question_encoder.is_none() => "retriever",
                "document_encoder" if args.document_encoder.is_none() => "retriever",
                other => other,
            };
            anyhow::anyhow!("--{}: {message}", flag.replace('_', "-"))
        }
        other => other.into(),
    })?;
    print_summary(&report);
    println!("{}", config.run_dir.join("report.json").display());
    Ok(ExitCode::SUCCESS)
}

fn print_summary(report: &RunReport) {
    let cell = |row: &str, k: &str| report.get(row, k).map_or("-".to_string(), |v| format!("{v:.3}"));
    println!("\n{} ({}), {} questions:", report.name, report.recipe, report.evaluated_on);
    println!("{:<18} {:>10} {:>10} {:>10} {:>12}", "", "recall@1", "recall@5", "recall@20", "exact match");
    for row in ROWS.iter().filter(|row| report.rows.contains_key(**row)) {
        println!(
            "{row:<18} {:>10} {:>10} {:>10} {:>12}",
            cell(row, "recall_at_1"),
            cell(row, "recall_at_5"),
            cell(row, "recall_at_20"),
            cell(row, "exact_match")
        );
    }
    for t in &report.targets {
        println!("target {:<52} {:>7.3} {}", t.check, t.value, if t.met { "met" } else { "MISSED" });
    }
    let peak =
        report.peak_rss_bytes.map_or("unknown".to_string(), |p| format!("{:.2} GiB", p as f64 / (1u64 << 30) as f64));
    println!(
        "wall time {:.0} s, {} training examples/s (main stage), peak memory {peak}",
        report.wall_seconds,
        rate(report.examples_per_second)
    );
}

/// A rate with three significant digits (0.042 stays 0.042, not 0.0).
fn rate(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

fn print_seed_summary(name: &str, recipe: Recipe, summary: &SeedSummary) {
    let seeds: Vec<String> = summary.seeds.iter().map(u64::to_string).collect();
    println!("\n{name} ({recipe}), test questions, mean ± std over seeds {}:", seeds.join(", "));
    println!("{:<18} {:>15} {:>15} {:>15} {:>15}", "", "recall@1", "recall@5", "recall@20", "exact match");
    for row in ROWS {
        let Some(m) = summary.rows.get(row) else { continue };
        let cell = |k: &str| m.get(k).map_or("-".to_string(), |s| format!("{:.3} ± {:.3}", s.mean, s.std));
        println!(
            "{row:<18} {:>15} {:>15} {:>15} {:>15}",
            cell("recall_at_1"),
            cell("recall_at_5"),
            cell("recall_at_20"),
            cell("exact_match")
        );
    }
    let w = &summary.wall_seconds;
    println!("wall time {:.0} ± {:.0} s (max {:.0} s) per seed", w.mean, w.std, w.max);
}
