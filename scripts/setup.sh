#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project installed (editable) and its
# test tools. An existing torch in .venv stands; otherwise the CPU build of torch 2.13.0 is pinned
# (an unpinned torch would pull several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet -e ".[dev]"
