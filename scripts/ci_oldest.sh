#!/usr/bin/env bash
# CI's second environment: the oldest Triton the project supports (3.6, the GPU machine's) over
# the main .venv (same torch, tensordict and torchrl as the GPU machine gets), as an overlay folder
# .venv-triton36 put first on PYTHONPATH. Runs a representative subset of the kernel interpreter
# tests, the launch binding, the env tests and the ahead-of-time compile for sm_90 (size S, the
# largest kernel). Needs scripts/setup.sh first.
# --setup-only: make the overlay and stop.
set -euo pipefail
cd "$(dirname "$0")/.."
OVERLAY=.venv-triton36
TRITON_PIN=$(grep '^triton==' constraints-oldest.txt)
if ! PYTHONPATH=$OVERLAY .venv/bin/python -c "import triton, sys; sys.exit(triton.__version__ != '${TRITON_PIN#triton==}')" 2>/dev/null; then
  rm -rf "$OVERLAY"
  .venv/bin/pip install --quiet --no-deps --target "$OVERLAY" "$TRITON_PIN"
fi
export PYTHONPATH="$PWD/$OVERLAY"
if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
.venv/bin/python - <<'PY'
import importlib.metadata as metadata, sys
import tensordict, torch, torchrl, triton
pins = dict(line.strip().split("==") for line in open("constraints-oldest.txt") if "==" in line and not line.startswith("#"))
found = {"triton": triton.__version__, "tensordict": tensordict.__version__, "torchrl": torchrl.__version__}
print("oldest environment:", found, "torch", torch.__version__)
wrong = {k: v for k, v in found.items() if v != pins[k]}
sys.exit(f"constraints-oldest.txt pins {pins}, found {wrong}" if wrong else 0)
PY
.venv/bin/python -m pytest -q -p no:cacheprovider \
  "tests/test_kernels.py::test_single_steps_match_reference[triton-interpret-handmade/s]" \
  "tests/test_kernels.py::test_random_scenes_match_reference[triton-interpret-random/l]" \
  "tests/test_kernels.py::test_env_step_contact_info_matches_reference[triton-interpret]" \
  tests/test_kernel_launch_binding.py tests/test_env.py tests/test_packed_state.py "$@"
env -u TRITON_INTERPRET .venv/bin/python -m kinetix_torch.kernels.aot --archs 90 --sizes s
