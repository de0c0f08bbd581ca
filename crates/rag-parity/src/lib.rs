//! Parity with HuggingFace transformers through reference fixtures.
//!
//! A fixture directory has the layout of `shared/fixtures/hf`: one entry per component
//! (`losses.json`, `bert/`, `dpr/`, `bart/`, `llama/`, `rag/`, `minilm/`), every array stored as
//! `{"shape": [...], "data": [flat, row-major]}`. Shapes, ids and options are read from the files,
//! never assumed, so another fixture set in the same format checks the project as well.
//!
//! Each component's check is generic over the backend and dtype: the leaf (xtask, a test) picks
//! them. [`Component`] lists what exists; [`check`] runs one and returns a [`ComponentReport`].

mod fixture;
mod losses;
mod report;

use std::path::Path;

use burn::tensor::{DType, backend::AutodiffBackend};

pub use fixture::{Array, FixtureError};
pub use losses::{LossCase, LossKind, LossOutputs, check_losses, load_loss_cases, run_loss_case};
pub use report::{ComponentReport, Errors, relative_error};

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
}

impl Component {
    /// Every component, in the order reports are printed.
    pub const ALL: [Component; 7] = [
        Component::Losses,
        Component::Bert,
        Component::Dpr,
        Component::Bart,
        Component::Llama,
        Component::Rag,
        Component::Minilm,
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

    /// Whether this build of the project can check the component yet.
    pub fn implemented(self) -> bool {
        matches!(self, Component::Losses)
    }
}

/// Runs one component's check on backend `B` with floats of `dtype`; `Ok(None)` when the
/// component is not implemented yet.
pub fn check<B: AutodiffBackend>(
    component: Component,
    dir: &Path,
    device: &B::Device,
    dtype: DType,
) -> Result<Option<ComponentReport>, FixtureError> {
    match component {
        Component::Losses => check_losses::<B>(&dir.join(component.entry()), device, dtype).map(Some),
        _ => Ok(None),
    }
}

/// The tolerance the issues set for a dtype: relative 1e-9 in f64, 1e-5 otherwise.
pub fn default_tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 { 1e-9 } else { 1e-5 }
}
