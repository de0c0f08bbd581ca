//! The trainer's error type.

use std::path::PathBuf;

/// What went wrong in training.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A configuration value is out of range.
    #[error("trainer config: `{field}` {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A resumed run whose settings differ from those its checkpoint was written with.
    #[error(
        "{checkpoint}: this run is not the one that wrote the checkpoint: {}; resuming would not continue the \
         same run (start afresh without resume, or set `resume_despite_changes` to resume on purpose)",
        changes.iter().map(|(field, old, new)| format!("{field} was {old}, is now {new}")).collect::<Vec<_>>().join("; ")
    )]
    ChangedRun {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// Each differing setting: its name, the checkpoint's value, this run's value.
        changes: Vec<(String, String, String)>,
    },
    /// A checkpoint or a metrics file is damaged or of another format.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor file could not be read or written.
    #[error(transparent)]
    Tensors(#[from] rag_hf::HfError),
    /// A trainable parameter belongs to no parameter group.
    #[error(
        "parameter `{0}` matches no parameter group: add a group whose prefixes cover it (an empty prefix matches all)"
    )]
    Ungrouped(String),
    /// The loss or the gradient norm is NaN or infinite. The model was not updated; the last good
    /// checkpoint is kept.
    #[error(
        "step {step}: the {what} is {value} (not finite); training stopped before the update, the last good checkpoint \
         is {checkpoint}"
    )]
    NonFinite {
        /// The optimizer step (0-based) that failed.
        step: u64,
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The value.
        value: f64,
        /// Where the last good checkpoint is (or `none`).
        checkpoint: String,
    },
    /// The task (loss, evaluation or index refresh) failed.
    #[error("{context}: {source}")]
    Task {
        /// Which hook failed, at which step.
        context: String,
        /// The task's error.
        source: BoxError,
    },
}

/// A task's error, whatever its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The trainer's result type.
pub type Result<T> = std::result::Result<T, TrainerError>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainerError {
    let path = path.into();
    move |source| TrainerError::Io { path, source }
}
