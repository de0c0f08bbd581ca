//! Question/answer examples and their JSONL files.

use std::path::Path;

use serde::Deserialize;

use crate::{RagError, Result};

/// A question with its accepted answers and, when known, the id of the passage that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaExample {
    /// The question.
    pub question: String,
    /// Accepted answers (the first is the training target); at least one, none empty.
    pub answers: Vec<String>,
    /// The gold passage id, when known: recall@k counts it; without it, a retrieved passage
    /// counts when its text contains an answer (DPR's "has answer").
    pub gold: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    question: Option<String>,
    answers: Option<Vec<String>>,
    #[serde(default, alias = "passage_id")]
    gold: Option<u64>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    /// The article's title (SQuAD-style files carry it); not read.
    #[serde(default)]
    title: Option<serde_json::Value>,
}

/// Reads a JSONL file of `{"question": "...", "answers": ["...", ...]}` (optionally `"gold"`
/// or `"passage_id"`: the answering passage's id; `"id"` and `"title"` are ignored). A missing file, bad JSON,
/// a missing or empty field is an error naming the file and line.
pub fn read_qa_jsonl(path: &Path) -> Result<Vec<QaExample>> {
    let text = std::fs::read_to_string(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
    let bad = |line: usize, message: String| RagError::Data { path: path.to_path_buf(), line, message };
    let mut examples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| bad(n, format!("not a QA object: {e}")))?;
        let _ = (line.id, line.title);
        let question = line.question.ok_or_else(|| bad(n, "missing field `question`".into()))?;
        if question.trim().is_empty() {
            return Err(bad(n, "`question` is empty".into()));
        }
        let answers = line.answers.ok_or_else(|| bad(n, "missing field `answers`".into()))?;
        if answers.is_empty() {
            return Err(bad(n, "`answers` is an empty list".into()));
        }
        if let Some(j) = answers.iter().position(|a| a.trim().is_empty()) {
            return Err(bad(n, format!("answer {j} is empty")));
        }
        examples.push(QaExample { question, answers, gold: line.gold });
    }
    if examples.is_empty() {
        return Err(bad(0, "no examples".into()));
    }
    Ok(examples)
}

/// Checks that every gold id of `examples` (as [`read_qa_jsonl`] read them from `path`) names a
/// passage of `store`: a gold id the store lacks would count as a miss in every recall without a
/// word. The error names the file and line.
pub fn check_gold_ids(path: &Path, examples: &[QaExample], store: &rag_index::PassageStore) -> Result<()> {
    if examples.iter().all(|e| e.gold.is_none()) {
        return Ok(());
    }
    // The reader makes one example of each non-blank line, in order.
    let text = std::fs::read_to_string(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
    let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, _)| i + 1);
    for (example, line) in examples.iter().zip(lines) {
        if let Some(id) = example.gold
            && store.get(id)?.is_none()
        {
            return Err(RagError::Data {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "gold passage {id} is not in the passage store {} ({} passages): was the file written for \
                     another corpus?",
                    store.path().display(),
                    store.len()
                ),
            });
        }
    }
    Ok(())
}

