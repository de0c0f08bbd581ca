//! Helpers shared by the generator's integration tests.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use rag_generator::{Bart, BartConfig, ConfigFile, Llama, LlamaConfig};
use rag_hf::{Checkpoint, Loader};

pub type B = Flex;
pub type Ad = Autodiff<Flex>;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf");

pub fn fixture(component: &str) -> PathBuf {
    Path::new(FIXTURES).join(component)
}

pub use rag_check::{max_abs_diff, values};

pub fn load_bart<Bk: Backend>(dir: &Path, dtype: DType) -> rag_generator::Result<Bart<Bk>> {
    let config = BartConfig::from_file(&dir.join("config.json"))?;
    let checkpoint = Checkpoint::open(dir)?;
    Bart::load(&config, &Loader::new(&checkpoint, "", &Default::default(), dtype), 0.0)
}

pub fn load_llama<Bk: Backend>(dir: &Path, dtype: DType) -> rag_generator::Result<Llama<Bk>> {
    let config = LlamaConfig::from_file(&dir.join("config.json"))?;
    let checkpoint = Checkpoint::open(dir)?;
    Llama::load(&config, &Loader::new(&checkpoint, "", &Default::default(), dtype), 0.0)
}

/// A copy of a fixture model directory in a temp dir, with its tensors passed through `edit`
/// and its config through `edit_config`.
pub fn edited_model(
    component: &str,
    edit: impl FnOnce(Vec<(String, TensorData)>) -> Vec<(String, TensorData)>,
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(component);
    let checkpoint = Checkpoint::open(&src).unwrap();
    let tensors = checkpoint.names().map(|n| (n.to_string(), checkpoint.read(n).unwrap())).collect();
    rag_hf::write_safetensors(&dir.path().join("model.safetensors"), &edit(tensors)).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for extra in ["generation_config.json", "expected.json"] {
        std::fs::copy(src.join(extra), dir.path().join(extra)).unwrap();
    }
    dir
}
