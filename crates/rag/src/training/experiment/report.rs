//! What an experiment writes: [`RunReport`] (`report.json`), the embedded task's [`Target`]s, and
//! [`SeedSummary`] (`seeds.json`) over several seeds' reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rag_trainer::Metrics;
use serde::{Deserialize, Serialize};

use crate::{RagError, Recipe, Result};

/// The rows of a report, in print order: the model before and after training, the ablations
/// and baselines, the gold-passage oracle and RA-DIT LSR's teacher.
pub const ROWS: [&str; 7] = ["before", "after", "frozen_retriever", "closed_book", "bm25", "oracle", "teacher"];

/// `report.json`: what a run measured, with every baseline beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The recipe's name.
    pub recipe: String,
    /// The run's name.
    pub name: String,
    /// The device it ran on, as the caller named it.
    pub device: String,
    /// The backend's name for it.
    pub backend: String,
    /// `embedded` or `user`.
    pub data: String,
    /// The split the rows are measured on: `test` (embedded) or `dev` (your `--dev` file).
    pub evaluated_on: String,
    /// Seconds of the whole run.
    pub wall_seconds: f64,
    /// Training examples per second of the main stage.
    pub examples_per_second: f64,
    /// Peak resident memory of the process (Linux), if known.
    pub peak_rss_bytes: Option<u64>,
    /// The embedded task's targets (none on your data).
    pub targets: Vec<Target>,
    /// Whether every target was met (`null` on your data).
    pub targets_met: Option<bool>,
    /// What the run decided on the way (a stage it skipped, and why).
    pub notes: Vec<String>,
    /// Every stage by name.
    pub stages: BTreeMap<String, StageReport>,
    /// The settings the run resolved.
    pub settings: Settings,
    /// The saved model directory.
    pub model: PathBuf,
    /// The rows ([`ROWS`]) that the run measured, at the top level of `report.json`.
    #[serde(flatten)]
    pub rows: BTreeMap<String, Metrics>,
}

/// One training stage in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The recipe whose loss it trained.
    pub recipe: String,
    /// What it read in training (`retrieved`, `gold`, `gold-and-retrieved`, `closed-book`).
    pub reads: String,
    /// Optimizer steps.
    pub steps: u64,
    /// Training examples consumed.
    pub examples: u64,
    /// Seconds of training (evaluations excluded).
    pub train_seconds: f64,
    /// `examples / train_seconds`.
    pub examples_per_second: f64,
    /// The mean loss of the last logged interval.
    pub final_loss: Option<f64>,
    /// The step it resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Its test metrics after training (retrieved passages, or none when closed book).
    pub test: Metrics,
    /// Its evaluations during training, on the dev questions.
    pub dev_evals: Vec<DevEval>,
    /// The plots it wrote.
    pub plots: Vec<PathBuf>,
}

/// One evaluation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevEval {
    /// The step it was taken at.
    pub step: u64,
    /// What it measured.
    pub metrics: Metrics,
}

/// The settings a run resolved (flags and the recipe's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Steps of the main stage.
    pub steps: u64,
    /// Steps of the copying warm-up (0: none).
    pub copy_steps: u64,
    /// Steps of the gold-passage reading warm-up (0: none).
    pub read_steps: u64,
    /// Passage slots of RA-DIT's LM fine-tuning beside the gold passage (0: the top `n_docs`).
    pub lm_docs: usize,
    /// Questions per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// The main stage's retriever learning rate.
    pub retriever_lr: f64,
    /// The main stage's generator learning rate.
    pub generator_lr: f64,
    /// Passages per question.
    pub n_docs: usize,
    /// The run's seed.
    pub seed: u64,
    /// Whether the document encoder trained.
    pub train_doc_encoder: bool,
    /// Passages in the store.
    pub passages: usize,
    /// The decoding the rows were measured with.
    pub decoding: String,
    /// The generator's forward precision in training.
    pub precision: String,
    /// Training questions.
    pub train_questions: usize,
    /// Questions of the evaluations during training.
    pub dev_questions: usize,
    /// Questions of the rows.
    pub test_questions: usize,
}

