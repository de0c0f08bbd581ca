//! BM25 over a passage store: the keyword baseline a dense retriever is reported beside.
//!
//! Scoring and analysis are the `bm25` crate's (Robertson–Zaragoza BM25 with k1 = 1.2, b = 0.75,
//! its English tokenizer: Unicode word segmentation, lower case, stop words removed, Snowball
//! stemming); this module only feeds it the store's `title text` and breaks score ties by passage
//! id, so a ranking does not depend on hash-map order.

use ::bm25::{Embedder, EmbedderBuilder, Language, Scorer};
use rag_index::PassageStore;

use crate::files::qa::{QaExample, has_answer};
use crate::training::eval::first_relevant;
use crate::{RagError, Result};

/// An in-memory BM25 index of every passage of a store.
pub struct Bm25 {
    embedder: Embedder<u32>,
    scorer: Scorer<u64, u32>,
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25").field("avgdl", &self.embedder.avgdl()).finish_non_exhaustive()
    }
}

/// The text BM25 indexes for a passage: its title, then its text (as the dense encoders read it).
fn indexed_text(title: &str, text: &str) -> String {
    if title.is_empty() { text.to_string() } else { format!("{title} {text}") }
}

impl Bm25 {
    /// Indexes every passage of `store` (the average length is fitted to the store).
    pub fn build(store: &PassageStore) -> Result<Self> {
        let mut passages = Vec::with_capacity(store.len());
        for passage in store.iter() {
            let passage = passage?;
            passages.push((passage.id, indexed_text(passage.title, passage.text)));
        }
        if passages.is_empty() {
            return Err(RagError::Corpus {
                store: store.path().to_path_buf(),
                message: "BM25 over a store that holds no passage".into(),
            });
        }
        let texts: Vec<&str> = passages.iter().map(|(_, t)| t.as_str()).collect();
        let embedder = EmbedderBuilder::<u32>::with_fit_to_corpus(Language::English, &texts).build();
        let mut scorer = Scorer::new();
        for (id, text) in &passages {
            scorer.upsert(id, embedder.embed(text));
        }
        Ok(Self { embedder, scorer })
    }

    /// The `k` best passages for `query`, best first, as `(id, score)`; passages sharing no term
    /// with the query are never returned, so fewer than `k` may come back.
    pub fn search(&self, query: &str, k: usize) -> Vec<(u64, f32)> {
        let mut hits: Vec<(u64, f32)> =
            self.scorer.matches(&self.embedder.embed(query)).into_iter().map(|m| (m.id, m.score)).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
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
            let ranked: Vec<u64> = self.search(&example.question, deepest).into_iter().map(|(id, _)| id).collect();
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

    #[test]
    fn ranks_by_shared_rare_terms_and_breaks_ties_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.store");
        let mut builder = StoreBuilder::create(&path).unwrap();
        builder.push(Some(10), "velmora", "the river flows to the sea .").unwrap();
        builder.push(Some(11), "", "triskan is the capital of velmora .").unwrap();
        builder.push(Some(12), "", "the capital of a land is a city .").unwrap();
        builder.push(Some(13), "", "the capital of a land is a city .").unwrap();
        let store = builder.finish().unwrap();
        let bm25 = Bm25::build(&store).unwrap();
        let hits = bm25.search("what is the capital of velmora ?", 10);
        assert_eq!(hits[0].0, 11, "both rare terms: {hits:?}");
        let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![11, 10, 12, 13], "ties in id order: {hits:?}");
        assert!(bm25.search("unrelated words", 5).is_empty());
        let examples = [
            QaExample { question: "capital of velmora".into(), answers: vec!["triskan".into()], gold: Some(11) },
            QaExample { question: "velmora river".into(), answers: vec!["sea".into()], gold: None },
            QaExample { question: "what is a city".into(), answers: vec!["triskan".into()], gold: None },
        ];
        let recall = bm25.recall(&store, &examples, &[1, 2]).unwrap();
        assert_eq!(recall, vec![(1, 2.0 / 3.0), (2, 2.0 / 3.0)]);
    }
}
