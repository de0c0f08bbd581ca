//! Where the real weights that some checks need are found.

use std::path::PathBuf;

/// The directory `variable` names, else `dir` under the fetch scripts' cache
/// (`$XDG_CACHE_HOME/rag-fixtures`, or `~/.cache/rag-fixtures`), if it holds `file`; `None`
/// (with the reason printed, naming `what` and the `script` that fetches it) otherwise.
fn fetched(variable: &str, dir: &str, file: &str, what: &str, script: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(variable) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("rag-fixtures").join(dir)
        }
    };
    if dir.join(file).is_file() {
        Some(dir)
    } else {
        println!("skipped: no {what} in {} (run scripts/{script}, or set {variable})", dir.display());
        None
    }
}

/// The real all-MiniLM-L6-v2 directory, from `RAG_MINILM_DIR` or the default location of
/// `scripts/fetch-minilm.sh`; `None` (with the reason printed) when it is not there.
pub fn minilm_dir() -> Option<PathBuf> {
    fetched("RAG_MINILM_DIR", "all-MiniLM-L6-v2", "model.safetensors", "all-MiniLM-L6-v2 weights", "fetch-minilm.sh")
}

/// The directory of SmolLM2-135M-Instruct's GGUF file, from `RAG_SMOLLM2_DIR` or the default
/// location of `scripts/fetch-smollm2.sh`; `None` (with the reason printed) when it is not there.
pub fn smollm2_dir() -> Option<PathBuf> {
    fetched(
        "RAG_SMOLLM2_DIR",
        "smollm2-135m-instruct-q4_1",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct GGUF file",
        "fetch-smollm2.sh",
    )
}
