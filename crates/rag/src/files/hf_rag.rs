//! HuggingFace's RAG checkpoints (`RagTokenForGeneration` / `RagSequenceForGeneration`, Lewis et
//! al. 2020): a DPR question encoder under `rag.question_encoder.` and a BART generator under
//! `rag.generator.`, with a nested `config.json` (`question_encoder`, `generator` and the RAG
//! options).
//!
//! [`HfRag`] computes what HF's `RagModel.forward` computes from given contexts: doc scores
//! `q·dᵀ` (differentiable into the question encoder), generator logits on the `B·K` context
//! rows, and HF's per-example losses through `rag_losses::hf`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};
use rag_generator::{Bart, BartConfig, ConfigFile, Generator, GeneratorTokenizer};
use rag_hf::Checkpoint;
use rag_losses::hf::{HfNllOptions, rag_sequence_get_nll, rag_token_get_nll};
use rag_retriever::{BertConfig, BertInput, BiEncoder, Encoder, Pooling, TextTokenizer, WeightLayout};

use crate::model::RagModel;
use crate::model::config::{ContextFormat, RagConfig, RagLoss};
use serde::Deserialize;

use crate::{RagError, Result};

/// The RAG-level options of HF's `RagConfig` and its two sub-configs.
#[derive(Debug, Clone)]
pub struct HfRagConfig {
    /// The DPR question encoder's config.
    pub question_encoder: BertConfig,
    /// The BART generator's config.
    pub generator: BartConfig,
    /// Documents per question.
    pub n_docs: usize,
    /// RAG-Sequence: drop the first target token's score when it is BOS.
    pub exclude_bos_score: bool,
    /// Label smoothing ε of the losses.
    pub label_smoothing: f64,
    /// RAG-Sequence thorough decoding: drop duplicate candidates.
    pub do_deduplication: bool,
    /// `bos_token_id` of the RAG config (HF falls back to the generator's when it is unset or 0).
    pub bos_token_id: Option<u32>,
    /// Between a passage's title and text in the generator input (HF: `" / "`).
    pub title_sep: String,
    /// Between a passage and the question (HF: `" // "`).
    pub doc_sep: String,
    /// The longest generator input in tokens (HF: 300).
    pub max_combined_length: usize,
}

#[derive(Deserialize)]
struct RawRagConfig {
    question_encoder: serde_json::Value,
    generator: serde_json::Value,
    #[serde(default = "five")]
    n_docs: usize,
    #[serde(default)]
    exclude_bos_score: bool,
    #[serde(default)]
    label_smoothing: f64,
    #[serde(default = "yes")]
    do_deduplication: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default = "title_sep")]
    title_sep: String,
    #[serde(default = "doc_sep")]
    doc_sep: String,
    #[serde(default = "three_hundred")]
    max_combined_length: usize,
}

fn title_sep() -> String {
    " / ".into()
}
fn doc_sep() -> String {
    " // ".into()
}
fn three_hundred() -> usize {
    300
}

fn five() -> usize {
    5
}
fn yes() -> bool {
    true
}

impl HfRagConfig {
    /// Reads a RAG `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawRagConfig = rag_hf::read_json(path)?;
        let err =
            |field: &str, message: String| RagError::Config { path: path.to_path_buf(), field: field.into(), message };
        let question_encoder: BertConfig =
            serde_json::from_value(raw.question_encoder).map_err(|e| err("question_encoder", e.to_string()))?;
        question_encoder.validate().map_err(|e| err("question_encoder", e.to_string()))?;
        let generator: BartConfig =
            serde_json::from_value(raw.generator).map_err(|e| err("generator", e.to_string()))?;
        generator.validate().map_err(|e| err("generator", e.to_string()))?;
        if raw.n_docs == 0 {
            return Err(err("n_docs", "must be at least 1".into()));
        }
        Ok(Self {
            question_encoder,
            generator,
            n_docs: raw.n_docs,
            exclude_bos_score: raw.exclude_bos_score,
            label_smoothing: raw.label_smoothing,
            do_deduplication: raw.do_deduplication,
            bos_token_id: raw.bos_token_id,
            title_sep: raw.title_sep,
            doc_sep: raw.doc_sep,
            max_combined_length: raw.max_combined_length,
        })
    }

    /// The BOS id RAG-Sequence's `exclude_bos_score` compares with: HF's
    /// `config.bos_token_id or config.generator.bos_token_id` (Python's `or` skips 0).
    pub fn loss_bos_id(&self) -> u32 {
        self.bos_token_id.filter(|&id| id != 0).unwrap_or(self.generator.bos_token_id)
    }

    /// HF's loss options for this config.
    pub fn nll_options(&self, exclude_bos_score: bool) -> HfNllOptions {
        HfNllOptions {
            epsilon: self.label_smoothing,
            exclude_bos_score,
            bos_id: Some(i64::from(self.loss_bos_id())),
            ..HfNllOptions::new(i64::from(self.generator.pad_token_id))
        }
    }
}

/// Which of HF's two marginalizations a loss uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marginalization {
    /// RAG-Token: a document per target token.
    Token,
    /// RAG-Sequence: one document for the whole target.
    Sequence,
}

