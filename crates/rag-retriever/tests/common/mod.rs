//! Helpers shared by the retriever's integration tests.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use safetensors::tensor::{Dtype, TensorView};

pub type B = Flex;
pub type Ad = Autodiff<Flex>;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf");

pub fn fixture(component: &str) -> PathBuf {
    Path::new(FIXTURES).join(component)
}

pub use rag_check::{max_abs_diff, values};

/// Every tensor of a checkpoint as (name, shape, f32 values).
pub fn read_all(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let checkpoint = rag_hf::Checkpoint::open(path).unwrap();
    checkpoint
        .names()
        .map(|name| {
            let data = checkpoint.read(name).unwrap();
            (name.to_string(), data.shape.to_vec(), data.convert::<f32>().into_vec::<f32>().unwrap())
        })
        .collect()
}

/// Writes tensors as a safetensors file, in `dtype` (F32, F16 or BF16).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            other => panic!("unsupported {other:?}"),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name.clone(), TensorView::new(dtype, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A copy of a fixture model directory in a temp dir, with its tensors passed through `edit`
/// and its config through `edit_config`.
pub fn edited_model(
    component: &str,
    edit: impl FnOnce(Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Vec<usize>, Vec<f32>)>,
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(component);
    let tensors = edit(read_all(&src.join("model.safetensors")));
    write_safetensors(&dir.path().join("model.safetensors"), &tensors, Dtype::F32);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// The words of the tiny WordPiece vocabulary of `tests/fixtures/tiny-wordpiece/tokenizer.json`
/// (after the five special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]`, ids 0–4): a BERT-style
/// tokenizer (lowercasing normalizer, WordPiece, `[CLS] A [SEP] B [SEP]` template) with no
/// padding or truncation set.
pub const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "##s", "paris", "is", "capital", "of", "france", "who",
    "wrote", "what", ".", "?", ",", "river", "city", "in", "and", "blue", "red",
];

/// The tiny tokenizer's JSON; without `[PAD]` (renamed `[NOPAD]`) when `with_pad` is false.
pub fn tiny_tokenizer_json(with_pad: bool) -> String {
    let json = std::fs::read_to_string(Path::new(FIXTURES).join("../tiny-wordpiece/tokenizer.json")).unwrap();
    if with_pad { json } else { json.replace("\"[PAD]\"", "\"[NOPAD]\"") }
}

/// [`tiny_tokenizer_json`] written to a temp dir as `tokenizer.json`.
pub fn tiny_tokenizer_dir(with_pad: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tiny_tokenizer_json(with_pad)).unwrap();
    dir
}

pub use rag_check::minilm_dir;
