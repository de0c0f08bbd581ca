//! Building a passage store from JSONL or DPR's TSV, streaming: the text goes straight to the output
//! file, and memory holds only per-passage bookkeeping (offset, id and hash slot: 20 to 28 bytes per
//! passage, about 0.5 GB for DPR's 21M passages) whatever the size of the text.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{IndexError, Result};
use crate::file::{AtomicFile, HashingWriter};
use crate::progress;

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC, PassageStore, slot_of};

/// The format of a corpus file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// One JSON object per line: `{"id": 12, "title": "...", "text": "..."}`. `id` (an integer, or a
    /// string of digits) and `title` are optional; other fields are ignored; blank lines are skipped.
    Jsonl,
    /// DPR's `psgs_w100.tsv`: a header line naming the columns (`id`, `text`, `title`, in any order),
    /// then one passage per line, tab-separated, fields optionally quoted CSV-style (`"a ""b"""`).
    DprTsv,
}

impl InputFormat {
    /// The format a file name implies: `.jsonl`/`.json` or `.tsv`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" => Some(InputFormat::Jsonl),
            "tsv" => Some(InputFormat::DprTsv),
            _ => None,
        }
    }
}

/// What to do with a line that cannot be parsed (bad JSON, a missing field, a wrong number of TSV
/// columns, a non-integer id, invalid UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMalformed {
    /// Stop with an error naming the file and line (the default).
    #[default]
    Fail,
    /// Skip the line and count it in [`IngestReport::skipped_malformed`].
    Skip,
}

/// What to do with a passage whose id is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDuplicate {
    /// Stop with an error naming the file, the line and the first passage (the default).
    #[default]
    Fail,
    /// Keep the first passage, skip this one, count it in [`IngestReport::skipped_duplicate`].
    KeepFirst,
}

/// Splitting documents into passages of `words` words, a new passage every `stride` words
/// (`stride == words`: no overlap, as DPR's 100-word passages). Every passage keeps the title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    /// Words per passage.
    pub words: usize,
    /// Words between the starts of consecutive passages (`1..=words`).
    pub stride: usize,
}

/// How to ingest a corpus file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IngestOptions {
    /// The format; `None` picks it from the file extension.
    pub format: Option<InputFormat>,
    /// Malformed lines.
    pub on_malformed: OnMalformed,
    /// Repeated ids.
    pub on_duplicate: OnDuplicate,
    /// Split documents into passages. Chunked passages get consecutive ids (their row in the store),
    /// since one document id cannot name several passages.
    pub chunking: Option<Chunking>,
}

/// What an ingestion did. Empty texts are never stored: a passage with nothing to read cannot be
/// retrieved usefully, so it is skipped and counted, not treated as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    /// Lines read (JSONL, blank lines included) or rows (TSV, the header included; a quoted field
    /// may span lines).
    pub lines: u64,
    /// Documents parsed.
    pub documents: u64,
    /// Passages stored (more than documents when chunking).
    pub passages: u64,
    /// Malformed lines skipped under [`OnMalformed::Skip`].
    pub skipped_malformed: u64,
    /// Documents skipped because their text is empty or only whitespace.
    pub skipped_empty: u64,
    /// Passages skipped under [`OnDuplicate::KeepFirst`].
    pub skipped_duplicate: u64,
    /// The first few skipped lines, as `file:line: reason`.
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 10;

/// Writes a [`PassageStore`]: push passages or ingest files, then [`StoreBuilder::finish`]. The file
/// appears at its path only when `finish` succeeds; a builder dropped earlier leaves nothing.
pub struct StoreBuilder {
    file: AtomicFile,
    hasher: xxhash_rust::xxh3::Xxh3,
    offsets: Vec<u64>,
    ids: Vec<u64>,
    slots: Vec<u32>,
}