/// The question encoder and generator of a HF RAG checkpoint.
#[derive(Module, Debug)]
pub struct HfRag<B: Backend> {
    /// The DPR question encoder (CLS pooling, optional projection).
    pub question_encoder: Encoder<B>,
    /// The BART generator.
    pub generator: Bart<B>,
}

impl<B: Backend> HfRag<B> {
    /// Loads a RAG checkpoint directory (`config.json` + safetensors, sharded or not).
    pub fn load(dir: &Path, device: &B::Device, dtype: DType) -> Result<(Self, HfRagConfig)> {
        let config = HfRagConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let layout = WeightLayout::dpr_question().under("rag.question_encoder.");
        let question_encoder =
            Encoder::load(&checkpoint, &layout, &config.question_encoder, Pooling::Cls, false, 0.0, device, dtype)?;
        let loader = rag_hf::Loader::new(&checkpoint, "rag.generator.", device, dtype);
        let generator = Bart::load(&config.generator, &loader, 0.0)?;
        Ok((Self { question_encoder, generator }, config))
    }

    /// The full [`RagModel`] of this checkpoint: its question encoder, with `document_encoder`
    /// (HF's RAG checkpoints hold none: pass the DPR context encoder the index was built with,
    /// or `None` to share the question encoder), its BART generator, the tokenizers, and a
    /// [`RagConfig`] taken from `config` (`n_docs`, label smoothing, HF's context format with
    /// the checkpoint's separators and `max_combined_length`; loss `loss`).
    pub fn into_rag_model(
        self,
        config: &HfRagConfig,
        document_encoder: Option<Encoder<B>>,
        passage_tokenizer: TextTokenizer,
        generator_tokenizer: GeneratorTokenizer,
        loss: RagLoss,
    ) -> Result<RagModel<B>> {
        let retriever = match document_encoder {
            Some(d) => BiEncoder::separate(self.question_encoder, d)?,
            None => BiEncoder::shared(self.question_encoder),
        };
        let rag = RagConfig {
            n_docs: config.n_docs,
            loss,
            label_smoothing: config.label_smoothing,
            context: ContextFormat::Seq2Seq {
                title_sep: config.title_sep.clone(),
                doc_sep: config.doc_sep.clone(),
                max_tokens: config.max_combined_length,
            },
            ..RagConfig::default()
        };
        RagModel::new(retriever, Generator::Bart(self.generator), passage_tokenizer, generator_tokenizer, rag)
    }

    /// Question vectors `[b, d]` (DPR's pooled `[CLS]`) of ids and mask `[b, len]`.
    pub fn question_vectors(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.question_encoder.forward(BertInput { input_ids, attention_mask, token_type_ids: None })
    }

    /// Doc scores `q·dᵀ` `[b, n]` of question vectors `[b, d]` and retrieved document vectors
    /// `[b, n, d]` (HF's `bmm(question_hidden_states, retrieved_doc_embeds.transpose)`).
    pub fn doc_scores(questions: Tensor<B, 2>, documents: Tensor<B, 3>) -> Tensor<B, 2> {
        BiEncoder::<B>::scores(questions, documents)
    }

    /// Generator logits `[b·n, T, V]` of context rows `[b·n, L]` (rows `b·n + z`), with the
    /// labels `[b, T]` as decoder inputs for each of their `n` rows (HF passes `labels` as
    /// `decoder_input_ids` and the loss shifts them). The context rows must be a multiple of
    /// the label rows.
    pub fn generator_logits(
        &self,
        context_input_ids: Tensor<B, 2, Int>,
        context_attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>> {
        let rows = context_input_ids.dims()[0];
        let [b, t] = labels.dims();
        if b == 0 || !rows.is_multiple_of(b) || context_attention_mask.dims() != context_input_ids.dims() {
            return Err(crate::error::input(
                "context_input_ids",
                format!(
                    "context_input_ids {:?} and context_attention_mask {:?} must be [labels rows ({b}) × n_docs, len]",
                    context_input_ids.dims(),
                    context_attention_mask.dims()
                ),
            ));
        }
        let n = rows / b;
        let decoder_input_ids = labels.reshape([b, 1, t]).expand([b, n, t]).reshape([b * n, t]);
        let encoded = self.generator.encode(context_input_ids, context_attention_mask.clone());
        Ok(self.generator.decode(decoder_input_ids, None, encoded, context_attention_mask))
    }
}

/// HF's per-example loss `[b]` (`get_nll` with `reduce_loss=False`) of generator logits
/// `[b·n, T, V]`, doc scores `[b, n]` and labels `[b, T]`.
pub fn hf_loss<B: Backend>(
    kind: Marginalization,
    seq_logits: Tensor<B, 3>,
    doc_scores: Tensor<B, 2>,
    labels: Tensor<B, 2, Int>,
    options: &HfNllOptions,
) -> Result<Tensor<B, 1>> {
    Ok(match kind {
        Marginalization::Token => rag_token_get_nll(seq_logits, doc_scores, labels, options)?,
        Marginalization::Sequence => rag_sequence_get_nll(seq_logits, doc_scores, labels, options)?,
    })
}
