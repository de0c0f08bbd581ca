#!/usr/bin/env bash
# Makes the Python side of `cargo xtask bench-vs-torch`: a venv with PyTorch, HF transformers,
# sentence-transformers and FAISS (benches/torch/requirements.txt), all from PyPI. Prints the
# venv's python on stdout; the install log goes to stderr. Nothing is installed outside the venv.
#
# Usage: setup.sh [VENV_DIR]   (default: $RAG_TORCH_VENV, else ${XDG_CACHE_HOME:-$HOME/.cache}/rag-rs/torch-venv)
# A venv whose recorded requirements match is reused as it is (torch is ~3 GB with its CUDA
# libraries, which PyPI's Linux wheel depends on even for CPU use).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${RAG_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-rs/torch-venv}}
stamp=$venv/.rag-rs-requirements
if [[ -x $venv/bin/python ]] && cmp -s "$here/requirements.txt" "$stamp"; then
  echo "$venv/bin/python"; exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "no $python on PATH" >&2; exit 1; }
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
cp "$here/requirements.txt" "$stamp"
echo "$venv/bin/python"
