//! [`RagConfig`]: what a [`crate::RagModel`] computes beyond its parts' own configs: how many
//! passages, which loss, how passages become generator inputs. Saved as `rag.json` in a
//! whole-model checkpoint.

use std::path::Path;

use rag_losses::{KlDirection, LmScore};
use serde::{Deserialize, Serialize};

use crate::{RagError, Result};

/// The training loss of a RAG model (a configuration choice; every loss works with both generator
/// architectures, whose logits are aligned with the answer tokens first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RagLoss {
    /// RAG-Token, `−log Π_t Σ_z p(z|x) p(y_t|x,z,y_<t)`: trains the generator and, through
    /// `p(z|x)`, the query encoder.
    RagToken,
    /// RAG-Sequence, `−log Σ_z p(z|x) Π_t p(y_t|x,z,y_<t)`: trains both as RAG-Token does.
    RagSequence,
    /// RA-DIT LM fine-tuning: each retrieved passage makes its own example, loss
    /// `−Σ_z Σ_t log p(y_t | z∘x, y_<t)` on the answer tokens. Trains the generator only.
    LmFinetune,
    /// RA-DIT / REPLUG LM-supervised retrieval: a KL between `p_R(z|x)` and
    /// `p_LSR(z|x,y) ∝ exp(score_LM(z)/τ)`. The generator is a frozen teacher: trains the query
    /// encoder only.
    Lsr,
}

/// How a retrieved passage and the question become the generator's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ContextFormat {
    /// HF RAG's encoder input for a seq2seq generator:
    /// `title + title_sep + text + doc_sep + question` (a title's surrounding quotes removed,
    /// double spaces collapsed, as HF's `postprocess_docs`), tokenized as
    /// `<s> … </s>` and cut to `max_tokens` (keeping the final `</s>`; HF's truncation, which
    /// may cut the question off a long passage).
    Seq2Seq {
        /// Between title and text (HF: `" / "`).
        title_sep: String,
        /// Between passage and question (HF: `" // "`).
        doc_sep: String,
        /// HF's `max_combined_length` (300).
        max_tokens: usize,
    },
    /// RA-DIT's prompt for a decoder-only LM: `<bos>` + `background` (with `{title}` and
    /// `{text}` filled, its tokens cut to `max_background_tokens`) + `instruction` (with
    /// `{question}` filled), then the answer as `answer_prefix + answer` and `<eos>`. The
    /// background and the instruction are tokenized separately, so every passage's prompt ends
    /// in the same instruction tokens.
    Background {
        /// RA-DIT: `"Background: {title} {text}\n\n"`.
        background: String,
        /// The question's template: `"{question}\nAnswer:"`.
        instruction: String,
        /// Put before the answer's text (`" "`: the answer starts a new word).
        answer_prefix: String,
        /// The most tokens a passage's background may take.
        max_background_tokens: usize,
    },
}

impl ContextFormat {
    /// HF RAG's format: `" / "`, `" // "`, 300 tokens.
    pub fn hf() -> Self {
        Self::Seq2Seq { title_sep: " / ".into(), doc_sep: " // ".into(), max_tokens: 300 }
    }

    /// A ChatML user turn for an instruction-tuned LM whose `<bos>` is `<|im_start|>` and whose
    /// `<eos>` is `<|im_end|>` (SmolLM2-Instruct, Qwen): `<|im_start|>user\nBackground: {title}
    /// {text}\n\nQuestion: {question}\nAnswer with a few words copied from the
    /// background.<|im_end|>\n<|im_start|>assistant\n`, then the answer and `<|im_end|>`: the
    /// model's own chat format, which it was tuned to answer in. Zero-shot on 16 SQuAD dev
    /// questions with the gold passage, SmolLM2-135M-Instruct's F1 was 0.094 with it and 0.037
    /// with [`ContextFormat::ra_dit`].
    pub fn chatml() -> Self {
        Self::Background {
            background: "user\nBackground: {title} {text}\n\n".into(),
            instruction:
                "Question: {question}\nAnswer with a few words copied from the background.<|im_end|>\n<|im_start|>assistant\n"
                    .into(),
            answer_prefix: String::new(),
            max_background_tokens: 256,
        }
    }

    /// RA-DIT's format with 256 background tokens.
    pub fn ra_dit() -> Self {
        Self::Background {
            background: "Background: {title} {text}\n\n".into(),
            instruction: "{question}\nAnswer:".into(),
            answer_prefix: " ".into(),
            max_background_tokens: 256,
        }
    }
}