impl StoreBuilder {
    /// Starts a store at `path` (written to a temporary file until `finish`).
    pub fn create(path: &Path) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(&[0u8; HEADER_LEN])?;
        Ok(Self {
            file,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            offsets: vec![0],
            ids: Vec::new(),
            slots: vec![0; 1024],
        })
    }

    /// Passages pushed so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The row of a stored id.
    fn find(&self, id: u64) -> std::result::Result<usize, usize> {
        let mask = (self.slots.len() - 1) as u64;
        let mut s = slot_of(id, mask);
        loop {
            match self.slots[s] {
                0 => return Err(s),
                v if self.ids[v as usize - 1] == id => return Ok(v as usize - 1),
                _ => s = (s + 1) & mask as usize,
            }
        }
    }

    fn grow(&mut self) {
        self.slots = hash_table(&self.ids, self.slots.len() * 2);
    }

    /// Appends one passage; `id: None` takes the passage's row number. Returns the id, or
    /// `Err((id, row))`: the resolved id and the row of the passage that already has it.
    fn push_raw(&mut self, id: Option<u64>, title: &str, text: &str) -> Result<std::result::Result<u64, (u64, usize)>> {
        let row = self.ids.len();
        if row >= u32::MAX as usize - 1 {
            return Err(IndexError::InvalidOption {
                field: "passages",
                value: row.to_string(),
                reason: "a store holds at most 2^32 - 2 passages".into(),
            });
        }
        let id = id.unwrap_or(row as u64);
        let slot = match self.find(id) {
            Ok(first) => return Ok(Err((id, first))),
            Err(slot) => slot,
        };
        let title_len = u32::try_from(title.len()).map_err(|_| IndexError::InvalidOption {
            field: "title",
            value: format!("{} bytes", title.len()),
            reason: "must be shorter than 4 GiB".into(),
        })?;
        for part in [&title_len.to_le_bytes()[..], title.as_bytes(), text.as_bytes()] {
            self.hasher.update(part);
            self.file.write_all(part)?;
        }
        let end = self.offsets[row] + 4 + title.len() as u64 + text.len() as u64;
        self.offsets.push(end);
        self.ids.push(id);
        self.slots[slot] = row as u32 + 1;
        if self.ids.len() * 2 > self.slots.len() {
            self.grow();
        }
        Ok(Ok(id))
    }

    /// Appends one passage; `id: None` takes the passage's row number. Returns the id. An id that is
    /// already stored or an empty text is an error (ingestion applies [`IngestOptions`] instead).
    pub fn push(&mut self, id: Option<u64>, title: &str, text: &str) -> Result<u64> {
        if text.trim().is_empty() {
            return Err(IndexError::InvalidOption {
                field: "text",
                value: "\"\"".into(),
                reason: "a passage needs text".into(),
            });
        }
        match self.push_raw(id, title, text)? {
            Ok(id) => Ok(id),
            Err((id, first)) => Err(IndexError::InvalidOption {
                field: "id",
                value: id.to_string(),
                reason: format!("already names passage #{first}"),
            }),
        }
    }

    /// Streams a corpus file into the store.
    pub fn ingest(&mut self, path: &Path, options: &IngestOptions) -> Result<IngestReport> {
        let format =
            options.format.or_else(|| InputFormat::from_path(path)).ok_or_else(|| IndexError::InvalidOption {
                field: "format",
                value: path.display().to_string(),
                reason: "cannot tell the format from the extension (.jsonl, .json or .tsv); set it".into(),
            })?;
        if let Some(c) = options.chunking
            && (c.words == 0 || c.stride == 0 || c.stride > c.words)
        {
            return Err(IndexError::InvalidOption {
                field: "chunking",
                value: format!("{} words, stride {}", c.words, c.stride),
                reason: "needs 1 <= stride <= words".into(),
            });
        }
        let file = File::open(path).map_err(|e| IndexError::io(path, e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = progress::bytes_bar(size, "ingesting passages");
        let mut report = IngestReport::default();
        match format {
            InputFormat::Jsonl => self.ingest_jsonl(file, path, options, &mut report, &bar)?,
            InputFormat::DprTsv => self.ingest_tsv(file, path, options, &mut report, &bar)?,
        }
        bar.finish_and_clear();
        Ok(report)
    }

    /// JSONL: one record per line; blank lines are skipped.
    fn ingest_jsonl(
        &mut self,
        file: File,
        path: &Path,
        options: &IngestOptions,
        report: &mut IngestReport,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| IndexError::io(path, e))?;
            if n == 0 {
                return Ok(());
            }
            bar.inc(n as u64);
            report.lines += 1;
            let lineno = report.lines;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            let parsed = match std::str::from_utf8(&line) {
                Err(e) => Err(format!("invalid UTF-8 at byte {} of the line (0-based)", e.valid_up_to())),
                Ok(s) if s.trim().is_empty() => continue,
                Ok(s) => parse_jsonl(s),
            };
            self.add_parsed(parsed, path, lineno, options, report)?;
        }
    }

    /// DPR's TSV, read by the `csv` crate with DPR's (Python `csv`'s) quoting: a quoted field
    /// may hold tabs, newlines and doubled quotes. Rows are numbered by the line they start on.
    fn ingest_tsv(
        &mut self,
        file: File,
        path: &Path,
        options: &IngestOptions,
        report: &mut IngestReport,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let mut record = csv::ByteRecord::new();
        let mut columns: Option<TsvColumns> = None;
        loop {
            let more = reader.read_byte_record(&mut record).map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                match e.into_kind() {
                    csv::ErrorKind::Io(e) => IndexError::io(path, e),
                    other => IndexError::Malformed { path: path.to_path_buf(), line, message: format!("{other:?}") },
                }
            })?;
            if !more {
                break;
            }
            bar.set_position(reader.position().byte());
            report.lines += 1;
            let lineno = record.position().map_or(report.lines, csv::Position::line);
            let Some(c) = &columns else {
                columns = Some(TsvColumns::from_header(&record).map_err(|message| IndexError::Malformed {
                    path: path.to_path_buf(),
                    line: lineno,
                    message,
                })?);
                continue;
            };
            let parsed = c.parse(&record);
            self.add_parsed(parsed, path, lineno, options, report)?;
        }
        if columns.is_none() {
            return Err(IndexError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                message: "empty file: no TSV header line".into(),
            });
        }
        Ok(())
    }

    /// Stores one parsed record (chunked if asked), or skips and counts it as the options say.
    fn add_parsed(
        &mut self,
        parsed: std::result::Result<Doc, String>,
        path: &Path,
        lineno: u64,
        options: &IngestOptions,
        report: &mut IngestReport,
    ) -> Result<()> {
        let doc = match parsed {
            Ok(doc) => doc,
            Err(message) => {
                if options.on_malformed == OnMalformed::Fail {
                    return Err(IndexError::Malformed { path: path.to_path_buf(), line: lineno, message });
                }
                report.skipped_malformed += 1;
                note(report, path, lineno, &message);
                return Ok(());
            }
        };
        report.documents += 1;
        if doc.text.trim().is_empty() {
            report.skipped_empty += 1;
            note(report, path, lineno, "empty text");
            return Ok(());
        }
        let mut store = |id: Option<u64>, text: &str, report: &mut IngestReport| -> Result<()> {
            match self.push_raw(id, &doc.title, text)? {
                Ok(_) => report.passages += 1,
                Err((id, first_row)) if options.on_duplicate == OnDuplicate::KeepFirst => {
                    report.skipped_duplicate += 1;
                    note(report, path, lineno, &format!("duplicate id {id} (first stored as passage #{first_row})"));
                }
                Err((id, first_row)) => {
                    return Err(IndexError::DuplicatePassage {
                        path: path.to_path_buf(),
                        line: lineno,
                        id,
                        first_row: first_row as u64,
                    });
                }
            }
            Ok(())
        };
        match options.chunking {
            None => store(doc.id, &doc.text, report)?,
            Some(c) => {
                let words: Vec<&str> = doc.text.split_whitespace().collect();
                let mut start = 0;
                loop {
                    let end = (start + c.words).min(words.len());
                    store(None, &words[start..end].join(" "), report)?;
                    if end == words.len() {
                        break;
                    }
                    start += c.stride;
                }
            }
        }
        Ok(())
    }

    /// Writes the tables and header and moves the file into place.
    pub fn finish(mut self) -> Result<PassageStore> {
        let count = self.ids.len();
        let records_len = self.offsets[count];
        let pad = (records_len as usize + HEADER_LEN).next_multiple_of(8) - (records_len as usize + HEADER_LEN);
        self.file.write_all(&vec![0u8; pad])?;
        // Shrink the table to the smallest power of two at load factor <= 1/2.
        let slots = (2 * count).next_power_of_two().max(1);
        if slots != self.slots.len() {
            self.slots = hash_table(&self.ids, slots);
        }
        let mut head = [0u8; HEADER_LEN];
        head[0..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        head[16..24].copy_from_slice(&(count as u64).to_le_bytes());
        head[24..32].copy_from_slice(&records_len.to_le_bytes());
        head[32..40].copy_from_slice(&(slots as u64).to_le_bytes());
        let mut w = HashingWriter::new(&mut self.file);
        w.hasher.update(&head[0..40]);
        w.put_u64s(&self.offsets)?;
        w.put_u64s(&self.ids)?;
        let mut buf = Vec::with_capacity(4 * slots.min(1 << 16));
        for chunk in self.slots.chunks(1 << 16) {
            buf.clear();
            chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
            w.put(&buf)?;
        }
        let tables = w.hasher.digest();
        head[40..48].copy_from_slice(&tables.to_le_bytes());
        head[48..56].copy_from_slice(&self.hasher.digest().to_le_bytes());
        self.file.patch(0, &head)?;
        let path = self.file.final_path().to_path_buf();
        self.file.commit()?;
        PassageStore::open(&path)
    }
}

