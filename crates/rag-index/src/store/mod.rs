//! The passage store: passages (`id`, `title`, `text`) in one memory-mapped file, looked up by id in
//! O(1) through an on-disk hash table, so a corpus larger than RAM (DPR's 21M-passage Wikipedia is
//! 13 GB of text) costs only the pages that are read.
//!
//! File layout (little-endian):
//!
//! | section | content |
//! |---|---|
//! | header, 64 bytes | magic `RAGPSGS1`, version `u32`, reserved `u32`, count `u64`, records length `u64`, hash slots `u64`, tables checksum `u64`, records checksum `u64`, reserved `u64` |
//! | records | per passage: title length `u32`, title, text (UTF-8) |
//! | padding | to a multiple of 8 |
//! | offsets | `count + 1` `u64`: record `i` spans `offsets[i]..offsets[i+1]` |
//! | ids | `count` `u64` |
//! | hash slots | `u32` per slot: `row + 1`, or 0 when empty; open addressing with linear probing |
//!
//! [`PassageStore::open`] checks the header, the file length, the tables' checksum and that offsets
//! are monotone and in bounds, in time proportional to the passage count without reading the text.
//! [`PassageStore::verify`] also checks the records' checksum and UTF-8, reading everything once.

mod ingest;

pub use ingest::{Chunking, IngestOptions, IngestReport, InputFormat, OnDuplicate, OnMalformed, StoreBuilder};

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{IndexError, Result};
use crate::file::{check_preamble, checksum};

pub(crate) const MAGIC: &[u8; 8] = b"RAGPSGS1";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 64;

/// One passage, borrowed from the store's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passage<'a> {
    /// The passage id.
    pub id: u64,
    /// The title of the document it comes from (may be empty).
    pub title: &'a str,
    /// The passage text (never empty).
    pub text: &'a str,
}

/// The slot of `id` in a table of `mask + 1` slots (splitmix64's finalizer: ids are often
/// consecutive, and consecutive keys must not land in consecutive slots).
pub(crate) fn slot_of(id: u64, mask: u64) -> usize {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) & mask) as usize
}

/// A read-only, memory-mapped passage store; build one with [`StoreBuilder`].
///
/// ```
/// use rag_index::{PassageStore, StoreBuilder};
///
/// let dir = std::env::temp_dir().join(format!("rag-index-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("passages.rps");
/// let mut builder = StoreBuilder::create(&path)?;
/// builder.push(Some(7), "Aaron", "Aaron is a prophet in the Hebrew Bible.")?;
/// builder.push(None, "Zurich", "Zurich is the largest city in Switzerland.")?;
/// let store: PassageStore = builder.finish()?;
/// assert_eq!(store.len(), 2);
/// assert_eq!(store.get(7)?.unwrap().title, "Aaron");
/// assert_eq!(store.get(1)?.unwrap().text, "Zurich is the largest city in Switzerland.");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PassageStore {
    path: PathBuf,
    map: Mmap,
    count: usize,
    records_len: usize,
    offsets_at: usize,
    ids_at: usize,
    slots_at: usize,
    slots: usize,
    tables_checksum: u64,
    records_checksum: u64,
}

