#!/usr/bin/env bash
# Prepare .gpu/ (ignored by git), the folder the GPU suite carries to the GPU machine, which reaches
# no package registry and has no ../shared beside the checkout:
#   .gpu/wheels/         cp312 wheels the machine lacks: tensordict, torchrl and their small
#                        dependencies, at the versions of constraints.txt
#   .gpu/shared/         upstream's golden data and handmade levels (from ../shared or $KINETIX_SHARED)
#   .gpu/upstream-kit/   upstream's wheels and import stubs, to time upstream in the same run
#   .gpu/triton-cache/   with --triton-cache: every kernel variant of the suite compiled here for
#                        sm_90 with the GPU machine's Triton (3.6, CI's oldest environment), through
#                        Triton's own launcher (kinetix_torch.kernels.precompile), so the GPU run
#                        loads them instead of compiling (about 15 minutes of this machine's CPU;
#                        unverified on the GPU until a run shows the suite's warm stage in seconds)
# About 55 MB; the device tool carries at most 64 MiB with the checkout. Then:
#   run(command="bash benchmarks/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${KINETIX_SHARED:-../shared}
PIP=${PIP:-.venv/bin/pip}
CARRIED="tensordict torchrl pyvers hoptorch orjson importlib_metadata lazy-importer"
mkdir -p .gpu/wheels
rm -f .gpu/wheels/*.whl
specs=()
for name in $CARRIED; do
  pin=$(grep -i "^${name}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "gpu_pack.sh: constraints.txt pins no version of $name" >&2; exit 2; }
  specs+=("$pin")
done
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${specs[@]}"
rm -rf .gpu/shared .gpu/upstream-kit
mkdir -p .gpu/shared
cp -r "$SHARED/golden" "$SHARED/levels" .gpu/shared/
cp -r "$SHARED/upstream-kit" .gpu/upstream-kit
if [ "${1:-}" = "--triton-cache" ]; then
  bash scripts/ci_oldest.sh --setup-only
  rm -rf .gpu/triton-cache
  TRITON_CACHE_DIR="$PWD/.gpu/triton-cache" PYTHONPATH="$PWD/.venv-triton36" env -u TRITON_INTERPRET \
    .venv/bin/python -m kinetix_torch.kernels.precompile --sweep --arch 90
fi
du -sh .gpu .gpu/*
