//! Atomic writes and the little-endian codec shared by the index and passage-store files.
//!
//! Every file this crate writes is built in a temporary file beside its destination, flushed to disk
//! and renamed over it, so a crash leaves either the old file or the new one, never half of one.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::error::{IndexError, Result};

/// A file being written: a temporary sibling of `path` that replaces `path` on [`AtomicFile::commit`]
/// and is deleted if dropped uncommitted.
pub(crate) struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let name = path.file_name().ok_or_else(|| IndexError::io(path, std::io::Error::other("not a file path")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        // Unique per writer: the process id, and a counter for writers in the same process.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tmp_name.push(format!(".tmp.{}.{writer}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        Ok(Self { path: path.to_path_buf(), tmp, writer: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The destination path.
    pub(crate) fn final_path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("writer is present until commit")
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp.clone();
        self.writer().write_all(bytes).map_err(|e| IndexError::io(tmp, e))
    }

    /// Overwrites `bytes` at `offset` (used to fill in a header once the payload is written).
    pub(crate) fn patch(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp.clone();
        let w = self.writer();
        let io = (|| {
            w.flush()?;
            let end = w.stream_position()?;
            w.seek(SeekFrom::Start(offset))?;
            w.write_all(bytes)?;
            w.flush()?;
            w.seek(SeekFrom::Start(end))?;
            Ok(())
        })();
        io.map_err(|e| IndexError::io(tmp, e))
    }

    /// Flushes, syncs and renames the temporary file over the destination.
    pub(crate) fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("commit is called once");
        let file = writer.into_inner().map_err(|e| IndexError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| IndexError::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| IndexError::io(&self.path, e))?;
        // Make the rename itself durable. Not every platform can open a directory; a failure here
        // leaves a complete file in place, so it is not an error.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes through an [`AtomicFile`] while hashing what is written.
pub(crate) struct HashingWriter<'a> {
    pub(crate) file: &'a mut AtomicFile,
    pub(crate) hasher: Xxh3,
    pub(crate) written: u64,
}

impl<'a> HashingWriter<'a> {
    pub(crate) fn new(file: &'a mut AtomicFile) -> Self {
        Self { file, hasher: Xxh3::new(), written: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    pub(crate) fn put_u64(&mut self, v: u64) -> Result<()> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn put_u64s(&mut self, values: &[u64]) -> Result<()> {
        let mut buf = Vec::with_capacity(8 * values.len().min(1 << 16));
        for chunk in values.chunks(1 << 16) {
            buf.clear();
            chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
            self.put(&buf)?;
        }
        Ok(())
    }

    pub(crate) fn put_f32s(&mut self, values: &[f32], mut progress: impl FnMut(u64)) -> Result<()> {
        let mut buf = Vec::with_capacity(4 * values.len().min(1 << 18));
        for chunk in values.chunks(1 << 18) {
            buf.clear();
            chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
            self.put(&buf)?;
            progress(buf.len() as u64);
        }
        Ok(())
    }
}

/// Reads little-endian fields from a byte slice, naming the field and the file when it runs out.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Self { bytes, pos: 0, path }
    }

    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            IndexError::corrupt(
                self.path,
                format!(
                    "truncated: field `{field}` needs {n} bytes at offset {}, the file has {} left",
                    self.pos,
                    self.bytes.len() - self.pos
                ),
            )
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().expect("8 bytes")))
    }

    /// A length or count field that must fit in memory (`usize`) and not exceed `max`.
    pub(crate) fn len(&mut self, field: &str, max: u64) -> Result<usize> {
        let v = self.u64(field)?;
        if v > max {
            return Err(IndexError::corrupt(self.path, format!("field `{field}` = {v} exceeds {max}")));
        }
        usize::try_from(v)
            .map_err(|_| IndexError::corrupt(self.path, format!("field `{field}` = {v} does not fit in memory")))
    }

    pub(crate) fn u64s(&mut self, n: usize, field: &str) -> Result<Vec<u64>> {
        let bytes = self.take(n.saturating_mul(8), field)?;
        Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }

    pub(crate) fn f32s(&mut self, n: usize, field: &str) -> Result<Vec<f32>> {
        let bytes = self.take(n.saturating_mul(4), field)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos != self.bytes.len() {
            return Err(IndexError::corrupt(
                self.path,
                format!("{} unexpected trailing bytes after offset {}", self.bytes.len() - self.pos, self.pos),
            ));
        }
        Ok(())
    }
}

/// Checks the start of a file this crate wrote: long enough for its `header_len`-byte header, the
/// `magic` of its kind (`what` names the kind in the error), format version `version`. Returns a
/// reader over the rest of the header, just after the version field.
pub(crate) fn check_preamble<'a>(
    bytes: &'a [u8],
    path: &'a Path,
    header_len: usize,
    magic: &[u8; 8],
    what: &str,
    version: u32,
) -> Result<Reader<'a>> {
    if bytes.len() < header_len {
        return Err(IndexError::corrupt(
            path,
            format!("truncated: {} bytes is shorter than the {header_len}-byte header", bytes.len()),
        ));
    }
    if &bytes[0..8] != magic {
        let magic = String::from_utf8_lossy(magic);
        return Err(IndexError::corrupt(path, format!("not a {what} (magic bytes differ from `{magic}`)")));
    }
    let mut r = Reader::new(&bytes[8..header_len], path);
    let found = r.u32("version")?;
    if found != version {
        return Err(IndexError::corrupt(path, format!("format version {found}, this build reads version {version}")));
    }
    Ok(r)
}

/// xxh3-64 of `parts`, in order.
pub(crate) fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h = Xxh3::new();
    parts.iter().for_each(|p| h.update(p));
    h.digest()
}
