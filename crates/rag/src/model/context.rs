//! Turning retrieved passages, questions and answers into generator token rows.
//!
//! Special tokens come from the generator's config, not from the tokenizer's post-processor, so
//! a tokenizer trained from scratch (which has none) and HF's BART tokenizer give the same rows.

use rag_generator::{GeneratorTokenizer, SpecialTokens};

use crate::Result;
use crate::model::config::ContextFormat;

/// A passage's text as retrieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassageText {
    /// The passage id ([`rag_index::NO_ID`] for an empty slot).
    pub id: u64,
    /// Its title (may be empty).
    pub title: String,
    /// Its text.
    pub text: String,
}

/// HF's `postprocess_docs` string for one passage and question: the title's surrounding quotes
/// removed, then `title + title_sep + text + doc_sep + question` with `"  "` replaced by `" "`.
pub fn seq2seq_text(passage: &PassageText, question: &str, title_sep: &str, doc_sep: &str) -> String {
    let title = passage.title.strip_prefix('"').unwrap_or(&passage.title);
    let title = title.strip_suffix('"').unwrap_or(title);
    format!("{title}{title_sep}{}{doc_sep}{question}", passage.text).replace("  ", " ")
}

fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(template.to_string(), |s, (key, value)| s.replace(key, value))
}

fn encode(tokenizer: &GeneratorTokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer.encode(text, false)?)
}

/// The encoder inputs (seq2seq) or prompts (decoder-only) of one question with each of its
/// passages.
pub(crate) fn context_rows(
    format: &ContextFormat,
    tokenizer: &GeneratorTokenizer,
    special: SpecialTokens,
    question: &str,
    passages: &[PassageText],
) -> Result<Vec<Vec<u32>>> {
    let start = || -> Vec<u32> { special.bos.into_iter().collect() };
    match format {
        ContextFormat::Seq2Seq { title_sep, doc_sep, max_tokens } => passages
            .iter()
            .map(|p| {
                let mut ids = start();
                ids.extend(encode(tokenizer, &seq2seq_text(p, question, title_sep, doc_sep))?);
                ids.truncate(max_tokens - 1);
                ids.push(special.eos);
                Ok(ids)
            })
            .collect(),
        ContextFormat::Background { background, max_background_tokens, .. } => {
            let instruction = instruction_ids(format, tokenizer, question)?;
            passages
                .iter()
                .map(|p| {
                    let mut ids = start();
                    let mut bg = encode(tokenizer, &fill(background, &[("{title}", &p.title), ("{text}", &p.text)]))?;
                    bg.truncate(*max_background_tokens);
                    ids.extend(bg);
                    ids.extend_from_slice(&instruction);
                    Ok(ids)
                })
                .collect()
        }
    }
}

/// The instruction tokens of a decoder-only prompt (what every passage's prompt ends with).
pub(crate) fn instruction_ids(
    format: &ContextFormat,
    tokenizer: &GeneratorTokenizer,
    question: &str,
) -> Result<Vec<u32>> {
    match format {
        ContextFormat::Background { instruction, .. } => {
            encode(tokenizer, &fill(instruction, &[("{question}", question)]))
        }
        ContextFormat::Seq2Seq { .. } => {
            Err(crate::error::input("context", "a seq2seq context has no separate instruction"))
        }
    }
}

/// The target tokens of an answer: `<s> answer </s>` for a seq2seq generator (what BART
/// generates after its decoder start), `answer_prefix + answer` then `<eos>` for a decoder-only
/// one.
pub(crate) fn answer_ids(
    format: &ContextFormat,
    tokenizer: &GeneratorTokenizer,
    special: SpecialTokens,
    answer: &str,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    match format {
        ContextFormat::Seq2Seq { .. } => {
            ids.extend(special.bos);
            ids.extend(encode(tokenizer, answer)?);
        }
        ContextFormat::Background { answer_prefix, .. } => {
            ids.extend(encode(tokenizer, &format!("{answer_prefix}{answer}"))?);
        }
    }
    ids.push(special.eos);
    Ok(ids)
}
