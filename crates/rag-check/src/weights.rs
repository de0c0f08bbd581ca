//! Where the real weights that some checks need are found.

use std::path::PathBuf;

/// The real all-MiniLM-L6-v2 directory, from `RAG_MINILM_DIR` or the default location of
/// `scripts/fetch-minilm.sh`; `None` (with the reason printed) when it is not there.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RAG_MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("rag-fixtures/all-MiniLM-L6-v2")
        }
    };
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        println!(
            "skipped: no all-MiniLM-L6-v2 weights at {} (run scripts/fetch-minilm.sh, or set RAG_MINILM_DIR)",
            dir.display()
        );
        None
    }
}

/// The directory of SmolLM2-135M-Instruct's GGUF file, from `RAG_SMOLLM2_DIR` or the default
/// location of `scripts/fetch-smollm2.sh`; `None` (with the reason printed) when it is not there.
pub fn smollm2_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RAG_SMOLLM2_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("rag-fixtures/smollm2-135m-instruct-q4_1")
        }
    };
    if dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file() {
        Some(dir)
    } else {
        println!(
            "skipped: no SmolLM2-135M-Instruct GGUF file in {} (run scripts/fetch-smollm2.sh, or set RAG_SMOLLM2_DIR)",
            dir.display()
        );
        None
    }
}
