//! What every index shares: the metric, search results, the f32 side store of vectors and the
//! validation of vector and query batches.

use rayon::iter::IndexedParallelIterator;
use std::collections::HashMap;

use crate::error::{IndexError, Result};

/// The id of a padding slot in [`SearchResults`] (a query that found fewer than `k` vectors).
/// It cannot be added to an index.
pub const NO_ID: u64 = u64::MAX;

/// How a query and a stored vector are compared. Both are similarities: larger is closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// `q · d`: maximum inner product search, what DPR and RAG score documents with.
    InnerProduct,
    /// `q · d / (|q| |d|)`. Zero vectors are refused.
    Cosine,
}

impl Metric {
    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::InnerProduct => 1,
            Metric::Cosine => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Metric::InnerProduct),
            2 => Some(Metric::Cosine),
            _ => None,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::InnerProduct => "inner-product",
            Metric::Cosine => "cosine",
        })
    }
}

/// The answer to a batch of queries: row-major `[n_queries, k]` ids and scores and
/// `[n_queries, k, dim]` vectors, best first in each row.
///
/// Scores are computed from the stored f32 vectors even when the search itself ran on quantized
/// ones, and `vectors` are those exact stored vectors, so a model can recompute `q · d`
/// differentiably. A query that found fewer than `k` vectors (an index smaller than `k`) is padded
/// with id [`NO_ID`], score `-inf` and a zero vector: the convention of `rag-losses`, where a `-inf`
/// document score is a removed document.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Number of queries.
    pub n_queries: usize,
    /// Hits per query (the `k` that was asked for).
    pub k: usize,
    /// Vector dimension.
    pub dim: usize,
    /// `[n_queries, k]` ids.
    pub ids: Vec<u64>,
    /// `[n_queries, k]` scores under the index's metric.
    pub scores: Vec<f32>,
    /// `[n_queries, k, dim]` stored vectors of the hits.
    pub vectors: Vec<f32>,
}

impl SearchResults {
    pub(crate) fn padded(n_queries: usize, k: usize, dim: usize) -> Self {
        Self {
            n_queries,
            k,
            dim,
            ids: vec![NO_ID; n_queries * k],
            scores: vec![f32::NEG_INFINITY; n_queries * k],
            vectors: vec![0.0; n_queries * k * dim],
        }
    }

    /// The ids of query `q`'s hits, best first.
    pub fn ids(&self, q: usize) -> &[u64] {
        &self.ids[q * self.k..(q + 1) * self.k]
    }

    /// The scores of query `q`'s hits.
    pub fn scores(&self, q: usize) -> &[f32] {
        &self.scores[q * self.k..(q + 1) * self.k]
    }

    /// The stored vector of query `q`'s `j`-th hit.
    pub fn vector(&self, q: usize, j: usize) -> &[f32] {
        let start = (q * self.k + j) * self.dim;
        &self.vectors[start..start + self.dim]
    }

    /// How many of query `q`'s slots hold a real hit (the rest are padding).
    pub fn found(&self, q: usize) -> usize {
        self.ids(q).iter().take_while(|&&id| id != NO_ID).count()
    }

    /// Writes query `q`'s hits, already sorted best first, into its row.
    /// Every query's slice of the results, for filling them in parallel.
    pub(crate) fn par_queries_mut(&mut self) -> impl IndexedParallelIterator<Item = QueryResults<'_>> {
        use rayon::prelude::*;
        let (k, dim) = (self.k.max(1), self.dim);
        self.ids
            .par_chunks_mut(k)
            .zip(self.scores.par_chunks_mut(k))
            .zip(self.vectors.par_chunks_mut(k * dim))
            .map(|((ids, scores), vectors)| QueryResults { ids, scores, vectors })
    }
}

/// One query's part of [`SearchResults`].
pub(crate) struct QueryResults<'a> {
    ids: &'a mut [u64],
    scores: &'a mut [f32],
    vectors: &'a mut [f32],
}

impl QueryResults<'_> {
    /// Writes the first `k` of `hits` (best first); the slots past them stay empty.
    pub(crate) fn fill(&mut self, hits: &[Candidate], table: &VectorTable) {
        let dim = table.dim();
        for (j, hit) in hits.iter().take(self.ids.len()).enumerate() {
            self.ids[j] = hit.id;
            self.scores[j] = hit.score;
            self.vectors[j * dim..(j + 1) * dim].copy_from_slice(table.row(hit.row));
        }
    }
}

/// A scored hit while a search runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) score: f32,
    pub(crate) id: u64,
    pub(crate) row: usize,
}

impl Candidate {
    /// Higher score first; equal scores by lower id, so results do not depend on thread timing or
    /// on the order vectors were added in.
    pub(crate) fn better_than(&self, other: &Candidate) -> bool {
        self.score > other.score || (self.score == other.score && self.id < other.id)
    }
}

/// Best-first sort of a candidate list.
pub(crate) fn sort_best_first(hits: &mut [Candidate]) {
    hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
}

