//! Exact maximum-inner-product search: the ground truth for recall, and the right index below about
//! 100k passages.
//!
//! Search splits the stored vectors into one chunk per thread (rayon) and keeps a top-k heap per
//! query; per-thread heaps are merged at the end. Rows are the outer loop, so the stored vectors
//! cross memory once per search whatever the number of queries. Two paths score a chunk:
//!
//! - **On a CPU with AVX-512F** (detected at run time), a fused scan (`flat_avx512.rs`): the
//!   queries packed once into panels of 16, the rows read in place, 8 rows × 48 queries of scores
//!   held in registers and tested against the queries' thresholds there, so no score matrix is
//!   written. On one AVX-512 core it ran at 102–108 GFLOP/s where the general path's SGEMM ran at
//!   86 (docs/index.md, "Exact search").
//! - **Elsewhere** (AVX2, baseline x86-64, other architectures), the general path: each block of
//!   [`ROW_BLOCK`] rows is scored against blocks of up to [`QUERY_BLOCK`] queries by one SGEMM (the
//!   `gemm` crate, which picks AVX2/FMA or scalar kernels at run time), then a scan of the block's
//!   scores rejects most with one comparison against the heap's worst kept score.
//!
//! Both paths return the same hits; [`FlatIndex::search_on`] picks one, for tests and benchmarks.

use std::path::Path;

use rayon::prelude::*;

use crate::error::{IndexError, Result};
use crate::index::{Header, IndexKind, VectorIndex, read_index_file, read_table, write_index_file};
use crate::progress;
use crate::vectors::{Candidate, Metric, SearchResults, TopK, VectorTable, check_queries};

/// Stored rows scored per SGEMM call (at 384 dimensions, 1.5 MiB of vectors, packed once per
/// call).
pub const ROW_BLOCK: usize = 1024;
/// Queries scored per SGEMM call: 256 queries × [`ROW_BLOCK`] rows of f32 scores is 1 MiB, which
/// stays in L2 while the heaps scan it.
pub const QUERY_BLOCK: usize = 256;
/// A thread gets at least this many rows, so small indexes are not split into overhead.
const MIN_ROWS_PER_TASK: usize = 8192;

/// The queries of one search, laid out for the path that scans them.
enum Queries {
    /// Packed into panels for the fused AVX-512 scan.
    #[cfg(target_arch = "x86_64")]
    Packed(crate::flat_avx512::PackedQueries),
    /// Row-major, for the SGEMM path.
    RowMajor { values: Vec<f32>, n: usize },
}

impl Queries {
    /// The fused AVX-512 scan where the CPU has it and `fused` allows it, else the SGEMM path.
    fn for_this_cpu(values: Vec<f32>, n: usize, dim: usize, fused: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        if fused && crate::flat_avx512::available() {
            return Self::Packed(crate::flat_avx512::PackedQueries::new(&values, dim));
        }
        let _ = (dim, fused);
        Self::RowMajor { values, n }
    }
}

