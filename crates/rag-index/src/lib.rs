//! The non-parametric memory of a RAG model: a passage store and a vector index.
//!
//! - [`PassageStore`] / [`StoreBuilder`]: passages (`id`, `title`, `text`) ingested from JSONL or
//!   DPR's TSV (optionally chunked into N-word passages), in one memory-mapped file with O(1) lookup
//!   by id, so a corpus larger than RAM works.
//! - [`VectorIndex`]: add with ids, remove, update, batched top-K search returning ids, scores and
//!   the exact stored f32 vectors of the hits, save, load. Implemented by [`FlatIndex`] (exact,
//!   blocked SGEMM (the `gemm` crate's run-time-dispatched kernels) with per-query heaps; the ground truth for recall) and [`HnswIndex`] (usearch's
//!   HNSW with f32/f16/i8 storage, rescored exactly on an f32 side store).
//! - Files are versioned, checksummed and written atomically; a truncated or corrupted file, a
//!   wrong width or a NaN is an [`IndexError`], never a crash in usearch's C++.
//! - [`read_fvecs`] / [`write_fvecs`]: the ANN-benchmark vector format; [`synthetic`]: seeded
//!   clustered vectors for tests and benchmarks.
//!
//! It knows nothing about Burn: vectors are `&[f32]`, passage ids are `u64`.
//!
//! ```
//! use rag_index::{HnswConfig, HnswIndex, Metric, VectorIndex};
//!
//! let mut index = HnswIndex::new(3, HnswConfig::default())?;
//! index.add(&[1, 2, 3], &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0])?;
//! let hits = index.search(&[0.0, 0.0, 1.0, 0.0, 1.0, 0.0], 1)?; // two queries
//! assert_eq!(hits.ids, vec![3, 2]);
//! assert_eq!(hits.scores, vec![3.0, 2.0]); // exact inner products
//! index.update(&[3], &[0.0, 0.0, 0.5])?; // refresh an embedding in place
//! assert_eq!(index.search(&[0.0, 0.0, 1.0], 1)?.scores, vec![0.5]);
//! # Ok::<(), rag_index::IndexError>(())
//! ```

mod distance;
mod error;
mod file;
mod flat;
#[cfg(target_arch = "x86_64")]
mod flat_avx512;
mod fvecs;
mod gemm;
mod hnsw;
mod hnsw_graph;
mod index;
mod progress;
mod store;
pub mod synthetic;
mod vectors;

pub use error::{IndexError, Result};
pub use flat::{FlatIndex, QUERY_BLOCK, ROW_BLOCK};
pub use fvecs::{Fvecs, read_fvecs, write_fvecs};
pub use gemm::inner_products;
pub use hnsw::{HnswConfig, HnswIndex, Storage};
pub use index::{IndexKind, VectorIndex, empty_index, open_index};
pub use store::{
    Chunking, IngestOptions, IngestReport, InputFormat, OnDuplicate, OnMalformed, Passage, PassageStore, StoreBuilder,
};
pub use vectors::{Metric, NO_ID, SearchResults};
