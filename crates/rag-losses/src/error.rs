//! The crate's error type.

/// Everything that can be wrong with the inputs of a loss in this crate.
///
/// Shapes and options are checked before any tensor work starts, so an error never leaves a
/// half-built autodiff graph behind.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor does not have the shape the loss needs.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected}")]
    Shape {
        /// The argument's name, as in the function's signature.
        tensor: &'static str,
        /// The expected shape, written with the names of the dimensions (`[B, K, T, V]`).
        expected: String,
        /// The shape that was passed.
        found: Vec<usize>,
    },
    /// A token id is negative or not smaller than the vocabulary size.
    #[error("tensor `{tensor}` holds token id {id} at flat position {position}, outside the vocabulary [0, {vocab})")]
    TokenOutOfRange {
        /// The argument's name.
        tensor: &'static str,
        /// The offending id.
        id: i64,
        /// Its row-major position in the tensor.
        position: usize,
        /// The vocabulary size (last dimension of the logits).
        vocab: usize,
    },
    /// A configuration value is outside its domain.
    #[error("invalid option `{field}` = {value}: {reason}")]
    InvalidOption {
        /// The option's name, as in the config struct.
        field: &'static str,
        /// The value that was given, formatted.
        value: String,
        /// What the value must satisfy.
        reason: &'static str,
    },
}

/// `Result` with [`LossError`].
pub type Result<T> = std::result::Result<T, LossError>;
