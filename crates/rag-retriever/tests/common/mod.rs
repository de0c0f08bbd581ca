//! Helpers shared by the retriever's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::tensor::{Dtype, TensorView};

pub type B = Flex;
pub type Ad = Autodiff<Flex>;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf");

pub fn fixture(component: &str) -> PathBuf {
    Path::new(FIXTURES).join(component)
}

pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

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

/// The words of the tiny WordPiece vocabulary of [`tiny_tokenizer_json`] (after the five
/// special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]`, ids 0–4).
pub const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "##s", "paris", "is", "capital", "of", "france", "who",
    "wrote", "what", ".", "?", ",", "river", "city", "in", "and", "blue", "red",
];

/// A BERT-style `tokenizer.json` (lowercasing normalizer, WordPiece, `[CLS] A [SEP] B [SEP]`
/// template) over [`WORDS`], with no padding or truncation set.
pub fn tiny_tokenizer_json(with_pad: bool) -> String {
    let mut tokens: Vec<&str> = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    if !with_pad {
        tokens[0] = "[NOPAD]";
    }
    tokens.extend(WORDS);
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.to_string(), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = tokens[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// [`tiny_tokenizer_json`] written to a temp dir as `tokenizer.json`.
pub fn tiny_tokenizer_dir(with_pad: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tiny_tokenizer_json(with_pad)).unwrap();
    dir
}

/// The real all-MiniLM-L6-v2 directory, from `RAG_MINILM_DIR` or the default location of
/// `scripts/fetch-minilm.sh`; `None` (with the reason printed) when it is not there.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RAG_MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("rag-fixtures/all-MiniLM-L6-v2")
        }
    };
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        println!(
            "skipped: no all-MiniLM-L6-v2 weights at {} (run scripts/fetch-minilm.sh, or set RAG_MINILM_DIR)",
            dir.display()
        );
        None
    }
}
