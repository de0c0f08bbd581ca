//! What checking numbers needs, below every model crate: the HuggingFace reference-fixture
//! format ([`Array`], [`read_json`], the loss cases of `losses.json`), the error measures and a
//! component's report ([`Errors`], [`ComponentReport`]), and the one finite-difference gradient
//! checker ([`gradcheck`]).
//!
//! It depends on Burn and serde only, so the model crates' tests use it without a
//! dev-dependency cycle; `rag-parity` builds the per-component checks on it.

mod fixture;
pub mod gradcheck;
mod loss_cases;
mod report;
mod weights;

pub use fixture::{Array, FixtureError, read_json};
pub use loss_cases::{LossCase, LossKind, load_loss_cases};
pub use report::{ComponentReport, Errors, max_abs_diff, relative_error, values};
pub use weights::{minilm_dir, smollm2_dir};
