//! BM25 over a passage store: the keyword baseline a dense retriever is reported beside, and a
//! retriever of its own at inference (`cargo xtask ask --retriever bm25`).
//!
//! The index is tantivy's: an inverted index of each passage's `title text`, scored with
//! Robertson–Zaragoza BM25 (k1 = 1.2, b = 0.75), kept on disk beside the store
//! ([`Bm25::open_or_create`]: `<store>.bm25/`) or in memory ([`Bm25::build`]). Text and queries
//! go through one analyzer, [`ANALYZER`]: tantivy's simple tokenizer (runs of letters and
//! digits), tokens over 40 bytes dropped, lower case, ASCII folding, English stop words removed,
//! English (Snowball) stemming. A query scores each distinct analyzed term once.
//!
//! A persisted index carries a manifest (`rag-bm25.json`) with the store's passage count and
//! fingerprint ([`PassageStore::fingerprint`]); opening it against another store, or another
//! version of the same one, is refused, and [`Bm25::open_or_create`] rebuilds it. It is built
//! in a sibling directory and renamed into place, so an interrupted build leaves no index that
//! looks whole.

use std::path::{Path, PathBuf};

use rag_index::PassageStore;
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::BooleanQuery;
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::files::qa::{QaExample, has_answer};
use crate::model::context::PassageText;
use crate::model::knowledge::Knowledge;
use crate::training::eval::first_relevant;
use crate::{RagError, Result};

/// The analyzer's name in the index's schema.
pub const ANALYZER: &str = "rag_en_stem";
/// The manifest of a persisted index.
const MANIFEST: &str = "rag-bm25.json";
/// The manifest's format version.
const FORMAT: u32 = 1;
/// The indexing writer's memory budget (tantivy flushes a segment when it is reached).
const WRITER_BUDGET: usize = 128 << 20;

/// What a persisted index records about the store it was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    analyzer: String,
    passages: usize,
    store_fingerprint: String,
}

impl Manifest {
    fn of(store: &PassageStore) -> Self {
        Self {
            format: FORMAT,
            analyzer: ANALYZER.into(),
            passages: store.len(),
            store_fingerprint: format!("{:016x}", store.fingerprint()),
        }
    }
}

/// A BM25 index of every passage of a store.
pub struct Bm25 {
    reader: IndexReader,
    body: Field,
    /// [`ANALYZER`], the one registered with the index, for the queries.
    analyzer: TextAnalyzer,
    /// Where it is kept, `None` in memory.
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25").field("dir", &self.dir).field("passages", &self.len()).finish_non_exhaustive()
    }
}

/// The text BM25 indexes for a passage: its title, then its text (as the dense encoders read it).
fn indexed_text(title: &str, text: &str) -> String {
    if title.is_empty() { text.to_string() } else { format!("{title} {text}") }
}

fn analyzer() -> TextAnalyzer {
    let stop_words = StopWordFilter::new(Language::English).expect("tantivy has English stop words");
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(stop_words)
        .filter(Stemmer::new(Language::English))
        .build()
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let id = builder.add_u64_field("id", INDEXED | FAST);
    let indexing = TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs);
    let body = builder.add_text_field("body", TextOptions::default().set_indexing_options(indexing));
    (builder.build(), id, body)
}

/// A tantivy failure on `path` as this crate's error.
fn sparse_error(path: &Path, what: &str, error: impl std::fmt::Display) -> RagError {
    RagError::Corpus { store: path.to_path_buf(), message: format!("BM25 index: {what}: {error}") }
}

impl Bm25 {
    /// Indexes every passage of `store` in memory.
    pub fn build(store: &PassageStore) -> Result<Self> {
        let (schema, id, body) = schema();
        let index = Index::create_in_ram(schema);
        Self::fill(&index, store, id, body, store.path())?;
        Self::ready(index, None)
    }