/// The `k` best candidates seen so far: a binary min-heap whose root is the worst kept candidate,
/// so a new score is rejected with one comparison in the common case.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    heap: Vec<Candidate>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self { k, heap: Vec::with_capacity(k) }
    }

    /// The score a candidate must reach to be considered (`-inf` until the heap is full).
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if self.heap.len() < self.k { f32::NEG_INFINITY } else { self.heap[0].score }
    }

    #[inline]
    pub(crate) fn push(&mut self, c: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(c);
            self.sift_up(self.heap.len() - 1);
        } else if self.k > 0 && c.better_than(&self.heap[0]) {
            self.heap[0] = c;
            self.sift_down(0);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].better_than(&self.heap[i]) {
                self.heap.swap(parent, i);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut worst = i;
            if l < n && self.heap[worst].better_than(&self.heap[l]) {
                worst = l;
            }
            if r < n && self.heap[worst].better_than(&self.heap[r]) {
                worst = r;
            }
            if worst == i {
                break;
            }
            self.heap.swap(i, worst);
            i = worst;
        }
    }

    pub(crate) fn merge(&mut self, other: TopK) {
        other.heap.into_iter().for_each(|c| self.push(c));
    }

    pub(crate) fn into_sorted(mut self) -> Vec<Candidate> {
        sort_best_first(&mut self.heap);
        self.heap
    }
}

/// The f32 vectors of an index with their ids: the exact values that search results return.
/// Rows are dense; removing a row moves the last row into its place.
#[derive(Debug, Clone)]
pub(crate) struct VectorTable {
    dim: usize,
    metric: Metric,
    ids: Vec<u64>,
    data: Vec<f32>,
    /// `1 / |d|` per row under the cosine metric, empty otherwise.
    inv_norms: Vec<f32>,
    rows: HashMap<u64, usize>,
}

impl VectorTable {
    pub(crate) fn new(dim: usize, metric: Metric) -> Self {
        Self { dim, metric, ids: Vec::new(), data: Vec::new(), inv_norms: Vec::new(), rows: HashMap::new() }
    }

    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    pub(crate) fn metric(&self) -> Metric {
        self.metric
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn ids(&self) -> &[u64] {
        &self.ids
    }

    pub(crate) fn data(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn inv_norms(&self) -> &[f32] {
        &self.inv_norms
    }

    pub(crate) fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    pub(crate) fn row_of(&self, id: u64) -> Option<usize> {
        self.rows.get(&id).copied()
    }

    pub(crate) fn vector(&self, id: u64) -> Option<&[f32]> {
        self.row_of(id).map(|r| self.row(r))
    }

    /// Heap bytes held per stored vector (vector, id, norm and the id map's share).
    pub(crate) fn bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.ids.capacity() * 8
            + self.inv_norms.capacity() * 4
            + self.rows.capacity() * (size_of::<(u64, usize)>() + 1)
    }

    /// Checks a batch for `add` ([`check_vectors`]) and, unless `replacing`, that no id is
    /// already stored.
    pub(crate) fn check_batch(&self, ids: &[u64], vectors: &[f32], replacing: bool) -> Result<()> {
        check_vectors(self.dim, self.metric, ids, vectors)?;
        match ids.iter().find(|&id| !replacing && self.rows.contains_key(id)) {
            Some(&id) => Err(IndexError::IdExists { id }),
            None => Ok(()),
        }
    }

    /// Appends a checked batch.
    pub(crate) fn push(&mut self, ids: &[u64], vectors: &[f32]) {
        self.ids.reserve(ids.len());
        let capacity = self.data.capacity();
        self.data.reserve(vectors.len());
        if self.data.capacity() != capacity {
            advise_huge_pages(&self.data);
        }
        for (&id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            self.rows.insert(id, self.ids.len());
            self.ids.push(id);
            self.data.extend_from_slice(v);
            if self.metric == Metric::Cosine {
                self.inv_norms.push(1.0 / norm(v));
            }
        }
    }

    /// Overwrites the vector of a stored id.
    pub(crate) fn overwrite(&mut self, row: usize, v: &[f32]) {
        self.data[row * self.dim..(row + 1) * self.dim].copy_from_slice(v);
        if self.metric == Metric::Cosine {
            self.inv_norms[row] = 1.0 / norm(v);
        }
    }

    /// Removes an id; returns whether it was stored.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let Some(row) = self.rows.remove(&id) else { return false };
        let last = self.ids.len() - 1;
        if row != last {
            let moved = self.ids[last];
            self.ids[row] = moved;
            self.data.copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
            if self.metric == Metric::Cosine {
                self.inv_norms[row] = self.inv_norms[last];
            }
            self.rows.insert(moved, row);
        }
        self.ids.pop();
        self.data.truncate(last * self.dim);
        if self.metric == Metric::Cosine {
            self.inv_norms.pop();
        }
        true
    }

