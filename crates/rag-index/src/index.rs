//! The [`VectorIndex`] trait and the index file format both implementations share.
//!
//! File layout (little-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `RAGINDEX` |
//! | 8 | format version (`u32`, currently 1) |
//! | 12 | kind (`u8`: 1 flat, 2 hnsw), metric (`u8`: 1 inner product, 2 cosine), storage scalar (`u8`: 1 f32, 2 f16, 3 i8), reserved |
//! | 16 | dim (`u32`), reserved (`u32`) |
//! | 24 | count (`u64`) |
//! | 32 | payload length in bytes (`u64`) |
//! | 40 | xxh3-64 of bytes 0..40 followed by the payload (`u64`) |
//! | 48 | 16 reserved bytes, then the payload |
//!
//! The payload starts with the `count` ids (`u64`) and the `count × dim` f32 vectors; an HNSW index
//! appends its parameters and usearch's serialized graph. The whole file is checked (length,
//! checksum, every field) before any byte of it reaches usearch.

use std::path::Path;

use crate::error::{IndexError, Result};
use crate::file::{AtomicFile, HashingWriter, Reader, check_preamble, checksum};
use crate::progress;
use crate::vectors::{Metric, SearchResults, VectorTable, check_vectors};

/// A top-K maximum-similarity index over `u64`-keyed f32 vectors.
///
/// Batches are row-major: `vectors` holds `ids.len() × dim` values, `queries` holds
/// `n_queries × dim`. Every method validates its input (width, finite values, known metric) and
/// returns an [`IndexError`] instead of panicking.
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// The vector dimension.
    fn dim(&self) -> usize;

    /// The similarity the index ranks by.
    fn metric(&self) -> Metric;

    /// Number of stored vectors.
    fn len(&self) -> usize;

    /// Whether the index holds no vector.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is stored.
    fn contains(&self, id: u64) -> bool {
        self.vector(id).is_some()
    }

    /// The stored f32 vector of `id`.
    fn vector(&self, id: u64) -> Option<&[f32]>;

    /// Adds vectors under new ids. An id that is already stored is an error ([`IndexError::IdExists`]);
    /// the batch is checked whole before anything is added, so a failed call changes nothing.
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()>;

    /// Removes ids; unknown ids are ignored. Returns how many were removed.
    fn remove(&mut self, ids: &[u64]) -> Result<usize>;

    /// Replaces the vectors of `ids` (adding those not yet stored): how a trainer refreshes embeddings
    /// after the document encoder changed, without rebuilding the index. The batch is checked whole
    /// first, so a failed call changes nothing.
    fn update(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        check_vectors(self.dim(), self.metric(), ids, vectors)?;
        self.remove(ids)?;
        self.add(ids, vectors)
    }

    /// The `k` best stored vectors for each query, best first; see [`SearchResults`].
    fn search(&self, queries: &[f32], k: usize) -> Result<SearchResults>;

    /// Writes the index to `path` atomically (a temporary file renamed over `path`).
    fn save(&self, path: &Path) -> Result<()>;

    /// Reads an index written by [`VectorIndex::save`], refusing a truncated or corrupted file, a
    /// file of another kind and one from an unknown format version.
    fn load(path: &Path) -> Result<Self>
    where
        Self: Sized;

    /// Heap bytes the index holds, vectors, ids and graph included.
    fn memory_bytes(&self) -> usize;
}

/// Which implementation wrote an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// [`crate::FlatIndex`].
    Flat,
    /// [`crate::HnswIndex`].
    Hnsw,
}

impl IndexKind {
    fn code(self) -> u8 {
        match self {
            IndexKind::Flat => 1,
            IndexKind::Hnsw => 2,
        }
    }
}

pub(crate) const MAGIC: &[u8; 8] = b"RAGINDEX";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 64;

/// The fixed fields of an index file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) kind: IndexKind,
    pub(crate) metric: Metric,
    pub(crate) scalar: u8,
    pub(crate) dim: usize,
    pub(crate) count: usize,
}

/// An empty index of `dim`-wide vectors under `metric`: exact search ([`crate::FlatIndex`]) when
/// `hnsw` is `None`, else [`crate::HnswIndex`] with that vector storage and the default graph
/// settings ([`crate::HnswConfig::default`]).
pub fn empty_index(dim: usize, metric: Metric, hnsw: Option<crate::Storage>) -> Result<Box<dyn VectorIndex>> {
    Ok(match hnsw {
        None => Box::new(crate::FlatIndex::new(dim, metric)?),
        Some(storage) => {
            Box::new(crate::HnswIndex::new(dim, crate::HnswConfig { metric, storage, ..crate::HnswConfig::default() })?)
        }
    })
}

/// Opens an index file of either kind.
pub fn open_index(path: &Path) -> Result<Box<dyn VectorIndex>> {
    let (header, bytes) = read_index_file(path, None)?;
    Ok(match header.kind {
        IndexKind::Flat => Box::new(crate::FlatIndex::from_file(path, header, &bytes)?),
        IndexKind::Hnsw => Box::new(crate::HnswIndex::from_file(path, header, &bytes)?),
    })
}

