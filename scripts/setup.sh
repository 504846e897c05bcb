#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project installed (editable) and its
# test tools, at the versions CI tests (constraints.txt). A torch already in .venv stands;
# otherwise the CPU build of torch 2.13.0 is installed: from a local wheel or the package index
# when one offers it, else from PyTorch's CPU wheel index (never the default CUDA build, several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_CPU="torch==2.13.0+cpu"
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet "$TORCH_CPU" 2>/dev/null \
    || .venv/bin/pip install --quiet --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_CPU"
fi
.venv/bin/pip install --quiet -c constraints.txt -e ".[dev]"
