//! `cargo xtask bench-vs-torch`: the same work in the project and in what its users would pick
//! instead (PyTorch with HF transformers, sentence-transformers, FAISS), in one run, with the
//! ratio.
//!
//! Each case runs twice, each side in a process of its own so that its peak memory is its own:
//! first this binary (`--project-side DIR`), which does the work, times it and writes the inputs
//! it used (weights, token rows, vectors) into `DIR`; then `benches/torch/compare.py CASE DIR`,
//! which does the same work on those inputs. The sides' results (losses, scores, embeddings,
//! recall) are compared before a ratio is printed, so a ratio is never of two different
//! computations. Both sides get the same number of threads (`--threads`, default: every core).
//!
//! The Python side lives in a venv that `benches/torch/setup.sh` makes from PyPI
//! (`benches/torch/requirements.txt`); where pip cannot reach PyPI, the project's side still runs
//! and the reference is reported as skipped, with the reason.

mod encode;
mod index;
mod lm;
mod loss;
mod rag_step;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::device::{DeviceSpec, OnBackend, dispatch};
use crate::repo;

/// What can be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Case {
    /// The embedded default's RAG-Token step (B 16, K 3): `cargo xtask train`'s step.
    EmbeddedStep,
    /// A RAG-Token step at a reference size: BERT 4L/256, BART 3+3L/256, vocabulary 8,000,
    /// B 8, K 5, contexts of 128 tokens, targets of 24.
    ReferenceStep,
    /// SmolLM2-135M's RA-DIT LM fine-tuning step (2 questions × 3 SQuAD passages, whole LM).
    Smollm2Step,
    /// SmolLM2-135M scoring the answers of the same rows without gradients (LSR's forward pass).
    Smollm2Score,
    /// all-MiniLM-L6-v2 encoding SQuAD paragraphs (against sentence-transformers).
    MinilmEncode,
    /// Exact inner-product search (against FAISS `IndexFlatIP`).
    Flat,
    /// HNSW at the smallest `ef` reaching recall@10 ≥ 0.95 (against FAISS `IndexHNSWFlat`).
    Hnsw,
    /// RAG-Token's loss forward and backward over B 8, K 5, T 32, V 50,265 logits (against the
    /// memory-bound pass and PyTorch).
    Loss,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::EmbeddedStep,
        Case::ReferenceStep,
        Case::Smollm2Step,
        Case::Smollm2Score,
        Case::MinilmEncode,
        Case::Flat,
        Case::Hnsw,
        Case::Loss,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::EmbeddedStep => "embedded-step",
            Case::ReferenceStep => "reference-step",
            Case::Smollm2Step => "smollm2-step",
            Case::Smollm2Score => "smollm2-score",
            Case::MinilmEncode => "minilm-encode",
            Case::Flat => "flat",
            Case::Hnsw => "hnsw",
            Case::Loss => "loss",
        }
    }

    /// `compare.py`'s subcommand for the case.
    fn python_case(self) -> &'static str {
        match self {
            Case::EmbeddedStep | Case::ReferenceStep => "rag-step",
            Case::Smollm2Step => "lm-step",
            Case::Smollm2Score => "lm-score",
            Case::MinilmEncode => "encode",
            Case::Flat => "flat",
            Case::Hnsw => "hnsw",
            Case::Loss => "loss",
        }
    }
}

/// Arguments of `cargo xtask bench-vs-torch`.
#[derive(Args, Debug)]
pub struct VsTorchArgs {
    /// Cases to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    cases: Vec<Case>,
    /// Threads for both sides (rayon here; torch.set_num_threads and FAISS's OpenMP there).
    /// Default: every core.
    #[arg(long)]
    threads: Option<usize>,
    /// The Python with torch, transformers, sentence-transformers and faiss (default: the venv
    /// `benches/torch/setup.sh` makes, made now if missing).
    #[arg(long, env = "RAG_TORCH_PYTHON")]
    python: Option<PathBuf>,
    /// Also write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the exchanged inputs under this directory (default: a temporary one).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Fewer steps and smaller sizes: a check that every case runs, not a measurement.
    #[arg(long)]
    quick: bool,
    /// all-MiniLM-L6-v2's directory (default: scripts/fetch-minilm.sh's).
    #[arg(long, env = "RAG_MINILM_DIR")]
    minilm: Option<PathBuf>,
    /// SmolLM2-135M-Instruct's GGUF file or its directory (default: scripts/fetch-smollm2.sh's).
    #[arg(long, env = "RAG_SMOLLM2_DIR")]
    smollm2: Option<PathBuf>,
    /// (Internal) run the project's side of the one case in --cases, writing into this directory.
    #[arg(long, hide = true)]
    project_side: Option<PathBuf>,
}