/// Writes header, ids and vectors, then whatever `extra` appends, with a progress bar over the bytes.
pub(crate) fn write_index_file(
    path: &Path,
    header: Header,
    table: &VectorTable,
    extra: impl FnOnce(&mut HashingWriter<'_>) -> Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let mut head = [0u8; HEADER_LEN];
    head[0..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[12] = header.kind.code();
    head[13] = header.metric.code();
    head[14] = header.scalar;
    let dim = u32::try_from(header.dim).map_err(|_| IndexError::InvalidOption {
        field: "dim",
        value: header.dim.to_string(),
        reason: "must fit in 32 bits".into(),
    })?;
    head[16..20].copy_from_slice(&dim.to_le_bytes());
    head[24..32].copy_from_slice(&(header.count as u64).to_le_bytes());
    file.write_all(&head)?;

    let bar = progress::bytes_bar((table.data().len() * 4) as u64, "saving index");
    let mut w = HashingWriter::new(&mut file);
    w.put_u64s(table.ids())?;
    w.put_f32s(table.data(), |n| bar.inc(n))?;
    extra(&mut w)?;
    let payload_len = w.written;
    // The checksum covers the header's fixed fields too, so a flipped dim or count is caught.
    head[32..40].copy_from_slice(&payload_len.to_le_bytes());
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&head[0..40]);
    let payload_digest = w.hasher.digest128();
    // Fold the streamed payload hash into the final checksum (hashing the 128-bit payload digest
    // after the header is as strong as hashing the payload itself for corruption detection).
    h.update(&payload_digest.to_le_bytes());
    file.patch(32, &payload_len.to_le_bytes())?;
    file.patch(40, &h.digest().to_le_bytes())?;
    bar.finish_and_clear();
    file.commit()
}

/// Reads a whole index file and checks magic, version, kind, lengths and checksum.
pub(crate) fn read_index_file(path: &Path, expect: Option<IndexKind>) -> Result<(Header, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    let mut r = check_preamble(&bytes, path, HEADER_LEN, MAGIC, "rag-index file", FORMAT_VERSION)?;
    let kind = match r.u8("kind")? {
        1 => IndexKind::Flat,
        2 => IndexKind::Hnsw,
        other => return Err(IndexError::corrupt(path, format!("unknown index kind {other}"))),
    };
    let metric_code = r.u8("metric")?;
    let metric = Metric::from_code(metric_code)
        .ok_or_else(|| IndexError::corrupt(path, format!("unknown metric code {metric_code}")))?;
    let scalar = r.u8("scalar")?;
    r.u8("reserved")?;
    let dim = r.u32("dim")? as usize;
    r.u32("reserved")?;
    let count = r.u64("count")?;
    let payload_len = r.u64("payload_len")?;
    let stored = r.u64("checksum")?;
    let actual_len = (bytes.len() - HEADER_LEN) as u64;
    if payload_len != actual_len {
        return Err(IndexError::corrupt(
            path,
            format!("truncated or extended: header says {payload_len} payload bytes, the file has {actual_len}"),
        ));
    }
    let payload_digest = xxhash_rust::xxh3::xxh3_128(&bytes[HEADER_LEN..]);
    let computed = checksum(&[&bytes[0..40], &payload_digest.to_le_bytes()]);
    if computed != stored {
        return Err(IndexError::corrupt(
            path,
            format!("checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the file is corrupted"),
        ));
    }
    if let Some(expect) = expect
        && expect != kind
    {
        return Err(IndexError::corrupt(path, format!("holds a {kind:?} index, not a {expect:?} index")));
    }
    if dim == 0 {
        return Err(IndexError::corrupt(path, "field `dim` is 0"));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|c| c.checked_mul(dim * 4 + 8).is_some_and(|b| b as u64 <= payload_len))
        .ok_or_else(|| IndexError::corrupt(path, format!("field `count` = {count} does not fit the payload")))?;
    Ok((Header { kind, metric, scalar, dim, count }, bytes))
}

/// Reads the ids and vectors at the start of the payload into a table, refusing duplicate ids and
/// non-finite values (which a valid checksum makes unlikely, but a file can be written by a bug).
pub(crate) fn read_table<'a>(path: &'a Path, header: &Header, bytes: &'a [u8]) -> Result<(VectorTable, Reader<'a>)> {
    let mut r = Reader::new(&bytes[HEADER_LEN..], path);
    let ids = r.u64s(header.count, "ids")?;
    let data = r.f32s(header.count * header.dim, "vectors")?;
    let mut table = VectorTable::new(header.dim, header.metric);
    table.check_batch(&ids, &data, false).map_err(|e| IndexError::corrupt(path, format!("stored vectors: {e}")))?;
    table.push(&ids, &data);
    Ok((table, r))
}
