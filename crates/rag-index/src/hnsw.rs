//! Approximate search on usearch's HNSW graph, with exact scores from an f32 side store.
//!
//! usearch (Vardanian, <https://github.com/unum-cloud/usearch>) keeps the graph and its own copy of
//! the vectors, possibly quantized to f16 or i8. This crate keeps the f32 vectors beside it, so the
//! hits' vectors and scores are exact whatever the storage: usearch proposes `k × rerank`
//! candidates, they are rescored on the f32 vectors and the best `k` are returned.
//!
//! usearch builds and updates the graph. With f32 storage, searches walk it with this crate's own
//! loop ([`crate::hnsw_graph`]): the same algorithm on the same graph, with distances measured four
//! vectors at a time on the side store: 1,000 queries over 100k × 384 at ef 16 took 28.7 ms where
//! usearch's one-at-a-time loop took 47.0 (FAISS: 23.1–23.3 ms in the same runs). The graph is
//! read out of usearch's serialization on the first search after a change; where it cannot be
//! (removed nodes, another format), usearch searches as before.
//!
//! Quirks handled here:
//! - usearch's `IndexOptions::default()` is cosine with bf16 storage; the metric and scalar kind are
//!   always set from [`HnswConfig`].
//! - usearch's own f32 → i8 cast scales every vector to unit length (`cast_to_i8_gt`), which keeps
//!   cosine rankings but turns an inner-product index into a cosine one. Under the inner-product
//!   metric this crate quantizes itself instead, with one scale for the whole index (`127 / max|x|`
//!   of the first batch added; later values beyond it are clamped), so i8 dot products stay
//!   proportional to the f32 ones. Each query gets its own scale, which does not change a ranking.
//! - Every batch and every file is validated before a byte reaches the C++ side.

use std::path::Path;
use std::sync::OnceLock;

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{IndexError, Result, usearch_err};
use crate::hnsw_graph::Graph;
use crate::index::{Header, IndexKind, VectorIndex, read_index_file, read_table, write_index_file};
use crate::progress;
use crate::vectors::{Candidate, Metric, SearchResults, VectorTable, check_queries, sort_best_first};

/// How usearch stores the vectors it searches on (the f32 side store is kept in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// 4 bytes per component.
    F32,
    /// IEEE half precision, 2 bytes per component.
    F16,
    /// 1 byte per component: under the inner-product metric with one scale for the whole index,
    /// under cosine after usearch scales each vector to unit length.
    I8,
}

impl Storage {
    fn code(self) -> u8 {
        match self {
            Storage::F32 => 1,
            Storage::F16 => 2,
            Storage::I8 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Storage::F32),
            2 => Some(Storage::F16),
            3 => Some(Storage::I8),
            _ => None,
        }
    }

    fn scalar_kind(self) -> ScalarKind {
        match self {
            Storage::F32 => ScalarKind::F32,
            Storage::F16 => ScalarKind::F16,
            Storage::I8 => ScalarKind::I8,
        }
    }
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Storage::F32),
            "f16" => Ok(Storage::F16),
            "i8" => Ok(Storage::I8),
            other => Err(format!("unknown storage `{other}` (expected f32, f16 or i8)")),
        }
    }
}

