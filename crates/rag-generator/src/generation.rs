//! `GenerationConfig`: HF's decoding options (`generation_config.json`) for greedy and beam
//! search.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Result;
use crate::config::{BartConfig, ConfigFile, LlamaConfig, token_ids};
use crate::error::config_error;

/// When beam search stops (HF's `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `true`: a batch item is done as soon as `num_beams` hypotheses have finished.
    True,
    /// `false` (HF's default): stop when no running beam can beat the worst finished one,
    /// judged at the current length.
    #[default]
    False,
    /// `"never"`: the canonical rule, judged at the best length a running beam could reach.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => serializer.serialize_bool(true),
            EarlyStopping::False => serializer.serialize_bool(false),
            EarlyStopping::Never => serializer.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::True),
            serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(EarlyStopping::False),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(serde::de::Error::custom(format!("expected true, false or \"never\", found {other}"))),
        }
    }
}

fn twenty() -> usize {
    20
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}

/// HF's generation options that greedy search, beam search and sampling read. Sampling
/// (`do_sample`) draws each token from the model's distribution after `temperature`, `top_k` and
/// `top_p` (HF's order), from a generator seeded by `seed`: the same seed gives the same output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// The longest output, prompt included (for BART the prompt is the decoder start token).
    #[serde(default = "twenty")]
    pub max_length: usize,
    /// When set, overrides `max_length` with prompt length + this.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// EOS is forbidden while the output (prompt included) is shorter than this.
    #[serde(default)]
    pub min_length: usize,
    /// EOS is forbidden until this many tokens were generated.
    #[serde(default)]
    pub min_new_tokens: Option<usize>,
    /// 1 is greedy search; more is beam search.
    #[serde(default = "one")]
    pub num_beams: usize,
    /// Finished beams are ranked by `sum log p / generated_len^length_penalty`.
    #[serde(default = "one_f")]
    pub length_penalty: f64,
    /// When beam search stops.
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// Outputs per input (at most `num_beams`).
    #[serde(default = "one")]
    pub num_return_sequences: usize,
    /// End-of-sequence id(s).
    #[serde(default, deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
    /// Written after EOS (defaults to the first EOS id).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// The first decoder token of an encoder-decoder model.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// A token forced as the first generated one.
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    /// A token forced as the last one when `max_length` is reached.
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
    /// Sample instead of searching (with `num_beams` 1).
    #[serde(default)]
    pub do_sample: bool,
    /// Sampling divides the logits by this (> 0; 1 leaves them).
    #[serde(default = "one_f")]
    pub temperature: f64,
    /// Sampling keeps the `top_k` most likely tokens (0: all; HF's default 50).
    #[serde(default = "fifty")]
    pub top_k: usize,
    /// Sampling keeps the smallest set of most likely tokens whose probability reaches `top_p`
    /// (in (0, 1]; 1: all).
    #[serde(default = "one_f")]
    pub top_p: f64,
    /// The seed of sampling's random numbers (not HF's; HF seeds torch globally).
    #[serde(default)]
    pub seed: u64,
}

fn fifty() -> usize {
    50
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_length: 20,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            num_return_sequences: 1,
            eos_token_id: Vec::new(),
            pad_token_id: None,
            decoder_start_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// HF's defaults with the special ids of a BART config (what `generate` does without a
    /// `generation_config.json`).
    pub fn for_bart(config: &BartConfig) -> Self {
        Self {
            eos_token_id: config.eos_token_id.clone(),
            pad_token_id: Some(config.pad_token_id),
            decoder_start_token_id: Some(config.decoder_start_token_id),
            forced_bos_token_id: config.forced_bos_token_id,
            forced_eos_token_id: config.forced_eos_token_id,
            ..Self::default()
        }
    }

    /// HF's defaults with the special ids of a LLaMA config.
    pub fn for_llama(config: &LlamaConfig) -> Self {
        Self {
            eos_token_id: config.eos_token_id.clone(),
            pad_token_id: config.pad_token_id.first().copied(),
            ..Self::default()
        }
    }

    /// The id written after a row has finished.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.or(self.eos_token_id.first().copied()).unwrap_or(0)
    }

    /// The longest output for a prompt of `prompt_len` tokens.
    pub fn max_length_for(&self, prompt_len: usize) -> usize {
        self.max_new_tokens.map_or(self.max_length, |n| prompt_len + n)
    }
}

impl ConfigFile for GenerationConfig {
    fn validate_at(&self, path: &Path) -> Result<()> {
        if self.num_beams == 0 {
            return Err(config_error(path, "num_beams", "must be at least 1"));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return Err(config_error(
                path,
                "num_return_sequences",
                format!("{} must be between 1 and num_beams ({})", self.num_return_sequences, self.num_beams),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(config_error(path, "length_penalty", "must be finite"));
        }
        if self.max_new_tokens == Some(0) {
            return Err(config_error(path, "max_new_tokens", "must be at least 1"));
        }
        if self.do_sample && self.num_beams > 1 {
            return Err(config_error(path, "do_sample", "with num_beams > 1 (beam sampling) is not supported; use 1"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(config_error(path, "temperature", format!("{} must be finite and positive", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(config_error(path, "top_p", format!("{} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}
