//! Parity with HuggingFace transformers through reference fixtures.
//!
//! A fixture directory has the layout of `shared/fixtures/hf`: one entry per component
//! (`losses.json`, `bert/`, `dpr/`, `bart/`, `llama/`, `rag/`, `minilm/`), every array stored as
//! `{"shape": [...], "data": [flat, row-major]}`. Shapes, ids and options are read from the files,
//! never assumed, so another fixture set in the same format checks the project as well.
//!
//! Each component's check is generic over the backend and dtype: the leaf (xtask, a test) picks
//! them. [`Component`] lists what exists; [`check`] runs one and returns a [`ComponentReport`].

mod encoders;
mod generators;
mod losses;
mod rag;
mod smollm2;

use std::path::{Path, PathBuf};

use burn::tensor::{DType, backend::AutodiffBackend};

pub use encoders::{check_bert, check_dpr, check_minilm, encoder_tolerance};
pub use generators::{check_bart, check_llama, llama_tolerance};
pub use losses::{LossOutputs, check_losses, run_loss_case};
pub use rag::{RagFixture, check_rag, rag_tolerances};
pub use rag_check::{
    Array, ComponentReport, Errors, FixtureError, LossCase, LossKind, gradcheck, load_loss_cases, max_abs_diff,
    relative_error, values,
};
pub use smollm2::{check_smollm2, smollm2_tolerance};

/// A component of the fixture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `losses.json`: HF's RAG `get_nll` cases.
    Losses,
    /// `bert/`: `BertModel`.
    Bert,
    /// `dpr/`: `DPRQuestionEncoder`.
    Dpr,
    /// `bart/`: `BartForConditionalGeneration`.
    Bart,
    /// `llama/`: `LlamaForCausalLM`.
    Llama,
    /// `rag/`: `RagTokenForGeneration` / `RagSequenceForGeneration`.
    Rag,
    /// `minilm/`: real all-MiniLM-L6-v2 weights (given separately).
    Minilm,
    /// `smollm2/`: SmolLM2-135M-Instruct from its GGUF file (given separately).
    Smollm2,
}

impl Component {
    /// Every component, in the order reports are printed.
    pub const ALL: [Component; 8] = [
        Component::Losses,
        Component::Bert,
        Component::Dpr,
        Component::Bart,
        Component::Llama,
        Component::Rag,
        Component::Minilm,
        Component::Smollm2,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Component::Losses => "losses",
            Component::Bert => "bert",
            Component::Dpr => "dpr",
            Component::Bart => "bart",
            Component::Llama => "llama",
            Component::Rag => "rag",
            Component::Minilm => "minilm",
            Component::Smollm2 => "smollm2",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The file or directory of this component inside a fixture directory.
    pub fn entry(self) -> &'static str {
        match self {
            Component::Losses => "losses.json",
            other => other.name(),
        }
    }

    /// Whether the fixture directory holds this component.
    pub fn present_in(self, dir: &Path) -> bool {
        dir.join(self.entry()).exists()
    }
}

/// Inputs some components need besides the fixture directory.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The real all-MiniLM-L6-v2 directory (`fetch-minilm.sh` prints it); `minilm` is skipped
    /// without it.
    pub minilm_weights: Option<PathBuf>,
    /// SmolLM2's GGUF file or its directory (`fetch-smollm2.sh` prints it); `smollm2` is skipped
    /// without it.
    pub smollm2_gguf: Option<PathBuf>,
}

/// The result of asking for one component's check.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran.
    Checked(ComponentReport),
    /// It could not run here; the reason says why (e.g. weights not fetched).
    Skipped(String),
}

/// Runs one component's check on backend `B` with floats of `dtype`.
pub fn check<B: AutodiffBackend>(
    component: Component,
    dir: &Path,
    options: &CheckOptions,
    device: &B::Device,
    dtype: DType,
) -> Result<Outcome, FixtureError> {
    let entry = dir.join(component.entry());
    let report = match component {
        Component::Losses => check_losses::<B>(&entry, device, dtype)?,
        // Encoders and generators run inference only: the inner backend records no graph.
        Component::Bert => check_bert::<B::InnerBackend>(&entry, device, dtype)?,
        Component::Dpr => check_dpr::<B::InnerBackend>(&entry, device, dtype)?,
        Component::Minilm => match &options.minilm_weights {
            Some(weights) => check_minilm::<B::InnerBackend>(&entry, weights, device, dtype)?,
            None => {
                return Ok(Outcome::Skipped(
                    "no --minilm-weights DIR (fetch the real weights with scripts/fetch-minilm.sh)".into(),
                ));
            }
        },
        Component::Bart => check_bart::<B::InnerBackend>(&entry, device, dtype)?,
        Component::Llama => check_llama::<B::InnerBackend>(&entry, device, dtype)?,
        Component::Rag => check_rag::<B>(&entry, device, dtype)?,
        Component::Smollm2 => match &options.smollm2_gguf {
            Some(gguf) => check_smollm2::<B::InnerBackend>(&entry, gguf, device, dtype)?,
            None => {
                return Ok(Outcome::Skipped(
                    "no --smollm2-gguf DIR (fetch the GGUF file with scripts/fetch-smollm2.sh)".into(),
                ));
            }
        },
    };
    Ok(Outcome::Checked(report))
}

/// The tolerance the issues set for a dtype: relative 1e-9 in f64, 1e-5 otherwise.
pub fn default_tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 { 1e-9 } else { 1e-5 }
}
