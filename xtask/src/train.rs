//! `cargo xtask train`: end-to-end training, on the embedded generated task by default or on the
//! user's data, with the baselines that show what the training did.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use clap::Args;
use rag::rag_retriever::{BiEncoder, EncodeOptions, Encoder, EncoderOptions, TextTokenizer};
use rag::rag_trainer::{Decay, Metrics, TrainSummary, Trainer, TrainerConfig};
use rag::{
    DecodeMode, EmbeddedConfig, EmbeddedSetup, EvalOptions, Generator, Knowledge, QaExample, RagConfig, RagModel,
    RagTask, Recipe, index_store, read_qa_jsonl,
};
use rag_index::{FlatIndex, IngestOptions, Metric, PassageStore, StoreBuilder};
use serde_json::{Value, json};

use crate::device::{DeviceSpec, on_device};

/// Arguments of `cargo xtask train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training recipe: rag-token, rag-sequence, ra-dit-lm or ra-dit-lsr.
    #[arg(long, default_value = "rag-token")]
    pub recipe: String,
    /// Run name: output goes to `<runs-dir>/<name>/` (default: the recipe's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where runs are written.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue every stage of the run from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Seed of the data order, dropout and the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Optimizer steps of the main training (default: the recipe's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Questions per step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation: usize,
    /// Peak learning rate of the query (and document) encoder.
    #[arg(long)]
    pub retriever_lr: Option<f64>,
    /// Peak learning rate of the generator.
    #[arg(long)]
    pub generator_lr: Option<f64>,
    /// Hold the retriever still for this many steps while the generator learns to read
    /// (default: a third of the steps for the RAG recipes, 0 for RA-DIT's LSR stage).
    #[arg(long)]
    pub retriever_start: Option<u64>,
    /// Evaluate every this many steps as well as before and after (0: before and after only).
    #[arg(long, default_value_t = 200)]
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Passages per question (default: 3 on the embedded task, 5 on your data).
    #[arg(long)]
    pub n_docs: Option<usize>,
    /// Train the document encoder too (RAG recipes), re-encoding the corpus into the index every
    /// --refresh-every steps.
    #[arg(long)]
    pub train_doc_encoder: bool,
    /// Steps between index refreshes with --train-doc-encoder.
    #[arg(long, default_value_t = 50)]
    pub refresh_every: u64,
    /// Skip the frozen-retriever ablation and the closed-book baseline.
    #[arg(long)]
    pub no_baselines: bool,
    /// Entities of the embedded task (a fifth are held out).
    #[arg(long, default_value_t = 300)]
    pub entities: usize,
    /// Evaluate on at most this many questions.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Your corpus: JSONL ({"id", "title", "text"}) or DPR TSV.
    #[arg(long, requires_all = ["train", "dev", "retriever", "generator"])]
    pub corpus: Option<PathBuf>,
    /// Training questions: JSONL of {"question", "answers": [...]}.
    #[arg(long, requires = "corpus")]
    pub train: Option<PathBuf>,
    /// Evaluation questions, same format.
    #[arg(long, requires = "corpus")]
    pub dev: Option<PathBuf>,
    /// A HF retriever checkpoint directory (BERT, DPR or sentence-transformers) with tokenizer.json;
    /// it becomes both encoders.
    #[arg(long, requires = "corpus")]
    pub retriever: Option<PathBuf>,
    /// A HF generator checkpoint directory (BART or LLaMA) with tokenizer.json.
    #[arg(long, requires = "corpus")]
    pub generator: Option<PathBuf>,
    /// The generator's forward precision in training: f32, or f16/bf16 over f32 weights with
    /// the loss in f32 (where the backend has the dtype; evaluation decodes in f32).
    #[arg(long, default_value = "f32")]
    pub precision: rag::Precision,
    /// Show progress bars.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub progress: bool,
}

