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
#
# RAG_SKIP_BACKENDS=1 skips all of it (a quick local run of the CPU suite).
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
