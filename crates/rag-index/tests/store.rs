//! The passage store: both input formats, chunking, every bad-input policy, corruption.

use std::path::{Path, PathBuf};

use rag_index::{
    Chunking, IndexError, IngestOptions, InputFormat, OnDuplicate, OnMalformed, PassageStore, StoreBuilder,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn build(
    dir: &Path,
    input: &Path,
    options: &IngestOptions,
) -> Result<(PassageStore, rag_index::IngestReport), IndexError> {
    let mut b = StoreBuilder::create(&dir.join("store.rps"))?;
    let report = b.ingest(input, options)?;
    Ok((b.finish()?, report))
}

#[test]
fn jsonl_with_and_without_ids() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "c.jsonl",
        br#"{"id": 10, "title": "Aaron", "text": "Aaron is a prophet."}
{"title": "Zurich", "text": "Zurich is a city.", "extra": [1, 2]}

{"id": "42", "text": "No title here."}
"#,
    );
    let (store, report) = build(dir.path(), &input, &IngestOptions::default()).unwrap();
    assert_eq!((report.lines, report.documents, report.passages), (4, 3, 3));
    assert_eq!(store.len(), 3);
    let p = store.get(10).unwrap().unwrap();
    assert_eq!((p.title, p.text), ("Aaron", "Aaron is a prophet."));
    // A missing id takes the passage's row number.
    assert_eq!(store.get(1).unwrap().unwrap().title, "Zurich");
    assert_eq!(store.get(42).unwrap().unwrap().title, "");
    assert_eq!(store.get(5).unwrap(), None);
    store.verify().unwrap();
}

#[test]
fn dpr_tsv_with_quotes_and_any_column_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "psgs.tsv",
        "id\ttext\ttitle\n1\t\"Aaron ( or ; \"\"Ahärôn\"\") is a prophet\"\tAaron\n2\tplain text\tTitle Two\r\n"
            .as_bytes(),
    );
    let (store, _) = build(dir.path(), &input, &IngestOptions::default()).unwrap();
    let p = store.get(1).unwrap().unwrap();
    assert_eq!(p.text, "Aaron ( or ; \"Ahärôn\") is a prophet");
    assert_eq!(p.title, "Aaron");
    assert_eq!(store.get(2).unwrap().unwrap().title, "Title Two");

    let input = write(dir.path(), "other.tsv", b"title\tid\ttext\nT\t7\tseven\n");
    let (store, _) = build(dir.path(), &input, &IngestOptions::default()).unwrap();
    assert_eq!(store.get(7).unwrap().unwrap().text, "seven");

    let input = write(dir.path(), "nohead.tsv", b"1\tx\ty\n");
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nohead.tsv:1:") && err.to_string().contains("`id`"), "{err}");
}

/// DPR's own `psgs_w100.tsv` header and quoting (Python's `csv` with a tab delimiter): a quoted
/// field may hold a tab, a newline or doubled quotes, and a row is numbered by the line it starts
/// on (split on tabs per line, such rows broke into wrong fields).
#[test]
fn dpr_tsv_quoted_fields_hold_tabs_and_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        "id\ttext\ttitle\n",
        "1\t\"Aaron Aaron ( or ; \"\"Ahärôn\"\") is a prophet, high priest, and the brother of Moses.\"\tAaron\n",
        "2\t\"a cell\twith a tab\"\t\"Tab, the title\"\n",
        "3\t\"two\nlines\"\tLines\n",
        "4\tafter the multi-line row\tFour\n",
        "5\tonly two fields\n",
    );
    let input = write(dir.path(), "psgs_w100.tsv", text.as_bytes());
    let options = IngestOptions { on_malformed: OnMalformed::Skip, ..IngestOptions::default() };
    let (store, report) = build(dir.path(), &input, &options).unwrap();
    assert_eq!(
        store.get(1).unwrap().unwrap().text,
        "Aaron Aaron ( or ; \"Ahärôn\") is a prophet, high priest, and the brother of Moses."
    );
    let two = store.get(2).unwrap().unwrap();
    assert_eq!((two.text, two.title), ("a cell\twith a tab", "Tab, the title"));
    assert_eq!(store.get(3).unwrap().unwrap().text, "two\nlines");
    assert_eq!(store.get(4).unwrap().unwrap().title, "Four");
    assert_eq!((report.documents, report.passages, report.skipped_malformed), (4, 4, 1));
    // Row 5 starts on line 7: line 5 holds the second line of row 3.
    assert!(report.examples[0].contains("psgs_w100.tsv:7: 2 tab-separated fields, the header has 3"), "{report:?}");
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err().to_string();
    assert!(err.contains("psgs_w100.tsv:7:"), "{err}");
}

