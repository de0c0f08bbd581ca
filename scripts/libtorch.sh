#!/usr/bin/env bash
# Runs `cargo xtask` with Burn's LibTorch backend compiled in, for `--device tch`: PyTorch's own
# CPU kernels (MKL / oneDNN GEMM) under the project's models, for users who have PyTorch.
#
# Usage: scripts/libtorch.sh <xtask command> [args...]
#   e.g. scripts/libtorch.sh --device tch bench-train
#        scripts/libtorch.sh --device tch bench-vs-torch --cases embedded-step
#    or: scripts/libtorch.sh cargo <cargo command> [args...]   (any cargo command in that environment)
#   e.g. scripts/libtorch.sh cargo test -p rag-losses --features tch --test fused
#
# It links against the libtorch inside PyTorch 2.9.0 (the version `tch` 0.22 expects) of the venv
# that benches/torch/setup.sh makes from PyPI (made now if missing, ~3 GB), so nothing is
# downloaded at build time: `LIBTORCH_USE_PYTORCH=1` makes torch-sys ask that Python where
# libtorch is. The first build compiles torch-sys's C++ shim (about 5 minutes on two cores); its
# artifacts sit beside the default build's in the same target directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$(bash "$root/benches/torch/setup.sh")
venv_bin=$(dirname "$python")
torch_lib=$("$python" -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent / "lib")')
export LIBTORCH_USE_PYTORCH=1
export PATH="$venv_bin:$PATH"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RAG_TORCH_PYTHON=${RAG_TORCH_PYTHON:-$python}
cd "$root"
if [[ ${1:-} == cargo ]]; then
    shift
    exec cargo "$@"
fi
exec cargo run --package xtask --features tch -- "$@"