    /// The exact score of a query (already normalized under the cosine metric) against a row.
    pub(crate) fn score(&self, query: &[f32], row: usize) -> f32 {
        self.score_of_dot(dot(query, self.row(row)), row)
    }

    /// The score of a row whose inner product with the query is `dot` (computed elsewhere, e.g.
    /// four rows at a time).
    pub(crate) fn score_of_dot(&self, dot: f32, row: usize) -> f32 {
        match self.metric {
            Metric::InnerProduct => dot,
            Metric::Cosine => dot * self.inv_norms[row],
        }
    }
}

/// Asks Linux to back `v`'s allocation with transparent huge pages (2 MiB) where the system
/// allows them on request (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise`, Debian's
/// default, or `always`). HNSW search reads a few hundred vectors per query at random rows, and
/// with 4 KiB pages nearly every one is also a TLB miss: asking for huge pages took this crate's
/// HNSW search of 100k × 384 (1,000 queries, two threads, release) from 29.9 to 26.5–27.9 ms here.
/// Called when the allocation has just grown, before the new rows are written, so their pages are
/// huge from their first touch. Advice only: a refusal changes nothing.
#[allow(unsafe_code)]
fn advise_huge_pages(v: &Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * size_of::<f32>();
        let (start, end) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if end > start && end - start >= 2 << 20 {
            // SAFETY: the range lies inside the vector's own allocation; MADV_HUGEPAGE changes
            // how pages are backed, never their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// `a · b` on this CPU's widest vectors ([`crate::distance`]).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::distance::dot(a, b)
}

pub(crate) fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Checks a vector batch: its width against its ids, no reserved id, no id twice, every value
/// finite and, under the cosine metric, no zero vector.
pub(crate) fn check_vectors(dim: usize, metric: Metric, ids: &[u64], vectors: &[f32]) -> Result<()> {
    if vectors.len() != ids.len() * dim {
        return Err(IndexError::Width {
            what: "vectors",
            dim,
            found: vectors.len(),
            detail: format!(" matching {} ids (expected {} values)", ids.len(), ids.len() * dim),
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (row, (&id, v)) in ids.iter().zip(vectors.chunks_exact(dim.max(1))).enumerate() {
        if id == NO_ID {
            return Err(IndexError::ReservedId { id });
        }
        if !seen.insert(id) {
            return Err(IndexError::IdExists { id });
        }
        if let Some(column) = v.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite { what: "vectors", row, id, column, value: v[column] });
        }
        if metric == Metric::Cosine && norm(v) == 0.0 {
            return Err(IndexError::Unrepresentable {
                row,
                id,
                reason: "is a zero vector, which has no direction under the cosine metric".into(),
            });
        }
    }
    Ok(())
}

/// Checks a query batch and returns the number of queries; under the cosine metric, returns the
/// queries normalized to unit length.
pub(crate) fn check_queries(dim: usize, metric: Metric, queries: &[f32], k: usize) -> Result<(usize, Vec<f32>)> {
    if k == 0 {
        return Err(IndexError::InvalidOption { field: "k", value: "0".into(), reason: "must be at least 1".into() });
    }
    if dim == 0 || !queries.len().is_multiple_of(dim) {
        return Err(IndexError::Width { what: "queries", dim, found: queries.len(), detail: String::new() });
    }
    let n = queries.len() / dim;
    let mut out = queries.to_vec();
    for (row, q) in out.chunks_exact_mut(dim).enumerate() {
        if let Some(column) = q.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite { what: "queries", row, id: row as u64, column, value: q[column] });
        }
        if metric == Metric::Cosine {
            let n = norm(q);
            if n == 0.0 {
                return Err(IndexError::InvalidOption {
                    field: "queries",
                    value: format!("row {row}"),
                    reason: "is a zero vector, which has no direction under the cosine metric".into(),
                });
            }
            q.iter_mut().for_each(|x| *x /= n);
        }
    }
    Ok((n, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_with_id_tie_break() {
        let mut t = TopK::new(3);
        for (i, s) in [0.5f32, 0.9, 0.1, 0.9, 0.7, 0.3].iter().enumerate() {
            t.push(Candidate { score: *s, id: 10 - i as u64, row: i });
        }
        let ids: Vec<u64> = t.into_sorted().iter().map(|c| c.id).collect();
        // Two 0.9s: ids 9 (row 1) and 7 (row 3); the lower id first.
        assert_eq!(ids, vec![7, 9, 6]);
    }

    #[test]
    fn removing_moves_the_last_row() {
        let mut t = VectorTable::new(2, Metric::InnerProduct);
        t.push(&[1, 2, 3], &[1., 1., 2., 2., 3., 3.]);
        assert!(t.remove(1));
        assert!(!t.remove(1));
        assert_eq!(t.vector(3), Some(&[3.0f32, 3.0][..]));
        assert_eq!(t.vector(2), Some(&[2.0f32, 2.0][..]));
        assert_eq!(t.len(), 2);
    }
}
