//! The embedded task of `cargo xtask train`: [`synthetic`] (the generated questions and
//! passages) and [`setup`] (its tokenizers and the small models trained from scratch on it).

pub(crate) mod setup;
pub(crate) mod synthetic;