#[test]
fn chunking_keeps_titles_and_numbers_passages() {
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let line = format!("{{\"id\": 99, \"title\": \"T\", \"text\": \"{}\"}}\n", text.join("  "));
    let input = write(dir.path(), "c.jsonl", line.as_bytes());
    let options = IngestOptions { chunking: Some(Chunking { words: 4, stride: 3 }), ..Default::default() };
    let (store, report) = build(dir.path(), &input, &options).unwrap();
    let texts: Vec<&str> = store.iter().map(|p| p.unwrap().text).collect();
    assert_eq!(texts, vec!["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]);
    assert_eq!(report.passages, 3);
    assert!(store.iter().all(|p| p.unwrap().title == "T"));
    assert_eq!((0..3).map(|r| store.id_at(r).unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);

    let options = IngestOptions { chunking: Some(Chunking { words: 4, stride: 5 }), ..Default::default() };
    assert!(matches!(build(dir.path(), &input, &options), Err(IndexError::InvalidOption { field: "chunking", .. })));
}

#[test]
fn malformed_lines_fail_with_file_and_line_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "bad.jsonl",
        b"{\"id\": 1, \"text\": \"ok\"}\n{\"id\": 2, \"text\": \nnot json\n{\"id\": -3, \"text\": \"negative\"}\n{\"id\": 4}\n{\"id\": 5, \"text\": \"fine\"}\n",
    );
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    match &err {
        IndexError::Malformed { path, line, .. } => {
            assert_eq!(path, &input);
            assert_eq!(*line, 2);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().starts_with(&format!("{}:2: invalid JSON", input.display())), "{err}");
    assert!(!dir.path().join("store.rps").exists(), "a failed build leaves no file");

    let options = IngestOptions { on_malformed: OnMalformed::Skip, ..Default::default() };
    let (store, report) = build(dir.path(), &input, &options).unwrap();
    assert_eq!(report.skipped_malformed, 4);
    assert_eq!(store.len(), 2);
    assert!(report.examples[2].contains(":4: id -3 is not a non-negative integer"), "{:?}", report.examples);
    assert!(report.examples[3].contains(":5: invalid JSON record: missing field `text`"), "{:?}", report.examples);

    let input = write(dir.path(), "bad.tsv", b"id\ttext\ttitle\n1\ttwo fields\n");
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    assert!(err.to_string().ends_with("bad.tsv:2: 2 tab-separated fields, the header has 3"), "{err}");
}

#[test]
fn invalid_utf8_is_a_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "u.jsonl", b"{\"id\": 1, \"text\": \"ok\"}\n{\"id\": 2, \"text\": \"caf\xe9\"}\n");
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    assert!(err.to_string().ends_with("u.jsonl:2: invalid UTF-8 at byte 22 of the line (0-based)"), "{err}");
    let options = IngestOptions { on_malformed: OnMalformed::Skip, ..Default::default() };
    let (store, report) = build(dir.path(), &input, &options).unwrap();
    assert_eq!((store.len(), report.skipped_malformed), (1, 1));
}

#[test]
fn empty_texts_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "e.jsonl",
        b"{\"id\": 1, \"text\": \"\"}\n{\"id\": 2, \"text\": \"  \\t \"}\n{\"id\": 3, \"text\": \"x\"}\n",
    );
    let (store, report) = build(dir.path(), &input, &IngestOptions::default()).unwrap();
    assert_eq!((store.len(), report.skipped_empty, report.documents), (1, 2, 3));
    assert_eq!(store.get(1).unwrap(), None);
    let mut b = StoreBuilder::create(&dir.path().join("s2.rps")).unwrap();
    assert!(matches!(b.push(None, "t", " "), Err(IndexError::InvalidOption { field: "text", .. })));
}