/// Writes examples as the JSONL [`read_qa_jsonl`] reads (`gold` included when known),
/// atomically.
pub fn write_qa_jsonl(path: &Path, examples: &[QaExample]) -> Result<()> {
    let mut text = String::new();
    for e in examples {
        let mut line = serde_json::json!({"question": e.question, "answers": e.answers});
        if let Some(gold) = e.gold {
            line["gold"] = serde_json::json!(gold);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    Ok(rag_hf::write_atomic(path, text.as_bytes())?)
}

/// SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lowered: String = s.to_lowercase().chars().map(|c| if c.is_ascii_punctuation() { ' ' } else { c }).collect();
    lowered.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Exact match after normalization against any accepted answer.
pub fn exact_match(prediction: &str, answers: &[String]) -> bool {
    let p = normalize_answer(prediction);
    answers.iter().any(|a| normalize_answer(a) == p)
}

/// SQuAD's token F1, the best over the accepted answers.
pub fn f1_score(prediction: &str, answers: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    let p: Vec<&str> = p.split(' ').filter(|w| !w.is_empty()).collect();
    answers
        .iter()
        .map(|a| {
            let a = normalize_answer(a);
            let a: Vec<&str> = a.split(' ').filter(|w| !w.is_empty()).collect();
            if p.is_empty() || a.is_empty() {
                return f64::from(u8::from(p.is_empty() && a.is_empty()));
            }
            let mut remaining = a.clone();
            let mut common = 0usize;
            for w in &p {
                if let Some(i) = remaining.iter().position(|x| x == w) {
                    remaining.swap_remove(i);
                    common += 1;
                }
            }
            if common == 0 {
                return 0.0;
            }
            let precision = common as f64 / p.len() as f64;
            let recall = common as f64 / a.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

/// Whether `text` contains an answer as a whole-word sequence, after normalization.
pub fn has_answer(text: &str, answers: &[String]) -> bool {
    let t = format!(" {} ", normalize_answer(text));
    answers.iter().any(|a| {
        let a = normalize_answer(a);
        !a.is_empty() && t.contains(&format!(" {a} "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_metrics() {
        let answers = vec!["The Eiffel Tower".to_string(), "eiffel".to_string()];
        assert!(exact_match("eiffel tower!", &answers));
        assert!(!exact_match("tower", &answers));
        assert!((f1_score("the tower of paris", &answers) - 2.0 * 0.5 * 0.333_333_333 / 0.833_333_333).abs() < 1e-6);
        assert!(has_answer("Built in 1889, the Eiffel tower is tall.", &answers));
        assert!(!has_answer("Eiffelstein", &answers));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let cases = [
            ("{\"question\": \"q\", \"answers\": [\"a\"]}\n{\"answers\": [\"a\"]}\n", ":2: missing field `question`"),
            ("{\"question\": \"q\", \"answers\": []}\n", ":1: `answers` is an empty list"),
            ("{\"question\": \"q\", \"answers\": [\"a\", \" \"]}\n", ":1: answer 1 is empty"),
            ("{\"question\": \"q\"\n", ":1: not a QA object"),
            ("{\"question\": \"q\", \"answer\": [\"a\"]}\n", ":1: not a QA object: unknown field `answer`"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let err = read_qa_jsonl(&path).unwrap_err().to_string();
            assert!(err.contains("train.jsonl") && err.contains(want), "{err} (wanted {want})");
        }
        let err = read_qa_jsonl(&dir.path().join("missing.jsonl")).unwrap_err().to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
        // SQuAD-style files carry the article's title too.
        std::fs::write(&path, "{\"question\": \"q\", \"answers\": [\"a\"], \"passage_id\": 7, \"title\": \"T\"}\n")
            .unwrap();
        let read = read_qa_jsonl(&path).unwrap();
        assert_eq!(read[0].gold, Some(7));
        write_qa_jsonl(&path, &read).unwrap();
        assert_eq!(read_qa_jsonl(&path).unwrap(), read, "round trip");
    }

    #[test]
    fn a_gold_id_the_store_lacks_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = rag_index::StoreBuilder::create(&dir.path().join("store")).unwrap();
        builder.push(Some(3), "t", "three").unwrap();
        builder.push(Some(4), "t", "four").unwrap();
        let store = builder.finish().unwrap();
        let path = dir.path().join("dev.jsonl");
        let line = |gold: u64| format!("{{\"question\": \"q\", \"answers\": [\"a\"], \"gold\": {gold}}}\n");
        std::fs::write(&path, format!("{}\n{}{}", line(3), line(4), line(9))).unwrap();
        let examples = read_qa_jsonl(&path).unwrap();
        let err = check_gold_ids(&path, &examples, &store).unwrap_err().to_string();
        assert!(err.contains("dev.jsonl:4: gold passage 9 is not in the passage store"), "{err}");
        std::fs::write(&path, format!("{}{}", line(3), line(4))).unwrap();
        check_gold_ids(&path, &read_qa_jsonl(&path).unwrap(), &store).unwrap();
    }
}