/// What a side measured, as both sides write it: `seconds` per timed unit (a step, a search
/// over every query, an encoding of every passage), and the case's results.
type Side = Value;

pub fn run(args: VsTorchArgs, device: DeviceSpec) -> Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if let Some(dir) = &args.project_side {
        let [case] = args.cases[..] else { bail!("--project-side runs exactly one case") };
        let options =
            Options { threads, quick: args.quick, minilm: args.minilm.clone(), smollm2: args.smollm2.clone() };
        let mut side = project_side(case, dir, &options, device)?;
        side["peak_rss_bytes"] = json!(peak_rss_bytes());
        side["threads"] = json!(rayon::current_num_threads());
        rag::rag_hf::write_atomic(&dir.join("project.json"), serde_json::to_string(&side)?.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let cases = if args.cases.is_empty() { Case::ALL.to_vec() } else { args.cases.clone() };
    let root = repo::root();
    let python = match &args.python {
        Some(p) => Ok(p.clone()),
        None => setup_python(&root),
    };
    let (minilm, smollm2) = fetch_models(&cases, &args);
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let base = args.keep.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    let machine = machine();
    eprintln!(
        "machine: {}; {threads} threads on each side; the project's models on --device {device}",
        machine["cpu"].as_str().unwrap_or("?")
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for case in cases {
        let dir = base.join(case.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        eprintln!("\n== {}: the project", case.name());
        let sides =
            ProjectSide { threads, quick: args.quick, device, minilm: minilm.as_deref(), smollm2: smollm2.as_deref() };
        let project = match sides.run(case, &dir) {
            Ok(side) => side,
            Err(error) => {
                eprintln!("{}: the project's side failed: {error:#}", case.name());
                failed = true;
                rows.push(json!({"case": case.name(), "error": format!("{error:#}")}));
                continue;
            }
        };
        let reference = match &python {
            Ok(python) => {
                eprintln!("== {}: the reference", case.name());
                run_python(python, &root, case, &dir, threads)
            }
            Err(reason) => Err(anyhow::anyhow!("{reason:#}")),
        };
        let row = compare(case, &project, reference.as_ref().ok());
        if row.get("agree") == Some(&Value::Bool(false)) {
            failed = true;
        }
        let mut row = row;
        if let Err(reason) = &reference {
            row["reference_skipped"] = json!(format!("{reason:#}"));
        }
        print_row(case, &row);
        rows.push(row);
    }
    let report = json!({"machine": machine, "threads": threads, "device": device.to_string(), "quick": args.quick, "cases": rows});
    println!("\n{}", summary(&report));
    if let Some(path) = &args.json {
        rag::rag_hf::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What the project's side of a case needs besides its directory.
pub struct Options {
    pub threads: usize,
    pub quick: bool,
    pub minilm: Option<PathBuf>,
    pub smollm2: Option<PathBuf>,
}

/// Runs the project's side of `case` in this process. The search cases run on the host; the
/// others run the project's models on `device`'s backend.
fn project_side(case: Case, dir: &Path, options: &Options, device: DeviceSpec) -> Result<Side> {
    struct Models<'a> {
        case: Case,
        dir: &'a Path,
        options: &'a Options,
    }
    impl OnBackend for Models<'_> {
        type Output = Side;
        fn run<B: Backend>(self, device: B::Device, _spec: DeviceSpec) -> Result<Side> {
            let Models { case, dir, options } = self;
            match case {
                Case::EmbeddedStep => rag_step::embedded::<B>(dir, options, &device),
                Case::ReferenceStep => rag_step::reference::<B>(dir, options, &device),
                Case::Smollm2Step => lm::step::<B>(dir, options, &device),
                Case::Smollm2Score => lm::score::<B>(dir, options, &device),
                Case::MinilmEncode => encode::run::<B>(dir, options, &device),
                Case::Loss => loss::run::<B>(dir, options, &device),
                Case::Flat | Case::Hnsw => unreachable!("the search cases run on the host"),
            }
        }
    }
    match case {
        Case::Flat => index::flat(dir, options),
        Case::Hnsw => index::hnsw(dir, options),
        _ => dispatch(device, Models { case, dir, options }),
    }
}

/// How the child processes that run the project's side are started.
struct ProjectSide<'a> {
    threads: usize,
    quick: bool,
    device: DeviceSpec,
    minilm: Option<&'a Path>,
    smollm2: Option<&'a Path>,
}

impl ProjectSide<'_> {
    fn run(&self, case: Case, dir: &Path) -> Result<Side> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut command = Command::new(exe);
        command
            .args(["--device", &self.device.to_string()])
            .args(["bench-vs-torch", "--cases", case.name(), "--threads", &self.threads.to_string(), "--project-side"])
            .arg(dir)
            .env("RAYON_NUM_THREADS", self.threads.to_string())
            .env_remove("RAG_TORCH_PYTHON");
        if self.quick {
            command.arg("--quick");
        }
        if let Some(dir) = self.minilm {
            command.arg("--minilm").arg(dir);
        }
        if let Some(file) = self.smollm2 {
            command.arg("--smollm2").arg(file);
        }
        let status = command.stdout(Stdio::inherit()).stderr(Stdio::inherit()).status()?;
        if !status.success() {
            bail!("the project's side exited with {status}");
        }
        let path = dir.join("project.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The `library` a side reports: Burn's backend by name.
pub fn library<B: Backend>(device: &B::Device) -> String {
    format!("rag-rs: Burn 0.21 {} (f32)", B::name(device))
}

fn run_python(python: &Path, root: &Path, case: Case, dir: &Path, threads: usize) -> Result<Side> {
    let script = root.join("benches/torch/compare.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(case.python_case())
        .arg(dir)
        // The reference may not reach the network either; thread pools sized like ours.
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("{} {} exited with {}", script.display(), case.python_case(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("parsing compare.py's output: {last}"))
}

/// The venv's python, made by `benches/torch/setup.sh` if needed.
fn setup_python(root: &Path) -> Result<PathBuf> {
    eprintln!("setting up the reference side (benches/torch/setup.sh: torch, transformers, faiss from PyPI)");
    let output = Command::new("bash")
        .arg(root.join("benches/torch/setup.sh"))
        .stderr(Stdio::piped())
        .output()
        .context("running benches/torch/setup.sh")?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        bail!(
            "benches/torch/setup.sh failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let python = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(python)
}

/// MiniLM's directory and SmolLM2's GGUF file for the cases that need them. A fetch that fails
/// is reported and leaves `None`: the cases that need the model then fail alone, naming the
/// flag that gives it, and the others run.
fn fetch_models(cases: &[Case], args: &VsTorchArgs) -> (Option<PathBuf>, Option<PathBuf>) {
    let fetched = |given: &Option<PathBuf>, needed: bool, script: &str| match (given, needed) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => None,
        (None, true) => repo::fetch(script).map_err(|e| eprintln!("bench-vs-torch: {e:#}")).ok(),
    };
    let minilm = fetched(&args.minilm, cases.contains(&Case::MinilmEncode), "fetch-minilm.sh");
    let needs_lm = cases.iter().any(|c| matches!(c, Case::Smollm2Step | Case::Smollm2Score));
    (minilm, fetched(&args.smollm2, needs_lm, "fetch-smollm2.sh"))
}

/// The median of `seconds`.
pub fn median(seconds: &[f64]) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

fn seconds_of(side: &Side) -> Vec<f64> {
    side["seconds"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// One case's row: both sides' figures, the ratio (reference time / project time: above 1 the
/// project is faster) and whether they computed the same thing.
fn compare(case: Case, project: &Side, reference: Option<&Side>) -> Value {
    let p = median(&seconds_of(project));
    let mut row = json!({
        "case": case.name(),
        "unit": project["unit"],
        "project": {"median_seconds": p, "seconds": project["seconds"], "peak_rss_bytes": project["peak_rss_bytes"],
                    "library": project["library"]},
    });
    if let Some(bound) = project.get("bound_seconds") {
        row["bound_seconds"] = bound.clone();
        row["project_over_bound"] = json!(p / bound.as_f64().unwrap_or(f64::NAN));
    }
    let Some(reference) = reference else { return row };
    let r = median(&seconds_of(reference));
    row["reference"] = json!({"median_seconds": r, "seconds": reference["seconds"],
                              "peak_rss_bytes": reference["peak_rss_bytes"], "library": reference["library"]});
    row["speed_ratio"] = json!(r / p);
    let (agree, detail) = match case {
        Case::EmbeddedStep | Case::ReferenceStep | Case::Smollm2Step => losses_agree(project, reference),
        Case::Smollm2Score => values_agree(project, reference, "scores", 1e-3),
        Case::MinilmEncode => {
            let d = reference["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
            (d <= 1e-4, format!("embeddings within {d:.1e} (bound 1e-4)"))
        }
        Case::Flat => {
            let a = reference["id_agreement"].as_f64().unwrap_or(f64::NAN);
            (a >= 0.999, format!("top-10 ids {:.2}% the same", 100.0 * a))
        }
        Case::Hnsw => index::hnsw_row(project, reference, &mut row),
        Case::Loss => values_agree(project, reference, "loss", 1e-4),
    };
    row["agree"] = json!(agree);
    row["agreement"] = json!(detail);
    row
}

/// Per-step losses: the first step computes the same function of the same weights (tight);
/// later steps follow diverging f32 rounding through the updates.
fn losses_agree(project: &Side, reference: &Side) -> (bool, String) {
    let a: Vec<f64> =
        project["losses"].as_array().map(|v| v.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let b: Vec<f64> =
        reference["losses"].as_array().map(|v| v.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    if a.is_empty() || a.len() != b.len() {
        return (false, format!("{} losses here, {} there", a.len(), b.len()));
    }
    let rel = |x: f64, y: f64| (x - y).abs() / x.abs().max(1e-12);
    let first = rel(a[0], b[0]);
    let worst = a.iter().zip(&b).map(|(x, y)| rel(*x, *y)).fold(0.0, f64::max);
    let mut detail = format!("first loss {:.6} vs {:.6} (rel {first:.1e}), worst step rel {worst:.1e}", a[0], b[0]);
    if let Some(m) = reference["retrieval_id_mismatches"].as_u64() {
        detail.push_str(&format!(", {m} retrieved ids differ"));
    }
    (first <= 1e-4 && worst <= 1e-2, detail)
}

fn values_agree(project: &Side, reference: &Side, field: &str, tolerance: f64) -> (bool, String) {
    let as_vec = |v: &Value| -> Vec<f64> {
        match v {
            Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
            Value::Number(n) => n.as_f64().into_iter().collect(),
            _ => Vec::new(),
        }
    };
    let (a, b) = (as_vec(&project[field]), as_vec(&reference[field]));
    if a.is_empty() || a.len() != b.len() {
        return (false, format!("{} {field} here, {} there", a.len(), b.len()));
    }
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1.0)).fold(0.0, f64::max);
    (worst <= tolerance, format!("{field} within {worst:.1e} relative (bound {tolerance:.0e})"))
}

fn human_seconds(s: f64) -> String {
    if s >= 1.0 { format!("{s:.2} s") } else { format!("{:.1} ms", s * 1e3) }
}

fn gib(bytes: &Value) -> String {
    bytes.as_f64().map_or("?".into(), |b| format!("{:.2} GiB", b / (1u64 << 30) as f64))
}

fn print_row(case: Case, row: &Value) {
    let unit = row["unit"].as_str().unwrap_or("run");
    let p = row["project"]["median_seconds"].as_f64().unwrap_or(f64::NAN);
    let mut line = format!("{}: project {} per {unit}", case.name(), human_seconds(p));
    if let Some(r) = row["reference"]["median_seconds"].as_f64() {
        line.push_str(&format!(
            ", reference {} per {unit}; speed ratio {:.2}× (reference time / project time); peak memory {} vs {}",
            human_seconds(r),
            row["speed_ratio"].as_f64().unwrap_or(f64::NAN),
            gib(&row["project"]["peak_rss_bytes"]),
            gib(&row["reference"]["peak_rss_bytes"]),
        ));
    }
    if let Some(b) = row["project_over_bound"].as_f64() {
        line.push_str(&format!("; {b:.1}× the memory-bound time"));
    }
    if let Some(a) = row["agreement"].as_str() {
        line.push_str(&format!("; {a}"));
    }
    if let Some(reason) = row["reference_skipped"].as_str() {
        line.push_str(&format!("; reference skipped: {reason}"));
    }
    eprintln!("{line}");
}

fn summary(report: &Value) -> String {
    let mut out = String::from(
        "case | project | reference | speed ratio (ref time / project time) | peak memory (project / reference) | same result\n",
    );
    out.push_str("---|---|---|---|---|---\n");
    for row in report["cases"].as_array().into_iter().flatten() {
        let unit = row["unit"].as_str().unwrap_or("run");
        let p = row["project"]["median_seconds"].as_f64();
        let r = row["reference"]["median_seconds"].as_f64();
        out.push_str(&format!(
            "{} | {} | {} | {} | {} / {} | {}\n",
            row["case"].as_str().unwrap_or("?"),
            p.map_or("failed".into(), |p| format!("{}/{unit}", human_seconds(p))),
            r.map_or("skipped".into(), |r| format!("{}/{unit}", human_seconds(r))),
            row["speed_ratio"].as_f64().map_or("–".into(), |x| format!("{x:.2}×")),
            gib(&row["project"]["peak_rss_bytes"]),
            gib(&row["reference"]["peak_rss_bytes"]),
            row["agreement"].as_str().unwrap_or("–"),
        ));
    }
    out
}

/// The CPU model, its SIMD flags that matter to the kernels, and the core count.
fn machine() -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let wanted =
        ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"];
    let present: Vec<&str> = wanted.iter().copied().filter(|f| flags.split_whitespace().any(|x| x == *f)).collect();
    json!({
        "cpu": field("model name").unwrap_or_else(|| "unknown".into()),
        "flags": present,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// This process's peak resident memory (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The trainer a compared step runs under: `groups`' rates held constant (no warm-up, no decay),
/// global-norm clipping at 1.0, AdamW with PyTorch's constants, as `compare.py` sets PyTorch up.
/// Its run directory is a temporary one it never writes to, kept alive by the returned guard.
pub fn step_trainer(
    groups: Vec<rag::rag_trainer::ParamGroup>,
) -> Result<(rag::rag_trainer::Trainer, tempfile::TempDir)> {
    use rag::rag_trainer::{Decay, Trainer, TrainerConfig};
    let config = TrainerConfig {
        groups,
        decay: Decay::Constant,
        warmup_steps: 0,
        max_grad_norm: Some(1.0),
        seed: 0,
        progress: false,
        ..TrainerConfig::default()
    };
    let scratch = tempfile::tempdir()?;
    let trainer = Trainer::new(config, scratch.path().join("unused"));
    Ok((trainer, scratch))
}

/// Writes `case.json` for the reference side.
pub fn write_case(dir: &Path, case: &Value) -> Result<()> {
    rag::rag_hf::write_atomic(&dir.join("case.json"), serde_json::to_string(case)?.as_bytes())?;
    Ok(())
}
