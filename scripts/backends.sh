#!/usr/bin/env bash
# The GPU backends, on every test run (scripts/test.sh calls this last):
#
# 1. Builds xtask with `cuda` and `wgpu`, so a GPU build never silently rots (CUDA compiles
#    without a GPU or toolkit: the driver is loaded at run time).
# 2. Installs Mesa's lavapipe (a Vulkan driver that runs on the CPU) when it is missing and this
#    user may install packages, then runs `cargo xtask backends`: the same seeded losses,
#    gradients and training step on the CPU and on wgpu (and CUDA where a GPU is present),
#    failing when one differs from the CPU beyond 1e-3 relative. With lavapipe installed, wgpu
#    is required to be present; without it, it is skipped with the reason printed.
# 3. LibTorch (`--device tch`): makes benches/torch's venv from PyPI (PyTorch 2.9.0, ~3 GB, reused
#    when it is there), builds xtask with `tch` against it (scripts/libtorch.sh), and runs the HF
#    parity checks and `backends` on it: the vendored burn-tch fixes (vendor/README.md) are held
#    by these. Where pip cannot make the venv, it is skipped with the reason printed.
#
# RAG_SKIP_BACKENDS=1 skips all of it (a quick local run of the CPU suite); RAG_SKIP_TCH=1 skips
# step 3 alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${RAG_SKIP_BACKENDS:-}" ]]; then
    echo "backends: skipped (RAG_SKIP_BACKENDS is set)"
    exit 0
fi

have_lavapipe() { compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null && compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null; }
if ! have_lavapipe; then
    sudo=""
    [[ $(id -u) != 0 ]] && command -v sudo >/dev/null && sudo="sudo -n"
    if [[ $(id -u) == 0 || -n "$sudo" ]]; then
        echo "backends: installing mesa-vulkan-drivers and libvulkan1 (lavapipe, a CPU Vulkan driver)"
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 \
            || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; } \
            || echo "backends: apt-get could not install lavapipe; wgpu will be skipped"
    fi
fi
require=()
if have_lavapipe; then
    require=(--require wgpu)
fi

# wgpu needs a runtime directory; autotuning every kernel on a CPU driver costs minutes and
# changes no result.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
cargo build -p xtask --features cuda,wgpu
cargo run -q -p xtask --features cuda,wgpu -- backends --devices cuda,wgpu "${require[@]}"

if [[ -n "${RAG_SKIP_TCH:-}" ]]; then
    echo "backends: tch skipped (RAG_SKIP_TCH is set)"
    exit 0
fi
tch_log=$(mktemp)
if ! bash benches/torch/setup.sh >/dev/null 2>"$tch_log"; then
    echo "backends: tch skipped: benches/torch/setup.sh could not make the PyTorch venv: $(tail -n 3 "$tch_log" | tr '\n' ' ')"
    exit 0
fi
# f32, as the models train (the real MiniLM and SmolLM2 weights too, when fetched), and f64, which
# holds the fixtures to 1e-9. The losses only in f64: in f32 their sharpest RAG-Sequence case
# cancels on every backend (`parity --help`).
real=(${RAG_MINILM_DIR:+--minilm-weights "$RAG_MINILM_DIR"} ${RAG_SMOLLM2_DIR:+--smollm2-gguf "$RAG_SMOLLM2_DIR"})
for fixtures in crates/rag-retriever crates/rag-generator crates/rag; do
    scripts/libtorch.sh --device tch parity "$fixtures/tests/fixtures/hf" --precision f32 "${real[@]}"
done
for fixtures in crates/rag-losses crates/rag-retriever crates/rag-generator crates/rag; do
    scripts/libtorch.sh --device tch parity "$fixtures/tests/fixtures/hf" --precision f64
done
scripts/libtorch.sh backends --devices tch --require tch
# The one-pass loss kernel on LibTorch against the composed ops (rag-losses' `tch` feature).
scripts/libtorch.sh cargo test -q -p rag-losses --features tch --test fused libtorch
