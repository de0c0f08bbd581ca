//! The non-parametric memory of a RAG model: a passage store and a vector index.
//!
//! This crate will hold (issue "rag-index"):
//! - a passage store ingesting JSONL and DPR's TSV, memory-mapped with an offsets table so lookup by
//!   id is O(1) and a corpus larger than RAM still works;
//! - a `VectorIndex` trait (add with ids, remove, batched top-K search returning ids, scores and the
//!   exact stored f32 vectors of the hits, save, load) with an exact `FlatIndex` and a usearch
//!   `HnswIndex`;
//! - versioned, checksummed, atomically written files.
//!
//! It knows nothing about Burn: vectors are `&[f32]`, passage ids are `u64`.