impl PassageStore {
    /// Opens a store, checking its header, length, tables checksum and offsets.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| IndexError::io(path, e))?;
        let map = map_file(&file).map_err(|e| IndexError::io(path, e))?;
        let mut r = check_preamble(&map, path, HEADER_LEN, MAGIC, "passage store", FORMAT_VERSION)?;
        r.u32("reserved")?;
        let file_len = map.len() as u64;
        let count = r.len("count", file_len / 12)?;
        let records_len = r.len("records_len", file_len)?;
        let slots = r.len("slots", file_len / 4)?;
        let tables_checksum = r.u64("tables_checksum")?;
        let records_checksum = r.u64("records_checksum")?;
        if count > u32::MAX as usize - 1 || !slots.is_power_of_two() || slots < count {
            return Err(IndexError::corrupt(
                path,
                format!("inconsistent header: {count} passages, {slots} hash slots"),
            ));
        }
        let offsets_at = (HEADER_LEN + records_len).next_multiple_of(8);
        let ids_at = offsets_at + 8 * (count + 1);
        let slots_at = ids_at + 8 * count;
        let expected_len = slots_at + 4 * slots;
        if map.len() != expected_len {
            return Err(IndexError::corrupt(
                path,
                format!("truncated or extended: the header implies {expected_len} bytes, the file has {}", map.len()),
            ));
        }
        let computed = checksum(&[&map[0..40], &map[offsets_at..]]);
        if computed != tables_checksum {
            return Err(IndexError::corrupt(
                path,
                format!(
                    "tables checksum mismatch (stored {tables_checksum:#018x}, computed {computed:#018x}): the file is corrupted"
                ),
            ));
        }
        let store = Self {
            path: path.to_path_buf(),
            map,
            count,
            records_len,
            offsets_at,
            ids_at,
            slots_at,
            slots,
            tables_checksum,
            records_checksum,
        };
        let mut prev = 0u64;
        for i in 0..=count {
            let o = store.offset(i);
            if o < prev || o > records_len as u64 || (i == 0 && o != 0) || (i == count && o != records_len as u64) {
                return Err(IndexError::corrupt(path, format!("offsets[{i}] = {o} is out of order or out of bounds")));
            }
            prev = o;
        }
        Ok(store)
    }

    /// Checks the records' checksum and that every record decodes (reads the whole file once).
    pub fn verify(&self) -> Result<()> {
        let records = &self.map[HEADER_LEN..HEADER_LEN + self.records_len];
        let computed = checksum(&[records]);
        if computed != self.records_checksum {
            return Err(IndexError::corrupt(
                &self.path,
                format!(
                    "records checksum mismatch (stored {:#018x}, computed {computed:#018x}): the file is corrupted",
                    self.records_checksum
                ),
            ));
        }
        (0..self.count).try_for_each(|row| self.by_row(row).map(|_| ()))
    }

    /// A digest of the store's contents as written (its ids, offsets and hash tables, and the
    /// checksum of its titles and texts), to tie a file derived from the store (a BM25 index)
    /// to this version of it. Read from the header: it costs nothing, and it is only as sound
    /// as the file ([`PassageStore::verify`] checks the records against it).
    pub fn fingerprint(&self) -> u64 {
        self.tables_checksum ^ self.records_checksum.rotate_left(32)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of passages.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the store holds no passage.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of passage records (titles and texts).
    pub fn text_bytes(&self) -> usize {
        self.records_len
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes"))
    }

    fn offset(&self, i: usize) -> u64 {
        self.u64_at(self.offsets_at + 8 * i)
    }

    /// The id of the passage in row `row` (storage order).
    pub fn id_at(&self, row: usize) -> Option<u64> {
        (row < self.count).then(|| self.u64_at(self.ids_at + 8 * row))
    }

    /// The row of `id`, in O(1) expected time.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        let mask = (self.slots - 1) as u64;
        let mut s = slot_of(id, mask);
        for _ in 0..self.slots {
            let at = self.slots_at + 4 * s;
            let v = u32::from_le_bytes(self.map[at..at + 4].try_into().expect("4 bytes")) as usize;
            if v == 0 || v > self.count {
                return None;
            }
            if self.id_at(v - 1) == Some(id) {
                return Some(v - 1);
            }
            s = (s + 1) & mask as usize;
        }
        None
    }

    /// The passage with id `id`, or `None` if there is none. An error means the record is corrupt.
    pub fn get(&self, id: u64) -> Result<Option<Passage<'_>>> {
        self.row_of(id).map(|row| self.by_row(row)).transpose()
    }

    /// The passage in row `row` (storage order, the order of ingestion).
    pub fn by_row(&self, row: usize) -> Result<Passage<'_>> {
        let id = self.id_at(row).ok_or_else(|| IndexError::InvalidOption {
            field: "row",
            value: row.to_string(),
            reason: format!("the store has {} passages", self.count),
        })?;
        let (start, end) = (self.offset(row) as usize, self.offset(row + 1) as usize);
        let record = &self.map[HEADER_LEN + start..HEADER_LEN + end];
        let bad = |what: String| IndexError::corrupt(&self.path, format!("passage row {row} (id {id}): {what}"));
        if record.len() < 4 {
            return Err(bad(format!("record of {} bytes has no title length", record.len())));
        }
        let title_len = u32::from_le_bytes(record[0..4].try_into().expect("4 bytes")) as usize;
        if title_len > record.len() - 4 {
            return Err(bad(format!("title length {title_len} exceeds the record")));
        }
        let title = std::str::from_utf8(&record[4..4 + title_len]).map_err(|e| bad(format!("title: {e}")))?;
        let text = std::str::from_utf8(&record[4 + title_len..]).map_err(|e| bad(format!("text: {e}")))?;
        Ok(Passage { id, title, text })
    }

    /// All passages in storage order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Passage<'_>>> + '_ {
        (0..self.count).map(|row| self.by_row(row))
    }
}

/// Maps a store file read-only.
#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this store. Store files are written once, to a
    // temporary name, and renamed into place (never modified in place), so the bytes behind the
    // mapping do not change while it lives unless another program truncates the file, which the
    // memmap2 contract (and every mmap-based reader) excludes. All reads go through bounds-checked
    // slices of lengths validated in `open`.
    unsafe { Mmap::map(file) }
}