impl RunReport {
    /// Reads a `report.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| RagError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| RagError::Data {
            path: path.into(),
            line: e.line(),
            message: format!("not a run report: {e}"),
        })
    }

    /// Writes it atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a report serializes");
        Ok(rag_hf::write_atomic(path, json.as_bytes())?)
    }

    /// A metric of a row, if the run measured it.
    pub fn get(&self, row: &str, metric: &str) -> Option<f64> {
        self.rows.get(row).and_then(|m| m.get(metric)).copied()
    }
}

/// One target of the embedded task, checked on its test questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is checked, with its bound.
    pub check: String,
    /// The measured value.
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// Whether the value is on the right side of it.
    pub met: bool,
}

/// The targets the embedded task is built to meet: BM25 and the untrained retriever below 0.5
/// recall@1, the trained model far above both, closed book near zero, and the ablation well
/// below the trained model. A target whose row the run did not measure is left out.
pub fn embedded_targets(recipe: Recipe, rows: &BTreeMap<String, Metrics>) -> Vec<Target> {
    let get = |row: &str, key: &str| rows.get(row).and_then(|m| m.get(key)).copied();
    let mut out = Vec::new();
    let mut at_most = |check: &str, value: Option<f64>, bound: f64| {
        if let Some(value) = value {
            out.push(Target { check: check.into(), value, bound, met: value <= bound });
        }
    };
    at_most("bm25 recall@1 <= 0.5", get("bm25", "recall_at_1"), 0.5);
    at_most("closed_book exact match <= 0.05", get("closed_book", "exact_match"), 0.05);
    if !recipe.decoder_only() {
        at_most("before recall@1 <= 0.5", get("before", "recall_at_1"), 0.5);
        let gap = get("after", "exact_match").zip(get("frozen_retriever", "exact_match")).map(|(a, f)| f - a);
        at_most("frozen_retriever exact match - after <= -0.25", gap, -0.25);
    }
    let mut at_least = |check: &str, value: Option<f64>, bound: f64| {
        if let Some(value) = value {
            out.push(Target { check: check.into(), value, bound, met: value >= bound });
        }
    };
    match recipe {
        Recipe::RagToken | Recipe::RagSequence => {
            at_least("after recall@1 >= 0.90", get("after", "recall_at_1"), 0.90);
            at_least("after recall@5 >= 0.98", get("after", "recall_at_5"), 0.98);
            at_least("after exact match >= 0.85", get("after", "exact_match"), 0.85);
        }
        Recipe::RaDitLm => at_least("after exact match >= 0.80", get("after", "exact_match"), 0.80),
        Recipe::RaDitLsr => {
            let gain = get("after", "recall_at_1").zip(get("before", "recall_at_1")).map(|(a, b)| a - b);
            at_least("after recall@1 - before >= 0.20", gain, 0.20);
            // At least the `lm` stage's exact match (ra-dit-lm's, the frozen_retriever row).
            let lead = get("after", "exact_match").zip(get("frozen_retriever", "exact_match")).map(|(a, f)| a - f);
            at_least("after exact match - frozen_retriever (ra-dit-lm) >= 0", lead, 0.0);
            at_least("after exact match >= 0.80 (ra-dit-lm's target)", get("after", "exact_match"), 0.80);
        }
    }
    out
}

/// Mean, sample standard deviation, min and max of one figure over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (0 for one seed).
    pub std: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many seeds had the figure.
    pub n: usize,
}

impl Stats {
    /// The statistics of `values` (NaN for none).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        Self { mean, std, min, max, n: values.len() }
    }
}

/// `seeds.json`: every row's metrics over several seeds of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    /// The seeds, in run order.
    pub seeds: Vec<u64>,
    /// Row → metric → statistics over the seeds that measured it.
    pub rows: BTreeMap<String, BTreeMap<String, Stats>>,
    /// Seconds per seed.
    pub wall_seconds: Stats,
    /// Peak memory per seed.
    pub peak_rss_bytes: Stats,
    /// Each seed's [`RunReport::targets_met`].
    pub targets_met: Vec<Option<bool>>,
    /// The recipe's name.
    pub recipe: Option<String>,
}