/// Options of the LM-supervised retrieval loss ([`RagLoss::Lsr`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LsrOptions {
    /// How the LM's likelihood of the answer becomes `score_LM`.
    pub score: LmScore,
    /// τ of `p_LSR = softmax(score_LM / τ)`.
    pub lm_temperature: f64,
    /// Which way the KL points (default: `KL(p_LSR ‖ p_R)`, as REPLUG's and Atlas's code).
    pub direction: KlDirection,
}

impl Default for LsrOptions {
    fn default() -> Self {
        Self { score: LmScore::MeanLogProb, lm_temperature: 1.0, direction: KlDirection::LsrToRetriever }
    }
}

/// The options of a [`crate::RagModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Passages retrieved per question (K).
    pub n_docs: usize,
    /// The training loss.
    pub loss: RagLoss,
    /// Label smoothing ε of the likelihood losses.
    pub label_smoothing: f64,
    /// τ_R: the document prior is `softmax(q·d / τ_R)` (1 in RAG).
    pub retriever_temperature: f64,
    /// How passages become generator inputs.
    pub context: ContextFormat,
    /// The most tokens of a question the query encoder reads.
    pub max_query_tokens: usize,
    /// Re-encode the retrieved passages with the document encoder inside the step so the loss
    /// trains it too (HF's end-to-end RAG). The index is not updated: refreshing it is the
    /// trainer's job.
    pub train_document_encoder: bool,
    /// Options of [`RagLoss::Lsr`].
    pub lsr: LsrOptions,
    /// The precision of the generator's forward pass in training losses. Half precision casts
    /// the weights inside the graph (they stay f32 and receive f32 gradients) and the logits back
    /// to the weights' dtype before the loss, so the log-softmax, the logsumexp over documents
    /// and the label-smoothing sums accumulate in f32. Decoding runs in the weights' dtype.
    pub generator_precision: Precision,
}

/// A compute precision ([`RagConfig::generator_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The weights' own dtype (f32, or f64 in parity checks).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// The dtype to compute in, `None` for the weights' own.
    pub fn half_dtype(self) -> Option<burn::tensor::DType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(burn::tensor::DType::F16),
            Precision::Bf16 => Some(burn::tensor::DType::BF16),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = RagError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            other => Err(RagError::UnknownName {
                what: "precision",
                given: other.to_string(),
                expected: "f32, f16 or bf16".into(),
            }),
        }
    }
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            n_docs: 5,
            loss: RagLoss::RagToken,
            label_smoothing: 0.0,
            retriever_temperature: 1.0,
            context: ContextFormat::hf(),
            max_query_tokens: 64,
            train_document_encoder: false,
            lsr: LsrOptions::default(),
            generator_precision: Precision::F32,
        }
    }
}

impl RagConfig {
    /// Reads a `rag.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = rag_hf::read_json(path)?;
        config.validate_at(path)?;
        Ok(config)
    }

    /// Checks the values (`path` names the file in errors).
    pub fn validate_at(&self, path: &Path) -> Result<()> {
        let err = |field: &str, message: &str| {
            Err(RagError::Config { path: path.to_path_buf(), field: field.into(), message: message.into() })
        };
        if self.n_docs == 0 {
            return err("n_docs", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return err("label_smoothing", "must lie in [0, 1)");
        }
        if !(self.retriever_temperature.is_finite() && self.retriever_temperature > 0.0) {
            return err("retriever_temperature", "must be finite and positive");
        }
        if !(self.lsr.lm_temperature.is_finite() && self.lsr.lm_temperature > 0.0) {
            return err("lsr.lm_temperature", "must be finite and positive");
        }
        if self.max_query_tokens < 3 {
            return err("max_query_tokens", "must leave room for a token beside [CLS] and [SEP]");
        }
        match &self.context {
            ContextFormat::Seq2Seq { max_tokens, .. } if *max_tokens < 3 => {
                err("context.max_tokens", "must leave room for a token beside <s> and </s>")
            }
            ContextFormat::Background { background, instruction, .. }
                if !background.contains("{text}") || !instruction.contains("{question}") =>
            {
                err("context", "the background needs `{text}` and the instruction `{question}`")
            }
            _ => Ok(()),
        }
    }

    /// [`RagConfig::validate_at`] for a config built in code.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("<RagConfig>"))
    }
}