    /// Indexes every passage of `store` into the directory `dir` (replacing what is there),
    /// with a manifest tying it to the store. The index is written to a sibling directory first
    /// and renamed into place.
    pub fn create(store: &PassageStore, dir: &Path) -> Result<Self> {
        let name = dir.file_name().ok_or_else(|| sparse_error(dir, "creating", "the path has no file name"))?;
        let partial = dir.with_file_name(format!("{}.partial-{}", name.to_string_lossy(), std::process::id()));
        let io = |path: &Path, e: std::io::Error| RagError::Io { path: path.to_path_buf(), source: e };
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| io(&partial, e))?;
        let (schema, id, body) = schema();
        let index = Index::create_in_dir(&partial, schema).map_err(|e| sparse_error(&partial, "creating", e))?;
        Self::fill(&index, store, id, body, &partial)?;
        drop(index);
        let manifest = serde_json::to_vec_pretty(&Manifest::of(store)).expect("a manifest serializes");
        rag_hf::write_atomic(&partial.join(MANIFEST), &manifest)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&partial, dir).map_err(|e| io(dir, e))?;
        Self::open(dir, store)
    }

    /// Opens the index in `dir`, refusing one built from another store (or another version of
    /// this one) and one whose files are damaged.
    pub fn open(dir: &Path, store: &PassageStore) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| RagError::Io { path: manifest_path.clone(), source: e })?;
        let found: Manifest = serde_json::from_str(&text).map_err(|e| sparse_error(&manifest_path, "reading", e))?;
        let expected = Manifest::of(store);
        if found != expected {
            return Err(RagError::Corpus {
                store: dir.to_path_buf(),
                message: format!(
                    "this BM25 index was built from another corpus or analyzer ({} passages, store fingerprint {}, \
                     format {}, analyzer {}); {} has {} passages, fingerprint {}: rebuild it",
                    found.passages,
                    found.store_fingerprint,
                    found.format,
                    found.analyzer,
                    store.path().display(),
                    expected.passages,
                    expected.store_fingerprint
                ),
            });
        }
        let index = Index::open_in_dir(dir).map_err(|e| sparse_error(dir, "opening", e))?;
        let (schema, _, _) = schema();
        if index.schema() != schema {
            return Err(sparse_error(dir, "opening", "its schema is not this version's"));
        }
        let bm25 = Self::ready(index, Some(dir.to_path_buf()))?;
        if bm25.len() != store.len() {
            return Err(sparse_error(
                dir,
                "opening",
                format!("it holds {} passages where its manifest says {}", bm25.len(), store.len()),
            ));
        }
        Ok(bm25)
    }

    /// The index kept beside `store` ([`Bm25::beside`]): opened when it matches the store, else
    /// built there (and the build reported on stderr when `progress`), or in memory when it
    /// cannot be written there.
    pub fn open_or_create(store: &PassageStore, progress: bool) -> Result<Self> {
        let dir = Self::beside(store);
        if dir.join(MANIFEST).is_file() {
            match Self::open(&dir, store) {
                Ok(bm25) => return Ok(bm25),
                Err(why) if progress => eprintln!("rebuilding the BM25 index: {why}"),
                Err(_) => {}
            }
        }
        let started = std::time::Instant::now();
        let bm25 = match Self::create(store, &dir) {
            Ok(bm25) => bm25,
            // A store in a directory this process may not write to still gets its BM25.
            Err(why) => {
                if progress {
                    eprintln!("cannot keep the BM25 index beside the store ({why}); building it in memory");
                }
                Self::build(store)?
            }
        };
        if progress {
            eprintln!(
                "built the BM25 index of {} passages in {} ({:.1} s)",
                store.len(),
                bm25.dir().map_or_else(|| "memory".to_string(), |d| d.display().to_string()),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(bm25)
    }

    /// Where [`Bm25::open_or_create`] keeps `store`'s index: `<store file>.bm25/`.
    pub fn beside(store: &PassageStore) -> PathBuf {
        let mut name = store.path().as_os_str().to_os_string();
        name.push(".bm25");
        PathBuf::from(name)
    }

    /// Writes every passage of `store` into `index` (`place` names it in errors).
    fn fill(index: &Index, store: &PassageStore, id: Field, body: Field, place: &Path) -> Result<()> {
        if store.is_empty() {
            return Err(RagError::Corpus {
                store: store.path().to_path_buf(),
                message: "BM25 over a store that holds no passage".into(),
            });
        }
        index.tokenizers().register(ANALYZER, analyzer());
        // One indexing thread: document ids follow the store's order, so ties rank in store order.
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, WRITER_BUDGET).map_err(|e| sparse_error(place, "writing", e))?;
        for passage in store.iter() {
            let passage = passage?;
            let mut document = TantivyDocument::default();
            document.add_u64(id, passage.id);
            document.add_text(body, indexed_text(passage.title, passage.text));
            writer.add_document(document).map_err(|e| sparse_error(place, "writing", e))?;
        }
        writer.commit().map_err(|e| sparse_error(place, "writing", e))?;
        writer.wait_merging_threads().map_err(|e| sparse_error(place, "writing", e))
    }

    fn ready(index: Index, dir: Option<PathBuf>) -> Result<Self> {
        let place = dir.clone().unwrap_or_else(|| PathBuf::from("(in memory)"));
        let analyzer = analyzer();
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| sparse_error(&place, "reading", e))?;
        let body = index.schema().get_field("body").map_err(|e| sparse_error(&place, "reading", e))?;
        Ok(Self { reader, body, analyzer, dir })
    }

    /// Passages indexed.
    pub fn len(&self) -> usize {
        self.reader.searcher().num_docs() as usize
    }

    /// Whether no passage is indexed (never, for an index this type built or opened).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the index is kept, `None` in memory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The distinct analyzed terms of `query`, in order of first appearance.
    fn terms(&self, query: &str) -> Vec<Term> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut terms: Vec<Term> = Vec::new();
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(self.body, &token.text);
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        terms
    }

    /// The `k` best passages for `query`, best first, as `(id, score)`; passages sharing no term
    /// with the query are never returned, so fewer than `k` may come back. Equal scores rank
    /// in store order.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(u64, f32)>> {
        let terms = self.terms(query);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let place = || self.dir.clone().unwrap_or_else(|| PathBuf::from("(in memory)"));
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new_multiterms_query(terms);
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| sparse_error(&place(), "searching", e))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let segment = searcher.segment_reader(address.segment_ord);
            let ids = segment.fast_fields().u64("id").map_err(|e| sparse_error(&place(), "reading ids", e))?;
            let id = ids
                .first(address.doc_id)
                .ok_or_else(|| sparse_error(&place(), "reading ids", format!("document {address:?} has no id")))?;
            hits.push((id, score));
        }
        // Stable: equal scores keep tantivy's order (document order, which is store order).
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(hits)
    }

    /// The `k` best passages of `knowledge`'s store for `query`, best first (fewer when fewer
    /// share a term with it).
    pub fn passages(&self, knowledge: &Knowledge, query: &str, k: usize) -> Result<Vec<PassageText>> {
        self.search(query, k)?.into_iter().map(|(id, _)| knowledge.passage(id)).collect()
    }

    /// recall@k of each `k` in `ks` on `examples`: the gold passage among the first k, or without
    /// a gold id, a passage of `store` containing an answer (DPR's has-answer), as for the dense
    /// retriever in [`crate::evaluate`].
    pub fn recall(&self, store: &PassageStore, examples: &[QaExample], ks: &[usize]) -> Result<Vec<(usize, f64)>> {
        if examples.is_empty() {
            return Err(crate::error::input("examples", "BM25 recall needs at least one example"));
        }
        let deepest = ks.iter().copied().max().unwrap_or(0);
        let mut hits = vec![0usize; ks.len()];
        for example in examples {
            let ranked: Vec<u64> = self.search(&example.question, deepest)?.into_iter().map(|(id, _)| id).collect();
            let first = first_relevant(&ranked, example, |id| {
                Ok(store.get(id)?.is_some_and(|p| has_answer(p.text, &example.answers)))
            })?;
            for (i, &k) in ks.iter().enumerate() {
                hits[i] += usize::from(first.is_some_and(|r| r < k));
            }
        }
        let n = examples.len() as f64;
        Ok(ks.iter().zip(&hits).map(|(&k, &h)| (k, h as f64 / n)).collect())
    }
}