/// Exact inner-product (or cosine) search over f32 vectors kept in memory.
///
/// ```
/// use rag_index::{FlatIndex, Metric, VectorIndex};
///
/// let mut index = FlatIndex::new(2, Metric::InnerProduct)?;
/// index.add(&[10, 11, 12], &[1.0, 0.0, 0.0, 1.0, 0.7, 0.7])?;
/// let hits = index.search(&[1.0, 0.1], 2)?;
/// assert_eq!(hits.ids(0), &[10, 12]);
/// assert_eq!(hits.vector(0, 1), &[0.7, 0.7]);
/// # Ok::<(), rag_index::IndexError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FlatIndex {
    table: VectorTable,
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, metric: Metric) -> Result<Self> {
        if dim == 0 || u32::try_from(dim).is_err() {
            return Err(IndexError::InvalidOption {
                field: "dim",
                value: dim.to_string(),
                reason: "must be between 1 and 2^32 - 1".into(),
            });
        }
        Ok(Self { table: VectorTable::new(dim, metric) })
    }

    /// The ids in storage order.
    pub fn ids(&self) -> &[u64] {
        self.table.ids()
    }

    /// [`VectorIndex::search`], on the fused AVX-512 scan where the CPU has it and `fused` is true,
    /// else on the general SGEMM path. Both return the same hits (up to rounding of the scores):
    /// the general path is public so benchmarks can measure one against the other.
    pub fn search_on(&self, queries: &[f32], k: usize, fused: bool) -> Result<SearchResults> {
        let dim = self.table.dim();
        let (n_queries, queries) = check_queries(dim, self.table.metric(), queries, k)?;
        let mut out = SearchResults::padded(n_queries, k, dim);
        let n = self.table.len();
        if n == 0 || n_queries == 0 {
            return Ok(out);
        }
        let queries = Queries::for_this_cpu(queries, n_queries, dim, fused);
        let tasks = (n / MIN_ROWS_PER_TASK).clamp(1, rayon::current_num_threads());
        let per_task = n.div_ceil(tasks);
        let heaps = (0..tasks)
            .into_par_iter()
            .map(|t| self.scan(&queries, k, t * per_task..((t + 1) * per_task).min(n)))
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| x.merge(y));
                a
            })
            .expect("at least one task");
        out.par_queries_mut().zip(heaps).for_each(|(mut slot, heap)| slot.fill(&heap.into_sorted(), &self.table));
        Ok(out)
    }

    pub(crate) fn from_file(path: &Path, header: Header, bytes: &[u8]) -> Result<Self> {
        if header.scalar != 1 {
            return Err(IndexError::corrupt(
                path,
                format!("flat index with storage scalar code {}, expected 1 (f32)", header.scalar),
            ));
        }
        let (table, r) = read_table(path, &header, bytes)?;
        r.finish()?;
        Ok(Self { table })
    }

    /// The top `k` of rows `rows` for every query, on the fastest path this CPU has.
    fn scan(&self, queries: &Queries, k: usize, rows: std::ops::Range<usize>) -> Vec<TopK> {
        match queries {
            #[cfg(target_arch = "x86_64")]
            Queries::Packed(packed) => {
                let table = crate::flat_avx512::Rows {
                    data: self.table.data(),
                    ids: self.table.ids(),
                    inv_norms: (self.table.metric() == Metric::Cosine).then(|| self.table.inv_norms()),
                };
                crate::flat_avx512::scan(packed, &table, k, rows)
            }
            Queries::RowMajor { values, n } => self.scan_gemm(values, *n, k, rows),
        }
    }

    /// The general path: blocks of scores from the SGEMM, then a scan of each block against the
    /// per-query top-k heaps.
    fn scan_gemm(&self, queries: &[f32], n_queries: usize, k: usize, rows: std::ops::Range<usize>) -> Vec<TopK> {
        let dim = self.table.dim();
        let data = self.table.data();
        let ids = self.table.ids();
        let inv_norms = self.table.inv_norms();
        let cosine = self.table.metric() == Metric::Cosine;
        let mut heaps: Vec<TopK> = (0..n_queries).map(|_| TopK::new(k)).collect();
        let mut scores = vec![0f32; QUERY_BLOCK.min(n_queries) * ROW_BLOCK.min(rows.len())];
        for r0 in rows.clone().step_by(ROW_BLOCK) {
            let rn = ROW_BLOCK.min(rows.end - r0);
            let d = &data[r0 * dim..(r0 + rn) * dim];
            for q0 in (0..n_queries).step_by(QUERY_BLOCK) {
                let qn = QUERY_BLOCK.min(n_queries - q0);
                let q = &queries[q0 * dim..(q0 + qn) * dim];
                crate::gemm::inner_products(q, d, dim, &mut scores[..qn * rn]).expect("blocks sized above");
                for (qi, row_scores) in scores[..qn * rn].chunks_exact(rn).enumerate() {
                    let heap = &mut heaps[q0 + qi];
                    let mut threshold = heap.threshold();
                    for (j, &raw) in row_scores.iter().enumerate() {
                        let score = if cosine { raw * inv_norms[r0 + j] } else { raw };
                        if score >= threshold {
                            heap.push(Candidate { score, id: ids[r0 + j], row: r0 + j });
                            threshold = heap.threshold();
                        }
                    }
                }
            }
        }
        heaps
    }
}

impl VectorIndex for FlatIndex {
    fn dim(&self) -> usize {
        self.table.dim()
    }

    fn metric(&self) -> Metric {
        self.table.metric()
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn vector(&self, id: u64) -> Option<&[f32]> {
        self.table.vector(id)
    }

    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        self.table.check_batch(ids, vectors, false)?;
        self.table.push(ids, vectors);
        Ok(())
    }

    fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        Ok(ids.iter().filter(|&&id| self.table.remove(id)).count())
    }

    /// Overwrites stored vectors in place (and appends new ids): no row moves, no reallocation.
    fn update(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        self.table.check_batch(ids, vectors, true)?;
        let dim = self.table.dim();
        let bar = progress::items_bar(ids.len() as u64, "updating vectors");
        let (mut new_ids, mut new_vectors) = (Vec::new(), Vec::new());
        for (&id, v) in ids.iter().zip(vectors.chunks_exact(dim)) {
            match self.table.row_of(id) {
                Some(row) => self.table.overwrite(row, v),
                None => {
                    new_ids.push(id);
                    new_vectors.extend_from_slice(v);
                }
            }
            bar.inc(1);
        }
        self.table.push(&new_ids, &new_vectors);
        bar.finish_and_clear();
        Ok(())
    }

    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResults> {
        self.search_on(queries, k, true)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let header =
            Header { kind: IndexKind::Flat, metric: self.metric(), scalar: 1, dim: self.dim(), count: self.len() };
        write_index_file(path, header, &self.table, |_| Ok(()))
    }

    fn load(path: &Path) -> Result<Self> {
        let (header, bytes) = read_index_file(path, Some(IndexKind::Flat))?;
        Self::from_file(path, header, &bytes)
    }

    fn memory_bytes(&self) -> usize {
        self.table.bytes()
    }
}
