//! The retriever of a RAG model: a BERT-family bi-encoder (DPR, Contriever, sentence-transformers).
//!
//! This crate will hold (issue "rag-retriever"): a BERT encoder faithful to HF's `BertModel`, CLS /
//! mean / pooler pooling, HF safetensors loading for `BertModel`, `DPRQuestionEncoder` /
//! `DPRContextEncoder` and sentence-transformers layouts, tokenization from a local
//! `tokenizer.json`, and batched encoding of a passage store into an index.
//!
//! It is generic over the Burn backend and never picks one.
