//! The generator of a RAG model: BART (seq2seq, as in the RAG paper) and LLaMA-family
//! decoder-only LMs (RA-DIT, REPLUG), on any Burn backend.
//!
//! - [`Bart`]: HF's `BartForConditionalGeneration`; [`Llama`]: HF's `LlamaForCausalLM`
//!   (grouped-query attention, `rotate_half` RoPE, left padding). Both load HF safetensors
//!   (single or sharded) through [`rag_hf`], or start from a config for training from scratch.
//! - Teacher-forced `forward` passes give logits `[batch, len, vocab]`, differentiable on an
//!   autodiff backend: what the RAG losses consume.
//! - [`StepModel`] / [`DecodeState`]: incremental decoding with key/value caches whose rows can
//!   be reordered (beams) or repeated (documents); [`generate`] runs greedy or beam search on
//!   it with HF's semantics ([`GenerationConfig`]: `max_length` / `max_new_tokens`, EOS,
//!   `length_penalty`, `early_stopping`, `num_return_sequences`, min length, forced BOS/EOS).
//! - [`Generator`]: either architecture behind one handle (its [`GeneratorKind`], special
//!   tokens, teacher-forced answer logits, loading by HF's `model_type`).
//! - [`GeneratorTokenizer`]: a local `tokenizer.json` (byte-level BPE for BART and LLaMA),
//!   encode with padding on either side, decode back to text.
//!
//! The crate is generic over the backend and never picks one. Dropout is applied only when a
//! model is built with a nonzero rate, because Burn keeps dropout on whenever the backend is
//! autodiff.
//!
//! ```
//! use burn::backend::Flex;
//! use rag_generator::{Bart, BartConfig, GenerationConfig, generate};
//!
//! let device = Default::default();
//! let config = BartConfig::new(64, 16, 1, 2, 32);
//! let bart = Bart::<Flex>::init(&config, 0.0, &device)?;
//! let inputs = vec![vec![0, 7, 9, 2], vec![0, 5, 2]];
//! let generation = GenerationConfig { max_length: 6, num_beams: 2, ..GenerationConfig::for_bart(&config) };
//! let out = bart.generate(&inputs, &generation)?; // right-pads, encodes once, beam search
//! assert_eq!(out.sequences.len(), 2);
//!
//! // The same through the step interface that RAG-Token decoding drives:
//! let state = bart.begin_ids(&inputs)?;
//! let start = vec![vec![config.decoder_start_token_id]; inputs.len()];
//! assert_eq!(generate(&bart, state, &start, &generation)?, out);
//! # Ok::<(), rag_generator::GeneratorError>(())
//! ```

mod attention;
mod bart;
mod config;
mod error;
mod generation;
mod generator;
mod gguf;
mod llama;
mod search;
mod tokenizer;

pub use attention::KvCache;
pub use bart::{Bart, BartBatch, BartState};
pub use config::{BartConfig, ConfigFile, LlamaConfig, RopeScaling};
pub use error::{GeneratorError, Result};
pub use generation::{EarlyStopping, GenerationConfig};
pub use generator::{
    ARCHITECTURES, AnswerLogits, Generator, GeneratorKind, GeneratorState, SpecialTokens, answer_token_log_probs,
};
pub use gguf::{find_gguf, generator_gguf, llama_config_from_gguf, llama_from_gguf, open_gguf, tokenizer_from_gguf};
pub use llama::{Llama, LlamaState, PREFILL_TOKENS, Rotary, positions_from_mask};
pub use search::{DecodeState, Generated, StepModel, continuation_logits, generate};
pub use tokenizer::{GeneratorTokenizer, Padded, PaddingSide};