/// The open-addressing table of `ids` (distinct) with `slots` slots (a power of two): `row + 1`
/// per occupied slot, linear probing from `slot_of(id)`.
fn hash_table(ids: &[u64], slots: usize) -> Vec<u32> {
    let mut table = vec![0u32; slots];
    let mask = (slots - 1) as u64;
    for (row, &id) in ids.iter().enumerate() {
        let mut s = slot_of(id, mask);
        while table[s] != 0 {
            s = (s + 1) & mask as usize;
        }
        table[s] = row as u32 + 1;
    }
    table
}

fn note(report: &mut IngestReport, path: &Path, line: u64, message: &str) {
    if report.examples.len() < MAX_EXAMPLES {
        report.examples.push(format!("{}:{line}: {message}", path.display()));
    }
}

/// A parsed corpus record.
struct Doc {
    id: Option<u64>,
    title: String,
    text: String,
}

#[derive(serde::Deserialize)]
struct JsonDoc {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    text: String,
}

fn parse_id(v: &serde_json::Value) -> std::result::Result<Option<u64>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            n.as_u64().map(Some).ok_or_else(|| format!("id {n} is not a non-negative integer"))
        }
        serde_json::Value::String(s) => parse_id_str(s).map(Some),
        other => Err(format!("id {other} is not an integer")),
    }
}