#[cfg(test)]
mod tests {
    use rag_index::StoreBuilder;

    use super::*;

    fn make_store(dir: &Path, name: &str, passages: &[(u64, &str, &str)]) -> PassageStore {
        let path = dir.join(name);
        let mut builder = StoreBuilder::create(&path).unwrap();
        for (id, title, text) in passages {
            builder.push(Some(*id), title, text).unwrap();
        }
        builder.finish().unwrap()
    }

    const VELMORA: [(u64, &str, &str); 4] = [
        (10, "velmora", "the river flows to the sea ."),
        (11, "", "triskan is the capital of velmora ."),
        (12, "", "the capital of a land is a city ."),
        (13, "", "the capital of a land is a city ."),
    ];

    #[test]
    fn ranks_by_shared_rare_terms_and_breaks_ties_in_store_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = make_store(dir.path(), "s.store", &VELMORA);
        let bm25 = Bm25::build(&store).unwrap();
        let hits = bm25.search("what is the capital of velmora ?", 10).unwrap();
        assert_eq!(hits[0].0, 11, "both rare terms: {hits:?}");
        let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![11, 10, 12, 13], "ties in store order: {hits:?}");
        assert_eq!(hits[2].1, hits[3].1);
        assert!(bm25.search("unrelated words", 5).unwrap().is_empty());
        // Stop words alone match nothing; stems match across inflections; a term counts once.
        assert!(bm25.search("the of is a", 5).unwrap().is_empty());
        assert_eq!(bm25.search("rivers flowing", 5).unwrap()[0].0, 10);
        assert_eq!(bm25.search("velmora velmora", 5).unwrap(), bm25.search("velmora", 5).unwrap());
        let examples = [
            QaExample { question: "capital of velmora".into(), answers: vec!["triskan".into()], gold: Some(11) },
            QaExample { question: "velmora river".into(), answers: vec!["sea".into()], gold: None },
            QaExample { question: "what is a city".into(), answers: vec!["triskan".into()], gold: None },
        ];
        let recall = bm25.recall(&store, &examples, &[1, 2]).unwrap();
        assert_eq!(recall, vec![(1, 2.0 / 3.0), (2, 2.0 / 3.0)]);
    }

    #[test]
    fn a_persisted_index_searches_as_the_in_memory_one_and_is_tied_to_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = make_store(dir.path(), "s.store", &VELMORA);
        let memory = Bm25::build(&store).unwrap();
        let built = Bm25::open_or_create(&store, false).unwrap();
        assert_eq!(built.dir(), Some(Bm25::beside(&store).as_path()));
        assert!(Bm25::beside(&store).join(MANIFEST).is_file());
        let reopened = Bm25::open(&Bm25::beside(&store), &store).unwrap();
        for query in ["capital of velmora", "city land", "sea"] {
            let expected = memory.search(query, 3).unwrap();
            assert_eq!(built.search(query, 3).unwrap(), expected, "{query}");
            assert_eq!(reopened.search(query, 3).unwrap(), expected, "{query}");
        }
        assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));

        // Another store (one passage changed) is refused by name, and open_or_create rebuilds.
        let mut changed = VELMORA;
        changed[1].2 = "triskan is the capital of velmora and of nowhere else .";
        let other = make_store(dir.path(), "other.store", &changed);
        let error = Bm25::open(&Bm25::beside(&store), &other).unwrap_err().to_string();
        assert!(
            error.contains("s.store.bm25") && error.contains("another corpus") && error.contains("rebuild"),
            "{error}"
        );
        std::fs::rename(Bm25::beside(&store), Bm25::beside(&other)).unwrap();
        let rebuilt = Bm25::open_or_create(&other, false).unwrap();
        assert!(rebuilt.search("nowhere", 1).unwrap()[0].0 == 11);

        // A damaged manifest is refused, naming the file.
        std::fs::write(Bm25::beside(&other).join(MANIFEST), "{").unwrap();
        let error = Bm25::open(&Bm25::beside(&other), &other).unwrap_err().to_string();
        assert!(error.contains(MANIFEST), "{error}");
    }
}
