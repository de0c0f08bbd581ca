//! The `.fvecs` format of the ANN benchmarks (SIFT, GIST, Deep1B...): per vector, a little-endian
//! `i32` dimension followed by that many `f32` values.

use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{IndexError, Result};
use crate::file::AtomicFile;

/// Vectors read from an `.fvecs` file, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Fvecs {
    /// The dimension every record has.
    pub dim: usize,
    /// `len × dim` values.
    pub data: Vec<f32>,
}

impl Fvecs {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether the file held no vector.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Reads a whole `.fvecs` file; `limit` keeps only the first vectors. Every record must have the
/// first record's dimension; a truncated record or a non-positive dimension is an error naming the
/// record.
pub fn read_fvecs(path: &Path, limit: Option<usize>) -> Result<Fvecs> {
    let file = std::fs::File::open(path).map_err(|e| IndexError::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut dim = 0usize;
    let mut data = Vec::new();
    let mut record = 0usize;
    let mut head = [0u8; 4];
    let mut values = Vec::new();
    while limit.is_none_or(|l| record < l) {
        match read_full(&mut r, &mut head).map_err(|e| IndexError::io(path, e))? {
            0 => break,
            4 => {}
            n => {
                return Err(IndexError::corrupt(
                    path,
                    format!("record {record}: truncated dimension field ({n} of 4 bytes)"),
                ));
            }
        }
        let d = i32::from_le_bytes(head);
        if d <= 0 {
            return Err(IndexError::corrupt(path, format!("record {record}: dimension {d} must be positive")));
        }
        let d = d as usize;
        if record == 0 {
            dim = d;
        } else if d != dim {
            return Err(IndexError::Dimension {
                what: format!("{}: record {record}", path.display()),
                expected: dim,
                found: d,
            });
        }
        values.resize(4 * d, 0);
        let n = read_full(&mut r, &mut values).map_err(|e| IndexError::io(path, e))?;
        if n != values.len() {
            return Err(IndexError::corrupt(
                path,
                format!("record {record}: truncated after {n} of {} value bytes", values.len()),
            ));
        }
        data.extend(values.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))));
        record += 1;
    }
    Ok(Fvecs { dim, data })
}

/// Writes `data` (`n × dim`, row-major) as an `.fvecs` file, atomically.
pub fn write_fvecs(path: &Path, dim: usize, data: &[f32]) -> Result<()> {
    let dim32 = i32::try_from(dim).ok().filter(|&d| d > 0).ok_or_else(|| IndexError::InvalidOption {
        field: "dim",
        value: dim.to_string(),
        reason: "must be between 1 and 2^31 - 1".into(),
    })?;
    if !data.len().is_multiple_of(dim) {
        return Err(IndexError::Width { what: "vectors", dim, found: data.len(), detail: String::new() });
    }
    let mut file = AtomicFile::create(path)?;
    let mut buf = Vec::with_capacity(4 + 4 * dim);
    for v in data.chunks_exact(dim) {
        buf.clear();
        buf.extend_from_slice(&dim32.to_le_bytes());
        v.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        file.write_all(&buf)?;
    }
    file.commit()
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