/// The parameters of an [`HnswIndex`]. The defaults are usearch's graph defaults with this crate's
/// metric (inner product) and storage (f32).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HnswConfig {
    /// The similarity to rank by.
    pub metric: Metric,
    /// How usearch stores vectors.
    pub storage: Storage,
    /// Edges per node (HNSW's `M`); more is slower to build and more accurate.
    pub connectivity: usize,
    /// Candidate list size while inserting (`efConstruction`).
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef`); can be changed after building.
    pub expansion_search: usize,
    /// Candidates fetched per requested hit before exact rescoring (`k × rerank`).
    pub rerank: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            metric: Metric::InnerProduct,
            storage: Storage::F32,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            rerank: 1,
        }
    }
}

impl HnswConfig {
    fn check(&self) -> Result<()> {
        let positive = |field: &'static str, v: usize| {
            if v == 0 {
                Err(IndexError::InvalidOption { field, value: "0".into(), reason: "must be at least 1".into() })
            } else {
                Ok(())
            }
        };
        positive("expansion_add", self.expansion_add)?;
        positive("expansion_search", self.expansion_search)?;
        positive("rerank", self.rerank)?;
        if self.connectivity < 2 {
            return Err(IndexError::InvalidOption {
                field: "connectivity",
                value: self.connectivity.to_string(),
                reason: "must be at least 2".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn options(&self, dim: usize) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            metric: match self.metric {
                Metric::InnerProduct => MetricKind::IP,
                Metric::Cosine => MetricKind::Cos,
            },
            quantization: self.storage.scalar_kind(),
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            multi: false,
        }
    }
}

/// usearch's HNSW graph plus the exact f32 vectors of every id.
pub struct HnswIndex {
    config: HnswConfig,
    table: VectorTable,
    index: Index,
    /// `127 / max|x|` of the first batch, when this crate quantizes to i8 itself (inner product).
    i8_scale: Option<f32>,
    /// Vectors removed or replaced since the graph was built. usearch reuses a removed node's slot
    /// for the next insertion while its old neighbours still point at it, so heavy churn degrades
    /// recall (0.95 → below 0.9 after a few full refreshes in a test); past half the index, `update`
    /// rebuilds the graph from the f32 side store instead.
    churn: usize,
    /// usearch serves at most `slots.total` concurrent calls (one search context each) and fails
    /// the others; callers beyond that wait here instead (a large rayon pool, several user threads).
    slots: ThreadSlots,
    /// usearch's graph in this crate's own arrays, searched with four distances at a time on the
    /// side store ([`crate::hnsw_graph`]): f32 storage only, read out of usearch on the first
    /// search after a change (or from the file on load). `None` inside: usearch searches.
    graph: OnceLock<Option<Graph>>,
}

/// A counting semaphore over usearch's per-thread search contexts.
#[derive(Debug)]
struct ThreadSlots {
    /// usearch's reserved thread count; never changes after construction.
    total: usize,
    free: std::sync::Mutex<usize>,
    released: std::sync::Condvar,
}

struct SlotGuard<'a>(&'a ThreadSlots);

impl ThreadSlots {
    fn new(n: usize) -> Self {
        Self { total: n, free: std::sync::Mutex::new(n), released: std::sync::Condvar::new() }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        // A poisoned lock only means another caller panicked; the count itself is still right.
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.released.notify_one();
    }
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("config", &self.config)
            .field("dim", &self.table.dim())
            .field("len", &self.table.len())
            .finish()
    }
}

impl HnswIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, config: HnswConfig) -> Result<Self> {
        config.check()?;
        if dim == 0 || u32::try_from(dim).is_err() {
            return Err(IndexError::InvalidOption {
                field: "dim",
                value: dim.to_string(),
                reason: "must be between 1 and 2^32 - 1".into(),
            });
        }
        let mut index = Index::new(&config.options(dim)).map_err(usearch_err)?;
        use_own_distance(&mut index, &config, dim);
        Ok(Self {
            config,
            table: VectorTable::new(dim, config.metric),
            index,
            i8_scale: None,
            churn: 0,
            slots: ThreadSlots::new(Self::threads()),
            graph: OnceLock::new(),
        })
    }

    /// Whether vectors are quantized to i8 here rather than by usearch.
    fn own_i8(&self) -> bool {
        self.config.storage == Storage::I8 && self.config.metric == Metric::InnerProduct
    }

    fn add_one(&self, index: &Index, id: u64, v: &[f32]) -> Result<()> {
        let _slot = self.slots.acquire();
        match self.i8_scale.filter(|_| self.own_i8()) {
            Some(scale) => index.add(id, &quantize(v, scale)),
            None => index.add(id, v),
        }
        .map_err(usearch_err)
    }

    /// A fresh graph over every vector of the side store.
    fn build_graph(&self) -> Result<Index> {
        let mut index = Index::new(&self.config.options(self.table.dim())).map_err(usearch_err)?;
        use_own_distance(&mut index, &self.config, self.table.dim());
        index.reserve_capacity_and_threads(self.table.len(), self.slots.total).map_err(usearch_err)?;
        let bar = progress::items_bar(self.table.len() as u64, "rebuilding HNSW graph");
        (0..self.table.len()).into_par_iter().try_for_each(|row| {
            bar.inc(1);
            self.add_one(&index, self.table.ids()[row], self.table.row(row))
        })?;
        bar.finish_and_clear();
        Ok(index)
    }

    fn search_one(&self, q: &[f32], count: usize) -> Result<usearch::ffi::Matches> {
        let _slot = self.slots.acquire();
        if self.own_i8() {
            let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { 127.0 / max } else { 1.0 };
            self.index.search(&quantize(q, scale), count)
        } else {
            self.index.search(q, count)
        }
        .map_err(usearch_err)
    }

    /// The graph [`crate::hnsw_graph`] searches, read out of usearch once after each change;
    /// `None` where usearch must search (f16 or i8 storage, removed nodes, another format).
    fn own_graph(&self) -> Option<&Graph> {
        if self.config.storage != Storage::F32 {
            return None;
        }
        self.graph
            .get_or_init(|| {
                let mut blob = vec![0u8; self.index.serialized_length()];
                self.index.save_to_buffer(&mut blob).ok()?;
                Graph::parse(&blob, &self.table)
            })
            .as_ref()
    }

    /// Whether [`VectorIndex::search`] runs this crate's own walk of the graph (f32 storage and no
    /// removed node since the graph was built) rather than usearch's: the same hits, measured four
    /// vectors at a time. Reading the graph out of usearch, after a change, happens here or on
    /// the next search.
    pub fn searches_own_graph(&self) -> bool {
        self.own_graph().is_some()
    }

    /// [`VectorIndex::search`] on this crate's own search of the graph where it serves (`own`
    /// true, f32 storage, no removed nodes), else through usearch. Both walk the same graph with
    /// the same candidate lists and return the same hits, up to ties and rounding: usearch's
    /// path is public so tests and benchmarks can compare the two.
    pub fn search_on(&self, queries: &[f32], k: usize, own: bool) -> Result<SearchResults> {
        let dim = self.table.dim();
        let (n_queries, queries) = check_queries(dim, self.table.metric(), queries, k)?;
        let mut out = SearchResults::padded(n_queries, k, dim);
        if self.table.len() == 0 || n_queries == 0 {
            return Ok(out);
        }
        let wanted = k.saturating_mul(self.config.rerank).min(self.table.len());
        let graph = if own { self.own_graph() } else { None };
        // Each query writes its own slice of the results: the hits' vectors (k·dim floats a
        // query) are copied in parallel, not afterwards on one thread.
        out.par_queries_mut().zip(queries.par_chunks_exact(dim)).try_for_each(|(mut slot, q)| {
            let mut hits: Vec<Candidate> = match graph {
                Some(graph) => graph.search(&self.table, q, self.config.expansion_search, wanted),
                None => self
                    .search_one(q, wanted)?
                    .keys
                    .iter()
                    .filter_map(|&id| {
                        let row = self.table.row_of(id)?;
                        Some(Candidate { score: self.table.score(q, row), id, row })
                    })
                    .collect(),
            };
            sort_best_first(&mut hits);
            slot.fill(&hits, &self.table);
            Ok::<(), IndexError>(())
        })?;
        Ok(out)
    }

    /// The index's parameters.
    pub fn config(&self) -> &HnswConfig {
        &self.config
    }

    /// Changes the search-time candidate list size (`ef`): larger is slower and more accurate.
    pub fn set_expansion_search(&mut self, expansion: usize) -> Result<()> {
        if expansion == 0 {
            return Err(IndexError::InvalidOption {
                field: "expansion_search",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        self.index.change_expansion_search(expansion);
        self.config.expansion_search = expansion;
        Ok(())
    }

    /// Changes how many candidates per hit are rescored exactly.
    pub fn set_rerank(&mut self, rerank: usize) -> Result<()> {
        if rerank == 0 {
            return Err(IndexError::InvalidOption {
                field: "rerank",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        self.config.rerank = rerank;
        Ok(())
    }

    /// Bytes held by usearch (graph and its copy of the vectors), without the f32 side store.
    pub fn graph_bytes(&self) -> usize {
        self.index.memory_usage()
    }

    /// Concurrent usearch calls to reserve contexts for: rayon's threads (parallel add and search)
    /// or the machine's cores, whichever is more.
    fn threads() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::current_num_threads().max(cores)
    }

    pub(crate) fn from_file(path: &Path, header: Header, bytes: &[u8]) -> Result<Self> {
        let storage = Storage::from_code(header.scalar)
            .ok_or_else(|| IndexError::corrupt(path, format!("unknown storage scalar code {}", header.scalar)))?;
        let (table, mut r) = read_table(path, &header, bytes)?;
        let max = u32::MAX as u64;
        let config = HnswConfig {
            metric: header.metric,
            storage,
            connectivity: r.len("connectivity", max)?,
            expansion_add: r.len("expansion_add", max)?,
            expansion_search: r.len("expansion_search", max)?,
            rerank: r.len("rerank", max)?,
        };
        let scale_bits = r.u64("i8_scale")?;
        let i8_scale = (scale_bits != 0).then(|| f32::from_bits(scale_bits as u32));
        if i8_scale.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(IndexError::corrupt(path, format!("field `i8_scale` = {i8_scale:?} is not a positive number")));
        }
        config.check().map_err(|e| IndexError::corrupt(path, e.to_string()))?;
        let blob_len = r.len("graph_len", bytes.len() as u64)?;
        let blob = r.take(blob_len, "graph")?;
        r.finish()?;

        // The checksum has passed; still check usearch's own header against ours before loading.
        let meta =
            Index::metadata_from_buffer(blob).map_err(|e| IndexError::corrupt(path, format!("graph header: {e}")))?;
        let opts = config.options(header.dim);
        if meta.dimensions != header.dim as u64
            || meta.metric != opts.metric
            || meta.quantization != opts.quantization
            || meta.multi
            || meta.count_present != header.count as u64
        {
            return Err(IndexError::corrupt(
                path,
                format!(
                    "graph header (dim {}, metric {:?}, scalar {:?}, {} vectors) disagrees with the file header (dim {}, {}, {:?}, {} vectors)",
                    meta.dimensions,
                    meta.metric,
                    meta.quantization,
                    meta.count_present,
                    header.dim,
                    header.metric,
                    storage,
                    header.count
                ),
            ));
        }
        let mut index = Index::new(&opts).map_err(usearch_err)?;
        index.load_from_buffer(blob).map_err(|e| IndexError::corrupt(path, format!("graph: {e}")))?;
        // Loading resets usearch to its built-in metric: this crate's kernel goes back in after.
        use_own_distance(&mut index, &config, header.dim);
        let slots = ThreadSlots::new(Self::threads());
        index.reserve_capacity_and_threads(index.capacity().max(table.len()), slots.total).map_err(usearch_err)?;
        index.change_expansion_search(config.expansion_search);
        index.change_expansion_add(config.expansion_add);
        if index.size() != table.len() {
            return Err(IndexError::corrupt(
                path,
                format!("graph holds {} vectors, the side store {}", index.size(), table.len()),
            ));
        }
        if let Some(&id) = table.ids().iter().find(|&&id| !index.contains(id)) {
            return Err(IndexError::corrupt(path, format!("id {id} is in the side store but not in the graph")));
        }
        let graph = OnceLock::new();
        if config.storage == Storage::F32 {
            let _ = graph.set(Graph::parse(blob, &table));
        }
        Ok(Self { config, table, index, i8_scale, churn: 0, slots, graph })
    }
}

/// Makes usearch compute f32 distances with this crate's kernels ([`crate::distance`]: f32
/// accumulators, AVX-512 or AVX2 picked at run time) instead of numkong's, which sums f32 inner
/// products in f64 one register at a time and was half of an HNSW search's time here. The
/// distances are usearch's own definitions: `1 − a·b` under the inner product, `1 − a·b / (|a| |b|)`
/// under cosine. f16 and i8 storage keep usearch's kernels. usearch resets a loaded index to its
/// built-in metric, so this runs after every load as well as on every new index.
#[allow(unsafe_code)]
fn use_own_distance(index: &mut Index, config: &HnswConfig, dim: usize) {
    if config.storage != Storage::F32 {
        return;
    }
    // SAFETY (both closures): usearch calls the metric with two vectors of this index, each `dim`
    // f32 values (its dimension, fixed when the index was made), valid for the call.
    let metric: Box<dyn Fn(*const f32, *const f32) -> f32 + Send + Sync> = match config.metric {
        Metric::InnerProduct => Box::new(move |a, b| {
            let (a, b) = unsafe { (std::slice::from_raw_parts(a, dim), std::slice::from_raw_parts(b, dim)) };
            1.0 - crate::distance::dot(a, b)
        }),
        Metric::Cosine => Box::new(move |a, b| {
            let (a, b) = unsafe { (std::slice::from_raw_parts(a, dim), std::slice::from_raw_parts(b, dim)) };
            let (ab, aa, bb) = crate::distance::dot_and_norms(a, b);
            // A zero vector has no direction (this crate refuses them under cosine).
            if aa == 0.0 || bb == 0.0 { 1.0 } else { 1.0 - ab / (aa * bb).sqrt() }
        }),
    };
    index.change_metric(metric);
}

/// Rounds `v × scale` to i8, clamping to ±127.
fn quantize(v: &[f32], scale: f32) -> Vec<i8> {
    v.iter().map(|&x| (x * scale).round().clamp(-127.0, 127.0) as i8).collect()
}

impl VectorIndex for HnswIndex {
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
        // The graph changes (even a failed add removes what it inserted): read it again on use.
        self.graph = OnceLock::new();
        let needed = self.index.size() + ids.len();
        if needed > self.index.capacity() {
            // Grow geometrically so that repeated small adds stay amortized O(1).
            let capacity = needed.max(self.index.capacity() + self.index.capacity() / 2);
            self.index.reserve_capacity_and_threads(capacity, self.slots.total).map_err(usearch_err)?;
        }
        let dim = self.table.dim();
        if self.own_i8() && self.i8_scale.is_none() && !ids.is_empty() {
            let max = vectors.iter().fold(0f32, |m, x| m.max(x.abs()));
            self.i8_scale = Some(if max > 0.0 { 127.0 / max } else { 1.0 });
        }
        let bar = progress::items_bar(ids.len() as u64, "building HNSW graph");
        let this = &*self;
        let failed = ids
            .par_iter()
            .zip(vectors.par_chunks_exact(dim))
            .map(|(&id, v)| {
                let r = this.add_one(&this.index, id, v);
                bar.inc(1);
                r.err().map(|e| (id, e))
            })
            .find_any(Option::is_some)
            .flatten();
        bar.finish_and_clear();
        if let Some((id, e)) = failed {
            // Leave the index as it was: take back whatever this batch managed to insert.
            for &id in ids {
                if self.index.contains(id) {
                    let _ = self.index.remove(id);
                }
            }
            return Err(IndexError::Usearch(format!("adding id {id}: {e}")));
        }
        self.table.push(ids, vectors);
        Ok(())
    }

    fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        self.graph = OnceLock::new();
        let mut removed = 0;
        for &id in ids {
            if self.table.row_of(id).is_some() {
                self.index.remove(id).map_err(usearch_err)?;
                self.table.remove(id);
                removed += 1;
            }
        }
        self.churn += removed;
        Ok(removed)
    }

    /// Remove + add on the graph; once the vectors replaced since the graph was built exceed half
    /// the index, the side store is updated and the graph rebuilt from it (see `churn`).
    fn update(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        self.table.check_batch(ids, vectors, true)?;
        // Every path below changes the graph or the side store: read the graph again on use.
        self.graph = OnceLock::new();
        if 2 * (self.churn + ids.len()) <= self.table.len() {
            self.remove(ids)?;
            return self.add(ids, vectors);
        }
        let dim = self.table.dim();
        let mut previous = Vec::new();
        let mut added = Vec::new();
        for (&id, v) in ids.iter().zip(vectors.chunks_exact(dim)) {
            match self.table.row_of(id) {
                Some(row) => {
                    previous.push((row, self.table.row(row).to_vec()));
                    self.table.overwrite(row, v);
                }
                None => {
                    added.push(id);
                    self.table.push(&[id], v);
                }
            }
        }
        match self.build_graph() {
            Ok(index) => {
                self.index = index;
                self.churn = 0;
                Ok(())
            }
            Err(e) => {
                // Put the side store back as it was, so a failed call changes nothing.
                previous.iter().for_each(|(row, v)| self.table.overwrite(*row, v));
                added.iter().for_each(|&id| {
                    self.table.remove(id);
                });
                Err(e)
            }
        }
    }

    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResults> {
        self.search_on(queries, k, true)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let header = Header {
            kind: IndexKind::Hnsw,
            metric: self.metric(),
            scalar: self.config.storage.code(),
            dim: self.dim(),
            count: self.len(),
        };
        let mut blob = vec![0u8; self.index.serialized_length()];
        self.index.save_to_buffer(&mut blob).map_err(usearch_err)?;
        write_index_file(path, header, &self.table, |w| {
            for v in
                [self.config.connectivity, self.config.expansion_add, self.config.expansion_search, self.config.rerank]
            {
                w.put_u64(v as u64)?;
            }
            w.put_u64(self.i8_scale.map_or(0, |s| s.to_bits() as u64))?;
            w.put_u64(blob.len() as u64)?;
            w.put(&blob)
        })
    }

    fn load(path: &Path) -> Result<Self> {
        let (header, bytes) = read_index_file(path, Some(IndexKind::Hnsw))?;
        Self::from_file(path, header, &bytes)
    }

    fn memory_bytes(&self) -> usize {
        let graph = self.graph.get().and_then(Option::as_ref).map_or(0, Graph::bytes);
        self.table.bytes() + self.index.memory_usage() + graph
    }
}
