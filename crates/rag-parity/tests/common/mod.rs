//! Where the fixtures are: each model crate keeps the copies its own tests need under
//! `tests/fixtures/hf/`, in the fixture format's layout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};

pub type B = Flex;
pub type Ad = Autodiff<Flex>;

/// `component`'s fixture in crate `owner`'s copy (`crates/<owner>/tests/fixtures/hf/...`).
pub fn fixture(owner: &str, component: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(owner).join("tests/fixtures/hf").join(component)
}
