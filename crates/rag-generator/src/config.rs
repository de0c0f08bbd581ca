//! `BartConfig` and `LlamaConfig`: the sizes, options and special ids of the two generator
//! families, read from HF's `config.json`. Unknown fields are ignored; fields that would change
//! the computation in a way this crate does not implement are refused, naming the field.

use std::path::Path;

use rag_hf::Activation;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Result;
use crate::error::config_error;

/// Reads a token-id field that HF writes as a number, a list of numbers or `null`.
pub(crate) fn token_ids<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<Ids>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Ids::One(id)) => vec![id],
        Some(Ids::Many(ids)) => ids,
    })
}

fn yes() -> bool {
    true
}
fn gelu() -> Activation {
    Activation::Gelu
}
fn silu() -> Activation {
    Activation::Silu
}
fn std_002() -> f64 {
    0.02
}
fn rms_eps() -> f64 {
    1e-6
}
fn max_positions_bart() -> usize {
    1024
}
fn max_positions_llama() -> usize {
    2048
}

/// A HF config file: parsed from JSON, then validated. Errors name the file, and the line and
/// column or the field.
pub trait ConfigFile: Sized + serde::de::DeserializeOwned {
    /// Checks the values; `path` is named in errors.
    fn validate_at(&self, path: &Path) -> Result<()>;

    /// Reads and validates a config file.
    fn from_file(path: &Path) -> Result<Self> {
        let config: Self = rag_hf::read_json(path)?;
        config.validate_at(path)?;
        Ok(config)
    }

    /// Checks a config built in code.
    fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("<in memory>"))
    }
}

