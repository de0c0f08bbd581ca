//! `metrics.jsonl`: one JSON object per line, appended as training goes, and the history read
//! back from it (for plots, and on resume, when the lines past the checkpoint are dropped).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::{Result, TrainerError};

/// Named scalar metrics (`"recall_at_1"`, `"exact_match"`…).
pub type Metrics = BTreeMap<String, f64>;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Training, averaged over the optimizer steps since the previous line.
    Train {
        /// Optimizer steps done.
        step: u64,
        /// Epochs consumed.
        epoch: f64,
        /// Mean loss over the micro-batches since the previous line.
        loss: f64,
        /// Global gradient norm (before clipping) of the last step.
        grad_norm: f64,
        /// Learning rate of each parameter group at the last step.
        lr: BTreeMap<String, f64>,
        /// Training examples per second since the previous line.
        examples_per_second: f64,
        /// Training seconds so far (evaluation excluded, resumed runs included).
        seconds: f64,
    },
    /// An evaluation.
    Eval {
        /// Optimizer steps done (0: before training).
        step: u64,
        /// What the task measured.
        metrics: Metrics,
        /// Seconds the evaluation took.
        seconds: f64,
    },
}

impl Record {
    /// The step of the record.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. } | Record::Eval { step, .. } => *step,
        }
    }
}

/// The append-only metrics file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Starts a new file at `path` (replacing one there).
    pub fn create(path: &Path) -> Result<Self> {
        rag_hf::write_atomic(path, b"")?;
        Ok(Self { path: path.to_path_buf(), records: Vec::new() })
    }

    /// Continues the file at `path` from optimizer step `step`: records of later steps (written
    /// after the checkpoint a run resumes from) are dropped, and so is a torn last line.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        let mut records = read_records(path)?;
        records.retain(|r| r.step() <= step);
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).expect("records serialize"));
            text.push('\n');
        }
        rag_hf::write_atomic(path, text.as_bytes())?;
        Ok(Self { path: path.to_path_buf(), records })
    }

    /// Appends a record (written and flushed at once).
    pub fn push(&mut self, record: Record) -> Result<()> {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(io(&self.path))?;
        let line = serde_json::to_string(&record).expect("records serialize");
        writeln!(file, "{line}").map_err(io(&self.path))?;
        self.records.push(record);
        Ok(())
    }

    /// Every record so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a `metrics.jsonl`. A last line cut short by a crash is skipped; any other bad line is
/// an error naming its number.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(TrainerError::Malformed {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(records)
}
