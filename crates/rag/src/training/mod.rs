//! Training and measuring: [`recipe`] (what each recipe trains), [`task`] (a model as the
//! trainer's task), [`eval`] (recall, exact match, F1), [`bm25`] (the keyword baseline) and
//! [`experiment`] (a whole run with its baselines, to a typed report).

pub(crate) mod bm25;
pub(crate) mod eval;
pub mod experiment;
pub(crate) mod recipe;
pub(crate) mod task;
