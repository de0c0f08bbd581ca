//! SQuAD's questions split by article: no article's paragraphs are asked about in two splits, so
//! the dev and test questions are about articles training never saw (the corpus stays whole:
//! open-domain retrieval searches all of it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{RagError, Result};

/// Which split the article at `index` (in order of first appearance in the question file) goes
/// to: test when `index % 5 == 2`, dev when `index % 10 == 4`, train otherwise. On the 39
/// articles of `data/squad-v1.1-dev`: 27 train, 4 dev and 8 test articles.
pub fn article_split(index: usize) -> Split {
    if index % 5 == 2 {
        Split::Test
    } else if index % 10 == 4 {
        Split::Dev
    } else {
        Split::Train
    }
}

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Trained on.
    Train,
    /// Chooses settings.
    Dev,
    /// Reported.
    Test,
}

impl Split {
    /// `train`, `dev` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Dev => "dev",
            Self::Test => "test",
        }
    }
}

/// What [`split_by_article`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ArticleSplit {
    /// `<dir>/train.jsonl`, `dev.jsonl`, `test.jsonl`.
    pub files: BTreeMap<Split, PathBuf>,
    /// The articles of each split, in file order.
    pub articles: BTreeMap<Split, Vec<String>>,
    /// Questions in each split.
    pub questions: BTreeMap<Split, usize>,
}

/// Splits a SQuAD-style question file (JSONL with a `"title"` and an `"id"` on every line) by
/// article with [`article_split`], writing `train.jsonl`, `dev.jsonl` and `test.jsonl` under
/// `dir` (atomically, each line as it was). Within a split the questions are ordered by a hash
/// of their `id`, so any prefix of a file (an evaluation limit) samples all of its articles
/// rather than the first one. A line without a title or id is an error naming the file and line.
pub fn split_by_article(questions: &Path, dir: &Path) -> Result<ArticleSplit> {
    let text =
        std::fs::read_to_string(questions).map_err(|source| RagError::Io { path: questions.to_path_buf(), source })?;
    let bad = |line: usize, message: String| RagError::Data { path: questions.to_path_buf(), line, message };
    let mut order: Vec<String> = Vec::new();
    let mut lines: BTreeMap<Split, Vec<(u64, &str)>> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| bad(i + 1, format!("not a JSON object: {e}")))?;
        let field = |name: &str| match &value[name] {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(bad(i + 1, format!("no `{name}` (splitting by article needs each question's title and id)"))),
        };
        let (title, id) = (field("title")?, field("id")?);
        let index = match order.iter().position(|t| *t == title) {
            Some(index) => index,
            None => {
                order.push(title);
                order.len() - 1
            }
        };
        lines.entry(article_split(index)).or_default().push((fnv1a(id.as_bytes()), raw));
    }
    if order.is_empty() {
        return Err(bad(0, "no questions".into()));
    }
    std::fs::create_dir_all(dir).map_err(|source| RagError::Io { path: dir.to_path_buf(), source })?;
    let mut split = ArticleSplit { files: BTreeMap::new(), articles: BTreeMap::new(), questions: BTreeMap::new() };
    for (index, title) in order.iter().enumerate() {
        split.articles.entry(article_split(index)).or_default().push(title.clone());
    }
    for which in [Split::Train, Split::Dev, Split::Test] {
        let mut rows = lines.remove(&which).unwrap_or_default();
        if rows.is_empty() {
            return Err(bad(
                0,
                format!(
                    "{} articles: too few for a {} split (article i goes to test when i % 5 == 2, dev when i % 10 == 4)",
                    order.len(),
                    which.name()
                ),
            ));
        }
        rows.sort_by_key(|&(hash, _)| hash);
        let mut out = String::new();
        for (_, raw) in &rows {
            out.push_str(raw);
            out.push('\n');
        }
        let path = dir.join(format!("{}.jsonl", which.name()));
        rag_hf::write_atomic(&path, out.as_bytes())?;
        split.files.insert(which, path);
        split.questions.insert(which, rows.len());
    }
    Ok(split)
}