/// The learning rates and step counts each recipe uses on the embedded default.
fn defaults(recipe: Recipe) -> (u64, f64, f64) {
    match recipe {
        Recipe::RagToken | Recipe::RagSequence => (600, 1e-4, 2e-3),
        Recipe::RaDitLm => (400, 0.0, 2e-3),
        Recipe::RaDitLsr => (120, 1e-4, 0.0),
    }
}

/// One training stage's outcome.
struct Stage<B: Backend> {
    name: &'static str,
    summary: TrainSummary,
    model: RagModel<B>,
}

pub fn run(args: TrainArgs, spec: DeviceSpec) -> Result<ExitCode> {
    on_device!(spec, args: TrainArgs => train)
}

fn train<B: Backend>(args: TrainArgs, device: &B::Device, spec: DeviceSpec) -> Result<ExitCode> {
    let started = Instant::now();
    crate::device::check_precision::<B>(device, spec, args.precision)?;
    let recipe: Recipe = args.recipe.parse()?;
    let name = args.name.clone().unwrap_or_else(|| recipe.name().to_string());
    let run_dir = args.runs_dir.join(&name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut args = args;
    args.n_docs = Some(args.n_docs.unwrap_or(if args.corpus.is_some() { 5 } else { EmbeddedConfig::default().n_docs }));
    let n_docs = args.n_docs.expect("set just above");
    let world = if args.corpus.is_some() {
        user_world::<B>(&args, recipe, &run_dir, device)?
    } else {
        embedded_world::<B>(&args, recipe, &run_dir, device)?
    };
    eprintln!(
        "{name}: recipe {recipe} on {spec}, {} passages, {} training questions, {} evaluation questions{}",
        world.passages,
        world.train.len(),
        world.eval.len(),
        if args.corpus.is_none() { " (embedded generated task, held-out entities)" } else { "" }
    );
    let steps = args.steps.unwrap_or(defaults(recipe).0);
    // Each stage's learning rates are its own recipe's (RA-DIT's `lm` stage trains the LM that
    // the LSR stage then freezes), unless given.
    let lrs = |r: Recipe| (args.retriever_lr.unwrap_or(defaults(r).1), args.generator_lr.unwrap_or(defaults(r).2));
    let (rlr, glr) = lrs(recipe);
    let eval_options = EvalOptions {
        batch_size: 32,
        ks: vec![1, 5],
        mode: DecodeMode::Token,
        generation: rag::rag_generator::GenerationConfig { max_new_tokens: Some(12), ..world.generation.clone() },
        closed_book: false,
    };
    let trainer_config = |label: &str, steps: u64, groups| TrainerConfig {
        steps,
        batch_size: args.batch_size,
        grad_accumulation: args.grad_accumulation,
        warmup_steps: (steps / 10).min(100),
        decay: Decay::Linear,
        groups,
        max_grad_norm: Some(1.0),
        seed: args.seed,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: 2,
        log_every: 10,
        refresh_every: if args.train_doc_encoder { args.refresh_every } else { 0 },
        progress: args.progress,
        label: label.to_string(),
        ..TrainerConfig::default()
    };
    let train_docs = args.train_doc_encoder && recipe.trains_retriever();
    let stage = |label: &'static str,
                 stage_recipe: Recipe,
                 model: RagModel<Autodiff<B>>,
                 steps: u64,
                 freeze_retriever: bool,
                 closed_book: bool|
     -> Result<Stage<B>> {
        let knowledge = (world.knowledge_for)(&model.valid())?;
        let mut task = RagTask {
            knowledge,
            eval: world.eval.clone(),
            eval_options: eval_options.clone(),
            closed_book,
            refresh: EncodeOptions { batch_size: 64, with_titles: true, progress: false },
        };
        let start = match stage_recipe {
            Recipe::RaDitLsr => args.retriever_start.unwrap_or(0),
            _ => args.retriever_start.unwrap_or(steps / 3),
        };
        let (rlr, glr) = lrs(stage_recipe);
        let groups = stage_recipe.param_groups(
            rlr,
            glr,
            0.01,
            train_docs && !closed_book,
            freeze_retriever || closed_book,
            start,
        );
        let trainer = Trainer::new(trainer_config(label, steps, groups), run_dir.join(label));
        let trained = trainer
            .fit(model, &mut task, &world.train, args.resume)
            .with_context(|| format!("stage `{label}` of {}", run_dir.display()))?;
        Ok(Stage { name: label, summary: trained.summary, model: trained.model.valid() })
    };
    let fresh = |r: Recipe, n_docs: usize| -> Result<RagModel<Autodiff<B>>> {
        let mut model: RagModel<Autodiff<B>> = (world.build_ad)(r, n_docs)?;
        if train_docs && n_docs > 1 {
            model = model.with_document_training(true);
        }
        if args.precision != rag::Precision::F32 {
            let config = RagConfig { generator_precision: args.precision, ..model.config().clone() };
            model = model.with_config(config)?;
        }
        Ok(model)
    };

    let mut stages = Vec::new();
    match recipe {
        Recipe::RaDitLsr => {
            // RA-DIT's second stage needs an LM that reads passages: the first stage fine-tunes
            // one (as ra-dit-lm), the second trains the query encoder against it, frozen.
            let lm = stage(
                "lm",
                Recipe::RaDitLm,
                fresh(Recipe::RaDitLm, n_docs)?,
                defaults(Recipe::RaDitLm).0,
                false,
                false,
            )?;
            let lm_model = with_loss(lm.model.clone(), Recipe::RaDitLsr)?;
            let main = stage(
                "main",
                Recipe::RaDitLsr,
                RagModel::<Autodiff<B>>::from_inner(lm_model).into_trainable(),
                steps,
                false,
                false,
            )?;
            stages.push(Stage { name: "frozen_retriever", ..lm });
            stages.push(main);
        }
        _ => {
            // The ablation trains beside the main stage, on the other core: each stage's step is
            // mostly one thread of small ops, and the models use no dropout, so no stage draws
            // from the backend's shared RNG and running them together changes no result.
            let ablate = !args.no_baselines && recipe.trains_retriever();
            let (main_model, frozen_model) =
                (fresh(recipe, n_docs)?, if ablate { Some(fresh(recipe, n_docs)?) } else { None });
            let (main, frozen) = std::thread::scope(|scope| {
                let frozen = frozen_model
                    .map(|model| scope.spawn(|| stage("frozen_retriever", recipe, model, steps, true, false)));
                let main = stage("main", recipe, main_model, steps, false, false);
                (main, frozen.map(|handle| handle.join().expect("the ablation stage panicked")))
            });
            stages.push(main?);
            if let Some(frozen) = frozen {
                stages.push(frozen?);
            }
        }
    }
    if !args.no_baselines {
        let closed_recipe = if recipe.decoder_only() { Recipe::RaDitLm } else { Recipe::RagToken };
        let steps = if recipe == Recipe::RaDitLsr { defaults(Recipe::RaDitLm).0 } else { steps };
        stages.push(stage("closed_book", closed_recipe, fresh(closed_recipe, 1)?, steps, false, true)?);
    }

    let main = stages.iter().find(|s| s.name == "main").expect("always run");
    let before = match recipe {
        Recipe::RaDitLsr => stages.iter().find(|s| s.name == "frozen_retriever").map(|s| first_eval(&s.summary)),
        _ => Some(first_eval(&main.summary)),
    }
    .unwrap_or_default();
    let after = last_eval(&main.summary);
    let frozen = stages.iter().find(|s| s.name == "frozen_retriever").map(|s| last_eval(&s.summary));
    let closed = stages.iter().find(|s| s.name == "closed_book").map(|s| last_eval(&s.summary));
    // The trained model, with the index its document encoder built, for `cargo xtask eval/ask`.
    let index_path = run_dir.join("corpus.index");
    let knowledge = (world.knowledge_for)(&main.model)?;
    rag_index::VectorIndex::save(knowledge.index.as_ref(), &index_path)?;
    let knowledge_paths = rag::KnowledgePaths { store: world.store_path.clone(), index: index_path };
    main.model
        .save(&run_dir.join("model"), Some(&knowledge_paths))
        .with_context(|| format!("saving the trained model under {}", run_dir.display()))?;

    let wall = started.elapsed().as_secs_f64();
    let peak = peak_rss_bytes();
    let pick = |m: &Metrics, keys: &[&str]| -> Value {
        Value::Object(keys.iter().filter_map(|k| m.get(*k).map(|v| (k.to_string(), json!(v)))).collect())
    };
    let full = ["recall_at_1", "recall_at_5", "exact_match", "f1"];
    let report = json!({
        "recipe": recipe.name(),
        "name": name,
        "device": spec.to_string(),
        "backend": B::name(device),
        "data": if args.corpus.is_some() { "user" } else { "embedded" },
        "wall_seconds": wall,
        "examples_per_second": main.summary.examples_per_second,
        "peak_rss_bytes": peak,
        "before": pick(&before, &full),
        "after": pick(&after, &full),
        "frozen_retriever": frozen.as_ref().map(|m| pick(m, &full)),
        "closed_book": closed.as_ref().map(|m| pick(m, &["exact_match", "f1"])),
        "targets": {"recall_at_1": 0.85, "recall_at_5": 0.95, "exact_match": 0.80},
        "stages": stages.iter().map(|s| (s.name.to_string(), json!({
            "steps": s.summary.steps,
            "examples": s.summary.examples,
            "train_seconds": s.summary.train_seconds,
            "examples_per_second": s.summary.examples_per_second,
            "final_loss": s.summary.final_loss,
            "resumed_from": s.summary.resumed_from,
            "evals": s.summary.evals.iter().map(|(step, m)| json!({"step": step, "metrics": m})).collect::<Vec<_>>(),
            "plots": s.summary.plots,
        }))).collect::<serde_json::Map<_, _>>(),
        "settings": {
            "steps": steps, "batch_size": args.batch_size, "grad_accumulation": args.grad_accumulation,
            "retriever_lr": rlr, "generator_lr": glr, "n_docs": n_docs, "seed": args.seed,
            "train_doc_encoder": train_docs, "passages": world.passages,
            "precision": format!("{:?}", args.precision).to_lowercase(),
            "train_questions": world.train.len(), "eval_questions": world.eval.len(),
        },
        "model": run_dir.join("model"),
    });
    let report_path = run_dir.join("report.json");
    rag::rag_hf::write_atomic(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    print_summary(
        &name,
        recipe,
        &before,
        &after,
        frozen.as_ref(),
        closed.as_ref(),
        wall,
        main.summary.examples_per_second,
        peak,
    );
    println!("{}", report_path.display());
    Ok(ExitCode::SUCCESS)
}

fn first_eval(s: &TrainSummary) -> Metrics {
    s.evals.first().map(|(_, m)| m.clone()).unwrap_or_default()
}

fn last_eval(s: &TrainSummary) -> Metrics {
    s.evals.last().map(|(_, m)| m.clone()).unwrap_or_default()
}

/// The same weights with another loss (RA-DIT's second stage).
fn with_loss<B: Backend>(model: RagModel<B>, recipe: Recipe) -> Result<RagModel<B>> {
    let config = RagConfig { loss: recipe.loss(), ..model.config().clone() };
    Ok(model.with_config(config)?)
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    name: &str,
    recipe: Recipe,
    before: &Metrics,
    after: &Metrics,
    frozen: Option<&Metrics>,
    closed: Option<&Metrics>,
    wall: f64,
    rate: f64,
    peak: Option<u64>,
) {
    let cell = |m: Option<&Metrics>, k: &str| m.and_then(|m| m.get(k)).map_or("-".to_string(), |v| format!("{v:.3}"));
    println!("\n{name} ({recipe}), held-out questions:");
    println!("{:<20} {:>10} {:>10} {:>12}", "", "recall@1", "recall@5", "exact match");
    for (label, m) in [
        ("before training", Some(before)),
        ("after training", Some(after)),
        ("frozen retriever", frozen),
        ("closed book", closed),
    ] {
        if m.is_some() {
            println!(
                "{label:<20} {:>10} {:>10} {:>12}",
                cell(m, "recall_at_1"),
                cell(m, "recall_at_5"),
                cell(m, "exact_match")
            );
        }
    }
    let peak = peak.map_or("unknown".to_string(), |p| format!("{:.2} GiB", p as f64 / (1u64 << 30) as f64));
    println!("wall time {wall:.0} s, {rate:.1} training examples/s (main stage), peak memory {peak}");
}

/// Peak resident memory of this process (Linux `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Builds a fresh model for a recipe with `n_docs` passages.
type Builder<B> = Box<dyn Fn(Recipe, usize) -> Result<RagModel<B>> + Send + Sync>;
/// Encodes the corpus with a model's document encoder.
type KnowledgeFor<B> = Box<dyn Fn(&RagModel<B>) -> Result<Knowledge> + Send + Sync>;

/// What a run trains on: data, a way to build fresh models, and the knowledge for a model (each
/// stage encodes the corpus with its own model; nothing is encoded before that).
struct World<B: Backend> {
    train: Vec<QaExample>,
    eval: Vec<QaExample>,
    store_path: PathBuf,
    /// Passages in the store.
    passages: usize,
    /// Search options from the generator's config.
    generation: rag::rag_generator::GenerationConfig,
    build_ad: Builder<Autodiff<B>>,
    knowledge_for: KnowledgeFor<B>,
}

fn embedded_world<B: Backend>(
    args: &TrainArgs,
    recipe: Recipe,
    run_dir: &Path,
    device: &B::Device,
) -> Result<World<B>> {
    let mut config = EmbeddedConfig::default();
    config.task.entities = args.entities;
    config.task.held_out = (args.entities / 5).max(1);
    let setup = std::sync::Arc::new(EmbeddedSetup::create(config, &run_dir.join("data"))?);
    rag::write_qa_jsonl(&run_dir.join("data").join("train.jsonl"), &setup.task.train)?;
    rag::write_qa_jsonl(&run_dir.join("data").join("eval.jsonl"), &setup.task.eval)?;
    let seed = args.seed;
    let device = device.clone();
    let (s2, s3) = (setup.clone(), setup.clone());
    let mut eval = setup.task.eval.clone();
    if let Some(limit) = args.eval_limit {
        eval.truncate(limit);
    }
    let probe: RagModel<Flex> = setup.model(recipe, args.n_docs.unwrap_or(3), seed, &Default::default())?;
    Ok(World {
        train: setup.task.train.clone(),
        eval,
        store_path: setup.store.clone(),
        passages: setup.task.passages.len(),
        generation: probe.generator().generation_config(),
        // Initialized on the CPU and copied: every backend starts from the same weights.
        build_ad: Box::new(move |r, k| {
            let cpu: RagModel<Flex> = s2.model(r, k, seed, &Default::default())?;
            Ok(rag::rag_hf::copy_module(&cpu, s2.model::<Autodiff<B>>(r, k, seed, &device)?)?)
        }),
        knowledge_for: Box::new(move |m| Ok(s3.knowledge(m)?)),
    })
}

fn user_world<B: Backend>(args: &TrainArgs, recipe: Recipe, run_dir: &Path, device: &B::Device) -> Result<World<B>> {
    let corpus = args.corpus.as_ref().expect("checked by clap");
    let (train, dev, retriever, generator) = (
        args.train.as_ref().expect("clap"),
        args.dev.as_ref().expect("clap"),
        args.retriever.as_ref().expect("clap"),
        args.generator.as_ref().expect("clap"),
    );
    for (what, path) in [("--corpus", corpus), ("--train", train), ("--dev", dev)] {
        if !path.is_file() {
            bail!("{what} {}: no such file", path.display());
        }
    }
    // The data first: a bad line fails in a second, before any model is read.
    let train = read_qa_jsonl(train)?;
    let mut eval = read_qa_jsonl(dev)?;
    for (what, path) in [("--retriever", retriever), ("--generator", generator)] {
        if !path.join("config.json").is_file() || !path.join("tokenizer.json").is_file() {
            bail!("{what} {}: not a HF model directory with config.json and tokenizer.json", path.display());
        }
    }
    if let Some(limit) = args.eval_limit {
        eval.truncate(limit);
    }
    let store_path = run_dir.join("corpus.store");
    let mut builder = StoreBuilder::create(&store_path)?;
    builder.ingest(corpus, &IngestOptions::default()).with_context(|| format!("ingesting {}", corpus.display()))?;
    let passages = builder.finish()?.len();
    let tokenizer = TextTokenizer::from_file(retriever.join("tokenizer.json"), Some(256))?;
    let gen_tokenizer = rag::rag_generator::GeneratorTokenizer::from_file(generator.join("tokenizer.json"))?;
    let (retriever, generator) = (retriever.clone(), generator.clone());
    let store_for = store_path.clone();
    fn build<B: Backend>(
        device: &B::Device,
        retriever: &Path,
        generator: &Path,
        tokenizer: &TextTokenizer,
        gen_tokenizer: &rag::rag_generator::GeneratorTokenizer,
        recipe: Recipe,
        n_docs: usize,
    ) -> Result<RagModel<B>> {
        let encoder = Encoder::<B>::from_pretrained(retriever, &EncoderOptions::default(), device, DType::F32)?;
        let bi = BiEncoder::separate(encoder.clone(), encoder)?;
        let generator = Generator::<B>::from_pretrained(generator, 0.1, device, DType::F32)?;
        let context = if matches!(generator, Generator::Llama(_)) {
            rag::ContextFormat::ra_dit()
        } else {
            rag::ContextFormat::hf()
        };
        if recipe.decoder_only() != matches!(generator, Generator::Llama(_)) {
            bail!(
                "recipe {recipe} needs a {} generator",
                if recipe.decoder_only() { "decoder-only (LLaMA)" } else { "BART" }
            );
        }
        let config = RagConfig { n_docs, loss: recipe.loss(), context, ..RagConfig::default() };
        Ok(RagModel::new(bi, generator, tokenizer.clone(), gen_tokenizer.clone(), config)?)
    }
    let device = device.clone();
    let (r1, g1, t1, gt1) = (retriever.clone(), generator.clone(), tokenizer.clone(), gen_tokenizer.clone());
    let probe: RagModel<Flex> = build(
        &Default::default(),
        &retriever,
        &generator,
        &tokenizer,
        &gen_tokenizer,
        recipe,
        args.n_docs.unwrap_or(5),
    )?;
    let knowledge_for = move |m: &RagModel<B>| -> Result<Knowledge> {
        let store = PassageStore::open(&store_for)?;
        let mut index = FlatIndex::new(m.retriever().dim(), Metric::InnerProduct)?;
        let options = EncodeOptions { batch_size: 32, with_titles: true, progress: true };
        index_store(m.retriever().document_encoder(), m.passage_tokenizer(), &store, &mut index, &options)?;
        Ok(Knowledge { store, index: Box::new(index) })
    };
    Ok(World {
        train,
        eval,
        store_path,
        passages,
        generation: probe.generator().generation_config(),
        build_ad: Box::new(move |r, k| build(&device, &r1, &g1, &t1, &gt1, r, k)),
        knowledge_for: Box::new(knowledge_for),
    })
}
