//! all-MiniLM-L6-v2 encoding SQuAD paragraphs (text alone, 256 tokens at most, batches of 32),
//! against sentence-transformers' `encode` of the same texts.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use rag::rag_retriever::{EncodeOptions, Encoder, EncoderOptions, TextTokenizer, encode_passages};
use serde::Deserialize;
use serde_json::json;

use super::{Options, Side, library, write_case};

#[derive(Deserialize)]
struct Paragraph {
    text: String,
}

/// Encodes the first 256 paragraphs of the repository's SQuAD copy twice (the first untimed).
pub fn run<B: Backend>(dir: &Path, options: &Options, device: &B::Device) -> Result<Side> {
    let n = if options.quick { 64 } else { 256 };
    let minilm = options.minilm.as_ref().context("all-MiniLM-L6-v2 was not found (give --minilm)")?;
    let corpus = &crate::repo::root().join("data/squad-v1.1-dev/corpus.jsonl");
    let text = std::fs::read_to_string(corpus).with_context(|| format!("reading {}", corpus.display()))?;
    let texts: Vec<String> = text
        .lines()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Paragraph>(l)
                .map(|p| p.text)
                .with_context(|| format!("{}:{}", corpus.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let encoder = Encoder::<B>::from_pretrained(minilm, &EncoderOptions::default(), device, DType::F32)?;
    let tokenizer = TextTokenizer::from_file(minilm.join("tokenizer.json"), Some(256))?;
    let options_encode = EncodeOptions { batch_size: 32, with_titles: false, progress: false };
    let mut seconds = Vec::new();
    let mut vectors = Vec::new();
    for round in 0..2 {
        vectors.clear();
        let passages = texts.iter().enumerate().map(|(i, t)| (i as u64, "", t.as_str()));
        let report = encode_passages(&encoder, &tokenizer, passages, None, &options_encode, |_, v: &[f32]| {
            vectors.extend_from_slice(v);
            Ok::<(), std::convert::Infallible>(())
        })?;
        if round > 0 {
            seconds.push(report.seconds);
        }
    }
    let dim = vectors.len() / texts.len();
    rag::rag_hf::write_safetensors(
        &dir.join("project_vectors.safetensors"),
        &[("vectors".into(), TensorData::new(vectors, [texts.len(), dim]))],
    )?;
    write_case(
        dir,
        &json!({"threads": options.threads, "model": minilm, "texts": texts, "batch_size": 32, "max_tokens": 256}),
    )?;
    Ok(json!({"unit": format!("{n} passages"), "seconds": seconds, "passages": n,
              "library": library::<B>(device)}))
}