impl SeedSummary {
    /// The summary of one report per seed.
    pub fn of(reports: &[RunReport]) -> Self {
        let mut rows = BTreeMap::new();
        for row in ROWS {
            let keys: BTreeSet<&String> =
                reports.iter().filter_map(|r| r.rows.get(row)).flat_map(|m| m.keys()).collect();
            let metrics: BTreeMap<String, Stats> = keys
                .into_iter()
                .map(|key| {
                    let values: Vec<f64> = reports.iter().filter_map(|r| r.get(row, key)).collect();
                    (key.clone(), Stats::of(&values))
                })
                .collect();
            if !metrics.is_empty() {
                rows.insert(row.to_string(), metrics);
            }
        }
        let wall: Vec<f64> = reports.iter().map(|r| r.wall_seconds).collect();
        let peak: Vec<f64> = reports.iter().filter_map(|r| r.peak_rss_bytes.map(|p| p as f64)).collect();
        Self {
            seeds: reports.iter().map(|r| r.settings.seed).collect(),
            rows,
            wall_seconds: Stats::of(&wall),
            peak_rss_bytes: Stats::of(&peak),
            targets_met: reports.iter().map(|r| r.targets_met).collect(),
            recipe: reports.first().map(|r| r.recipe.clone()),
        }
    }
}

/// Peak resident memory of this process (Linux `VmHWM`; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, after_em: f64, wall: f64) -> RunReport {
        let settings = Settings {
            steps: 1,
            copy_steps: 0,
            read_steps: 0,
            lm_docs: 0,
            batch_size: 1,
            grad_accumulation: 1,
            retriever_lr: 0.0,
            generator_lr: 0.0,
            n_docs: 1,
            seed,
            train_doc_encoder: false,
            passages: 1,
            decoding: "Token".into(),
            precision: "f32".into(),
            train_questions: 1,
            dev_questions: 1,
            test_questions: 1,
        };
        let mut rows = BTreeMap::new();
        rows.insert("after".to_string(), Metrics::from([("exact_match".to_string(), after_em)]));
        if seed == 0 {
            rows.insert("bm25".to_string(), Metrics::from([("recall_at_1".to_string(), 0.25)]));
        }
        RunReport {
            recipe: "rag-token".into(),
            name: "t".into(),
            device: "cpu".into(),
            backend: "flex".into(),
            data: "embedded".into(),
            evaluated_on: "test".into(),
            wall_seconds: wall,
            examples_per_second: 1.0,
            peak_rss_bytes: None,
            targets: Vec::new(),
            targets_met: Some(true),
            notes: Vec::new(),
            stages: BTreeMap::new(),
            settings,
            model: "m".into(),
            rows,
        }
    }

    #[test]
    fn a_report_keeps_its_rows_at_the_top_level_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let written = report(0, 0.5, 10.0);
        written.write(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["after"]["exact_match"], 0.5, "{json}");
        assert_eq!(json["bm25"]["recall_at_1"], 0.25, "{json}");
        assert_eq!(RunReport::read(&path).unwrap(), written);
        std::fs::write(&path, "{\"recipe\": 3}").unwrap();
        let err = RunReport::read(&path).unwrap_err().to_string();
        assert!(err.contains("report.json:1: not a run report"), "{err}");
    }

    #[test]
    fn seeds_summarize_each_row_over_the_seeds_that_measured_it() {
        let summary = SeedSummary::of(&[report(0, 0.5, 10.0), report(1, 0.7, 30.0)]);
        assert_eq!(summary.seeds, vec![0, 1]);
        let em = &summary.rows["after"]["exact_match"];
        assert!((em.mean - 0.6).abs() < 1e-12 && (em.std - 0.02f64.sqrt()).abs() < 1e-12, "{em:?}");
        assert_eq!((em.min, em.max, em.n), (0.5, 0.7, 2));
        assert_eq!(summary.rows["bm25"]["recall_at_1"].n, 1);
        assert_eq!(summary.wall_seconds.mean, 20.0);
        assert_eq!(summary.targets_met, vec![Some(true), Some(true)]);
    }
}
