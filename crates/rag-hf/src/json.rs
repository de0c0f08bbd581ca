//! Reading JSON files with errors that name the file, line and column.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{HfError, Result};

/// Reads and parses a JSON file (a `config.json`, a sharded-checkpoint index, a
/// sentence-transformers module config).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| HfError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Reads a `tokenizer.json` with the `tokenizers` crate. The JSON is parsed first, so a syntax
/// error names its line and column; and since that crate panics on some malformed files (found
/// by fuzzing, 0.22: a bad `decoder` section while reading, a template post-processor naming a
/// missing token while encoding), a panic while it reads the file or first encodes is caught and
/// becomes an error naming the file.
pub fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    let syntax = |e: serde_json::Error| HfError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(syntax)?;
    // Parsed, then tried once on a single text and on a pair with and without special tokens,
    // and decoded: a post-processor template naming a token the vocabulary lacks panics there,
    // whatever the text, and is refused here rather than at the first batch.
    let parsed = std::panic::catch_unwind(|| {
        let tokenizer = text.parse::<tokenizers::Tokenizer>()?;
        for special in [false, true] {
            let single = tokenizer.encode("a probe, ünïcode ?", special)?;
            tokenizer.encode(("a question", "a passage"), special)?;
            tokenizer.decode(single.get_ids(), !special)?;
        }
        Ok::<_, tokenizers::Error>(tokenizer)
    });
    let invalid = |message: String| HfError::Tokenizer { path: path.to_path_buf(), message };
    match parsed {
        Ok(Ok(tokenizer)) => Ok(tokenizer),
        Ok(Err(e)) => Err(invalid(e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(invalid(format!("not a tokenizer file the tokenizers crate can read ({what})")))
        }
    }
}
