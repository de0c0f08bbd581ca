//! The generator of a RAG model: BART (seq2seq, as in the RAG paper) and LLaMA-family decoder-only
//! LMs (RA-DIT, REPLUG).
//!
//! This crate will hold (issue "rag-generator"): models faithful to HF's
//! `BartForConditionalGeneration` and `LlamaForCausalLM`, HF safetensors loading (sharded too),
//! teacher-forced training forward passes, incremental decoding with a KV cache that can be
//! reordered per beam and document, greedy and beam search with HF's semantics, and tokenizers from
//! a local `tokenizer.json`.
//!
//! It is generic over the Burn backend and never picks one.