fn check_positive(path: &Path, fields: &[(&'static str, usize)]) -> Result<()> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(config_error(path, field, "must be at least 1")),
        None => Ok(()),
    }
}

fn check_divides(path: &Path, field: &'static str, heads: usize, width: usize, width_name: &str) -> Result<()> {
    if width.is_multiple_of(heads) {
        Ok(())
    } else {
        Err(config_error(path, field, format!("{heads} does not divide {width_name} {width}")))
    }
}

/// The fields of HF's `BartConfig` that change the computation (`BartForConditionalGeneration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BartConfig {
    /// Vocabulary size (rows of `model.shared`).
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub d_model: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Attention heads in the encoder.
    pub encoder_attention_heads: usize,
    /// Attention heads in the decoder (self- and cross-attention).
    pub decoder_attention_heads: usize,
    /// Feed-forward width in the encoder.
    pub encoder_ffn_dim: usize,
    /// Feed-forward width in the decoder.
    pub decoder_ffn_dim: usize,
    /// The feed-forward activation.
    #[serde(default = "gelu")]
    pub activation_function: Activation,
    /// The longest sequence; the position tables have 2 more rows (HF's offset).
    #[serde(default = "max_positions_bart")]
    pub max_position_embeddings: usize,
    /// Multiply token embeddings by `sqrt(d_model)`.
    #[serde(default)]
    pub scale_embedding: bool,
    /// Padding id.
    #[serde(default = "one")]
    pub pad_token_id: u32,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: u32,
    /// End-of-sequence id(s).
    #[serde(default = "two_list", deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
    /// The first decoder input.
    #[serde(default = "two")]
    pub decoder_start_token_id: u32,
    /// A token forced as the first generated one (BART-large-CNN sets 0).
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    /// A token forced when `max_length` is reached.
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
    /// The LM head is `model.shared` (true for every released BART).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the initial weights of a model built from the config.
    #[serde(default = "std_002")]
    pub init_std: f64,
    /// Dropout after embeddings and sub-blocks, applied when asked (see the crate docs).
    #[serde(default)]
    pub dropout: f64,
    /// Dropout after the feed-forward activation.
    #[serde(default)]
    pub activation_dropout: f64,
    /// HF's `model_type`; `mbart` (pre-LN) is refused.
    #[serde(default)]
    pub model_type: Option<String>,
    /// mBART-style pre-LN layers; only `false` (BART) is implemented.
    #[serde(default)]
    pub normalize_before: bool,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn two_list() -> Vec<u32> {
    vec![2]
}

impl BartConfig {
    /// A BART with HF's defaults for everything but the sizes (ids: bos 0, pad 1, eos 2,
    /// decoder start 2).
    pub fn new(vocab_size: usize, d_model: usize, layers: usize, heads: usize, ffn_dim: usize) -> Self {
        Self {
            vocab_size,
            d_model,
            encoder_layers: layers,
            decoder_layers: layers,
            encoder_attention_heads: heads,
            decoder_attention_heads: heads,
            encoder_ffn_dim: ffn_dim,
            decoder_ffn_dim: ffn_dim,
            activation_function: Activation::Gelu,
            max_position_embeddings: 1024,
            scale_embedding: false,
            pad_token_id: 1,
            bos_token_id: 0,
            eos_token_id: vec![2],
            decoder_start_token_id: 2,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            tie_word_embeddings: true,
            init_std: 0.02,
            dropout: 0.0,
            activation_dropout: 0.0,
            model_type: Some("bart".into()),
            normalize_before: false,
        }
    }
}

impl ConfigFile for BartConfig {
    fn validate_at(&self, path: &Path) -> Result<()> {
        check_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("encoder_attention_heads", self.encoder_attention_heads),
                ("decoder_attention_heads", self.decoder_attention_heads),
                ("encoder_ffn_dim", self.encoder_ffn_dim),
                ("decoder_ffn_dim", self.decoder_ffn_dim),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
        )?;
        check_divides(path, "encoder_attention_heads", self.encoder_attention_heads, self.d_model, "d_model")?;
        check_divides(path, "decoder_attention_heads", self.decoder_attention_heads, self.d_model, "d_model")?;
        if self.normalize_before || self.model_type.as_deref() == Some("mbart") {
            return Err(config_error(
                path,
                "normalize_before",
                "pre-LN (mBART) layers are not implemented; BART is post-LN",
            ));
        }
        let vocab = self.vocab_size as u64;
        for (field, id) in [
            ("pad_token_id", Some(self.pad_token_id)),
            ("decoder_start_token_id", Some(self.decoder_start_token_id)),
            ("forced_bos_token_id", self.forced_bos_token_id),
            ("forced_eos_token_id", self.forced_eos_token_id),
        ] {
            if let Some(id) = id.filter(|&id| u64::from(id) >= vocab) {
                return Err(config_error(path, field, format!("id {id} is outside the vocabulary of {vocab}")));
            }
        }
        for (field, p) in [("dropout", self.dropout), ("activation_dropout", self.activation_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(config_error(path, field, format!("{p} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

/// How rotary frequencies are scaled (`rope_type` in `rope_parameters` / `rope_scaling`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// The scaling of low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pretrained with.
        original_max_position_embeddings: f64,
    },
}

/// The fields of HF's `LlamaConfig` that change the computation (`LlamaForCausalLM`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU block.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// The gate activation of the MLP.
    #[serde(default = "silu")]
    pub hidden_act: Activation,
    /// The longest sequence the model was configured for.
    #[serde(default = "max_positions_llama")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (older configs; transformers 5 writes `rope_parameters.rope_theta`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5's RoPE block: `rope_theta`, `rope_type` and the scaling fields.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Older configs' RoPE scaling block (`type`/`rope_type`, `factor`…).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The LM head is the token-embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Beginning-of-sequence id.
    #[serde(default, deserialize_with = "token_ids")]
    pub bos_token_id: Vec<u32>,
    /// End-of-sequence id(s).
    #[serde(default, deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
    /// Padding id (many LLaMA checkpoints have none).
    #[serde(default, deserialize_with = "token_ids")]
    pub pad_token_id: Vec<u32>,
    /// Standard deviation of the initial weights of a model built from the config.
    #[serde(default = "std_002")]
    pub initializer_range: f64,
}

impl LlamaConfig {
    /// A LLaMA with HF's defaults for everything but the sizes (RoPE θ = 10000, eps 1e-6,
    /// untied head, bos 1, eos 2, pad 0).
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        ffn: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            intermediate_size: ffn,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: Some(10000.0),
            rope_parameters: None,
            rope_scaling: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: vec![1],
            eos_token_id: vec![2],
            pad_token_id: vec![0],
            initializer_range: 0.02,
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// RoPE's base θ and scaling, from `rope_parameters` (transformers 5) or the older
    /// top-level `rope_theta` and `rope_scaling`.
    pub fn rope(&self) -> Result<(f64, RopeScaling)> {
        self.rope_at(Path::new("<in memory>"))
    }

    fn rope_at(&self, path: &Path) -> Result<(f64, RopeScaling)> {
        let params = self.rope_parameters.as_ref().filter(|v| !v.is_null());
        let field = if params.is_some() { "rope_parameters" } else { "rope_scaling" };
        let block = params.or(self.rope_scaling.as_ref().filter(|v| !v.is_null()));
        let number = |key: &str| block.and_then(|b| b.get(key)).and_then(serde_json::Value::as_f64);
        let theta = number("rope_theta").or(self.rope_theta).unwrap_or(10000.0);
        if theta.is_nan() || theta <= 1.0 {
            return Err(config_error(path, "rope_theta", format!("{theta} must be above 1")));
        }
        let kind = block
            .and_then(|b| b.get("rope_type").or_else(|| b.get("type")))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        let required = |key: &str| {
            number(key)
                .filter(|v| *v > 0.0)
                .ok_or_else(|| config_error(path, field, format!("rope type `{kind}` needs a positive `{key}`")))
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: required("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: required("factor")?,
                low_freq_factor: required("low_freq_factor")?,
                high_freq_factor: required("high_freq_factor")?,
                original_max_position_embeddings: required("original_max_position_embeddings")?,
            },
            other => {
                return Err(config_error(
                    path,
                    field,
                    format!("rope type `{other}` is not implemented (default, linear and llama3 are)"),
                ));
            }
        };
        Ok((theta, scaling))
    }
}

impl ConfigFile for LlamaConfig {
    fn validate_at(&self, path: &Path) -> Result<()> {
        check_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_attention_heads", self.num_attention_heads),
                ("num_key_value_heads", self.kv_heads()),
                ("head_dim", self.head_dim()),
            ],
        )?;
        if self.head_dim.is_none() {
            check_divides(path, "num_attention_heads", self.num_attention_heads, self.hidden_size, "hidden_size")?;
        }
        check_divides(path, "num_key_value_heads", self.kv_heads(), self.num_attention_heads, "num_attention_heads")?;
        if !self.head_dim().is_multiple_of(2) {
            return Err(config_error(path, "head_dim", format!("{} is odd; RoPE rotates pairs", self.head_dim())));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err(config_error(path, "rms_norm_eps", format!("{} is not positive", self.rms_norm_eps)));
        }
        self.rope_at(path)?;
        Ok(())
    }
}
