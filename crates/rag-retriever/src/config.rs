//! `BertConfig`: the sizes and options of a BERT encoder, read from HF's `config.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use rag_hf::Activation;

use crate::{Result, RetrieverError};

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_position_type() -> String {
    "absolute".to_string()
}

/// The sizes and options of a BERT encoder: the fields of HF's `BertConfig` (and `DPRConfig`,
/// which adds `projection_dim`) that change the computation. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width `d` of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`d` must be a multiple of it).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// The feed-forward activation.
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    /// Rows of the learned position table: the longest input.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is implemented (relative key embeddings are not).
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Standard deviation of the initial weights when the model is built from the config.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// HF's dropout after embeddings and each sub-block, applied only when
    /// [`crate::EncoderOptions::dropout`] asks for it (Burn keeps dropout on under autodiff).
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    /// DPR's output projection (`encode_proj`), 0 for none.
    #[serde(default)]
    pub projection_dim: usize,
    /// HF's model classes that wrote the checkpoint (picks the weight layout); `null` (as in a
    /// RAG checkpoint's sub-config) reads as none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub architectures: Vec<String>,
    /// HF's `model_type` (`bert`, `dpr`…).
    #[serde(default)]
    pub model_type: Option<String>,
}

impl BertConfig {
    /// A config with BERT's defaults for everything but the sizes.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        max_position_embeddings: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: Activation::Gelu,
            max_position_embeddings,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            position_embedding_type: default_position_type(),
            initializer_range: 0.02,
            hidden_dropout_prob: 0.0,
            projection_dim: 0,
            architectures: Vec::new(),
            model_type: None,
        }
    }

    /// all-MiniLM-L6-v2's sizes (6 layers, width 384, 12 heads, uncased WordPiece vocabulary).
    pub fn minilm_l6() -> Self {
        Self::new(30522, 384, 6, 12, 1536, 512)
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = rag_hf::read_json(path)?;
        config.validate_at(path)?;
        Ok(config)
    }

    /// Checks that the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("<in memory>"))
    }

    fn validate_at(&self, path: &Path) -> Result<()> {
        let fail = |field, message: String| Err(RetrieverError::Config { path: PathBuf::from(path), field, message });
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(
                "num_attention_heads",
                format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            );
        }
        if self.position_embedding_type != "absolute" {
            return fail(
                "position_embedding_type",
                format!("`{}` is not supported (only `absolute`)", self.position_embedding_type),
            );
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return fail("layer_norm_eps", format!("{} is not positive", self.layer_norm_eps));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            return fail("hidden_dropout_prob", format!("{} is not in [0, 1)", self.hidden_dropout_prob));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