fn parse_id_str(s: &str) -> std::result::Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("id {s:?} is not a non-negative integer"))
}

fn parse_jsonl(s: &str) -> std::result::Result<Doc, String> {
    let d: JsonDoc = serde_json::from_str(s).map_err(|e| format!("invalid JSON record: {e}"))?;
    let id = d.id.as_ref().map(parse_id).transpose()?.flatten();
    Ok(Doc { id, title: d.title.unwrap_or_default(), text: d.text })
}

/// Column positions of a DPR TSV file, from its header row.
struct TsvColumns {
    n: usize,
    id: usize,
    text: usize,
    title: usize,
}

/// Field `i` of a TSV row as text.
fn field_text(record: &csv::ByteRecord, i: usize, name: &str) -> std::result::Result<String, String> {
    let bytes = record.get(i).unwrap_or_default();
    String::from_utf8(bytes.to_vec())
        .map_err(|e| format!("field `{name}`: invalid UTF-8 at byte {} (0-based)", e.utf8_error().valid_up_to()))
}

impl TsvColumns {
    fn from_header(record: &csv::ByteRecord) -> std::result::Result<Self, String> {
        let names = (0..record.len())
            .map(|i| field_text(record, i, "header").map(|n| n.trim().to_string()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let find = |name: &str| {
            names.iter().position(|n| n.eq_ignore_ascii_case(name)).ok_or_else(|| {
                format!("the TSV header {names:?} has no `{name}` column (DPR's header is `id<TAB>text<TAB>title`)")
            })
        };
        Ok(Self { n: names.len(), id: find("id")?, text: find("text")?, title: find("title")? })
    }

    fn parse(&self, record: &csv::ByteRecord) -> std::result::Result<Doc, String> {
        if record.len() != self.n {
            return Err(format!("{} tab-separated fields, the header has {}", record.len(), self.n));
        }
        Ok(Doc {
            id: Some(parse_id_str(&field_text(record, self.id, "id")?)?),
            title: field_text(record, self.title, "title")?,
            text: field_text(record, self.text, "text")?,
        })
    }
}