/// FNV-1a with splitmix64's finalizer: a stable, well-mixed hash (the standard library's is
/// not promised across releases, and FNV alone orders similar ids by their first bytes).
fn fnv1a(bytes: &[u8]) -> u64 {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_never_share_a_split_and_prefixes_sample_every_article() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for article in 0..10 {
            for q in 0..6 {
                let line = serde_json::json!({
                    "id": format!("{article}-{q}"), "question": format!("q{q} about a{article}?"),
                    "answers": ["x"], "gold": article, "title": format!("a{article}"),
                });
                lines.push_str(&format!("{line}\n"));
            }
        }
        let path = dir.path().join("questions.jsonl");
        std::fs::write(&path, lines).unwrap();
        let split = split_by_article(&path, &dir.path().join("split")).unwrap();
        assert_eq!(split.articles[&Split::Test], ["a2", "a7"]);
        assert_eq!(split.articles[&Split::Dev], ["a4"]);
        assert_eq!(split.articles[&Split::Train].len(), 7);
        assert_eq!(split.questions.values().sum::<usize>(), 60);
        let test = crate::read_qa_jsonl(&split.files[&Split::Test]).unwrap();
        assert_eq!(test.len(), 12);
        assert!(test.iter().all(|e| matches!(e.gold, Some(2 | 7))));
        // The first four test questions are not all from one article.
        let first: std::collections::BTreeSet<_> = test[..4].iter().map(|e| e.gold).collect();
        assert_eq!(first.len(), 2, "{test:?}");
        // Deterministic: the same file gives the same order.
        let again = split_by_article(&path, &dir.path().join("again")).unwrap();
        assert_eq!(
            std::fs::read(&split.files[&Split::Test]).unwrap(),
            std::fs::read(&again.files[&Split::Test]).unwrap()
        );
    }

    /// The repository's copy of SQuAD splits as `data/squad-v1.1-dev/README.md` says, and every
    /// question's gold paragraph belongs to its own article.
    #[test]
    fn the_repositorys_squad_splits_as_documented() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/squad-v1.1-dev");
        let dir = tempfile::tempdir().unwrap();
        let split = split_by_article(&data.join("questions.jsonl"), dir.path()).unwrap();
        let counts: Vec<(usize, usize)> = [Split::Train, Split::Dev, Split::Test]
            .iter()
            .map(|w| (split.articles[w].len(), split.questions[w]))
            .collect();
        assert_eq!(counts, [(27, 6404), (4, 752), (8, 1439)]);
        assert_eq!(split.articles[&Split::Dev], ["Teacher", "Ctenophora", "Private school", "Scottish Parliament"]);
        let corpus = std::fs::read_to_string(data.join("corpus.jsonl")).unwrap();
        let titles: Vec<String> = corpus
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["title"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(titles.len(), 1628);
        for (which, path) in &split.files {
            let text = std::fs::read_to_string(path).unwrap();
            for line in text.lines() {
                let q: serde_json::Value = serde_json::from_str(line).unwrap();
                let title = q["title"].as_str().unwrap();
                assert!(split.articles[which].iter().any(|a| a == title), "{title} in {which:?}");
                assert_eq!(titles[q["gold"].as_u64().unwrap() as usize], title, "{line}");
            }
        }
    }

    #[test]
    fn a_line_without_a_title_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, "{\"id\": \"a\", \"question\": \"q?\", \"answers\": [\"x\"], \"title\": \"t\"}\n{\"id\": \"b\", \"question\": \"q?\", \"answers\": [\"x\"]}\n").unwrap();
        let err = split_by_article(&path, dir.path()).unwrap_err().to_string();
        assert!(err.contains("q.jsonl") && err.contains(":2:") && err.contains("`title`"), "{err}");
    }
}