#[test]
fn duplicate_ids_fail_or_keep_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "d.jsonl",
        b"{\"id\": 1, \"text\": \"first\"}\n{\"id\": 2, \"text\": \"b\"}\n{\"id\": 1, \"text\": \"second\"}\n",
    );
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    assert!(matches!(err, IndexError::DuplicatePassage { line: 3, id: 1, first_row: 0, .. }), "{err}");
    let options = IngestOptions { on_duplicate: OnDuplicate::KeepFirst, ..Default::default() };
    let (store, report) = build(dir.path(), &input, &options).unwrap();
    assert_eq!(report.skipped_duplicate, 1);
    assert_eq!(store.get(1).unwrap().unwrap().text, "first");

    // A missing id takes the row number, which can collide with an explicit id: the message names
    // the id that collided.
    let input = write(dir.path(), "r.jsonl", b"{\"id\": 1, \"text\": \"a\"}\n{\"text\": \"b\"}\n");
    let err = build(dir.path(), &input, &IngestOptions::default()).unwrap_err();
    assert!(err.to_string().ends_with("r.jsonl:2: duplicate passage id 1 (first stored as passage #0)"), "{err}");
    let mut b = StoreBuilder::create(&dir.path().join("p.rps")).unwrap();
    b.push(Some(1), "", "x").unwrap();
    let err = b.push(None, "", "y").unwrap_err(); // row 1
    assert_eq!(err.to_string(), "invalid option `id` = 1: already names passage #0");
}

#[test]
fn several_files_into_one_store_and_many_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let mut jsonl = String::new();
    for i in 0..5000u64 {
        jsonl.push_str(&format!("{{\"id\": {}, \"title\": \"t{i}\", \"text\": \"passage {i}\"}}\n", i * 7919));
    }
    let a = write(dir.path(), "a.jsonl", jsonl.as_bytes());
    let b = write(dir.path(), "b.tsv", b"id\ttext\ttitle\n3\tthree\tT\n");
    let mut builder = StoreBuilder::create(&dir.path().join("s.rps")).unwrap();
    builder.ingest(&a, &IngestOptions::default()).unwrap();
    builder.ingest(&b, &IngestOptions::default()).unwrap();
    let store = builder.finish().unwrap();
    drop(store);
    let store = PassageStore::open(&dir.path().join("s.rps")).unwrap();
    assert_eq!(store.len(), 5001);
    for i in (0..5000u64).step_by(37) {
        assert_eq!(store.get(i * 7919).unwrap().unwrap().text, format!("passage {i}"));
    }
    assert_eq!(store.get(3).unwrap().unwrap().text, "three");
    assert_eq!(store.get(4).unwrap(), None);
    store.verify().unwrap();
}

#[test]
fn unknown_extension_needs_a_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "c.txt", b"{\"text\": \"x\"}\n");
    assert!(matches!(
        build(dir.path(), &input, &IngestOptions::default()),
        Err(IndexError::InvalidOption { field: "format", .. })
    ));
    let options = IngestOptions { format: Some(InputFormat::Jsonl), ..Default::default() };
    assert_eq!(build(dir.path(), &input, &options).unwrap().0.len(), 1);
}

#[test]
fn corrupt_store_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "c.jsonl",
        b"{\"id\": 1, \"title\": \"A\", \"text\": \"alpha\"}\n{\"id\": 2, \"text\": \"beta\"}\n",
    );
    let (store, _) = build(dir.path(), &input, &IngestOptions::default()).unwrap();
    let path = store.path().to_path_buf();
    drop(store);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.rps");

    std::fs::write(&bad, &good[..good.len() - 3]).unwrap();
    let e = PassageStore::open(&bad).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    std::fs::write(&bad, b"short").unwrap();
    assert!(PassageStore::open(&bad).unwrap_err().to_string().contains("shorter than the 64-byte header"));

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff; // a hash slot
    std::fs::write(&bad, &flipped).unwrap();
    assert!(PassageStore::open(&bad).unwrap_err().to_string().contains("tables checksum mismatch"));

    let mut flipped = good.clone();
    flipped[64 + 6] ^= 0x01; // a byte of the first title/text
    std::fs::write(&bad, &flipped).unwrap();
    let store = PassageStore::open(&bad).unwrap(); // open does not read the text...
    assert!(store.verify().unwrap_err().to_string().contains("records checksum mismatch")); // ...verify does

    let mut other = good.clone();
    other[8] = 9; // version
    std::fs::write(&bad, &other).unwrap();
    assert!(PassageStore::open(&bad).unwrap_err().to_string().contains("format version 9"));
    other[0] = b'X';
    std::fs::write(&bad, &other).unwrap();
    assert!(PassageStore::open(&bad).unwrap_err().to_string().contains("not a passage store"));
}

#[test]
fn a_dropped_builder_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = StoreBuilder::create(&dir.path().join("s.rps")).unwrap();
    b.push(Some(1), "", "x").unwrap();
    drop(b);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
