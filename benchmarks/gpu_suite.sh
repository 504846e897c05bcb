#!/usr/bin/env bash
# One-shot GPU suite: install, CUDA tests, engine / env / training benchmarks and a launch-config
# sweep, in one call of at most 9 minutes on the lent GPU machine (an H200 that reaches no package
# registry and runs its own python3, torch 2.11, triton 3.6 and jax 0.11).
#
# Here, once per session (downloads the wheels, copies ../shared; the folder is ignored by git):
#     bash benchmarks/gpu_pack.sh
# Then one device call, from the repository root:
#     run(command="bash benchmarks/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
# On a CPU machine (CI), every stage runs at tiny sizes:
#     bash benchmarks/gpu_suite.sh --dry-run [--out DIR]
#
# Results go to $OUT (or --out): stages.csv (stage, budget, seconds, exit code, written as each
# stage ends), suite.log (everything printed), info.json, tests.log, engine.csv, env.csv,
# train.csv, launch.csv. The device tool brings back at most 8 files: keep it that way. Every stage
# has its own budget and every benchmark writes its CSV row by row, so a stage cut short still
# returns what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
OUT_DIR=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    *) echo "gpu_suite.sh: unknown argument $1 (expected --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  OUT_DIR=$(mktemp -d /tmp/gpu_suite.XXXXXX)
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
exec > >(tee -a "$OUT_DIR/suite.log") 2>&1

PYTHON=${PYTHON:-python3}
if [ "$DRY_RUN" = 1 ] && [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
fi
CARRY=.gpu
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU
export KINETIX_SHARED=${KINETIX_SHARED:-$( [ -d "$CARRY/shared" ] && echo "$PWD/$CARRY/shared" || echo "$PWD/../shared" )}
export KINETIX_JAX_CACHE=${KINETIX_JAX_CACHE:-/tmp/kinetix_jax_cache}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/kinetix_triton_cache}
if [ -d "$CARRY/triton-cache" ] && [ "$DRY_RUN" = 0 ]; then
  mkdir -p "$TRITON_CACHE_DIR" && cp -r "$CARRY/triton-cache/." "$TRITON_CACHE_DIR/"
fi

# Sizes per mode: the GPU run, or a dry run that only proves every stage still works.
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  ENGINE_ARGS=(--sizes s --batch-sizes 4 --min-seconds 0.01 --repeats 1 --warm-steps 2 --no-upstream)
  ENV_ARGS=(--sizes s --batch-sizes 4 --observation-types symbolic_flat symbolic_entity --min-seconds 0.01 --repeats 1 --random-resets --no-upstream)
  TRAIN_ARGS=(--sizes s --networks mlp --num-envs 4 --num-steps 4 --update-epochs 1 --num-minibatches 1 --repeats 1)
  LAUNCH_ARGS=(--sizes s --batch-sizes 4 --min-seconds 0.01 --repeats 1)
  BUDGET_INFO=60 BUDGET_INSTALL=60 BUDGET_WARM=60 BUDGET_TESTS=120 BUDGET_ENGINE=120 BUDGET_ENV=240 BUDGET_TRAIN=120 BUDGET_LAUNCH=120
else
  DEVICE=cuda
  ENGINE_ARGS=(--sizes s m l --batch-sizes 256 16384 262144 1 4096 65536 --min-seconds 0.2 --repeats 3)
  ENV_ARGS=(--sizes m --batch-sizes 256 8192 65536 --min-seconds 0.3 --repeats 3 --random-resets
            --observation-types symbolic_entity symbolic_flat pixels blind symbolic_flat_padded)
  TRAIN_ARGS=(--sizes s m --networks mlp transformer --num-envs 2048 --num-steps 64 --repeats 2)
  LAUNCH_ARGS=(--sizes s m l --batch-sizes 65536 --min-seconds 0.2 --repeats 3)
  # Seconds per stage; 540 in all (the device call's limit is 600, the lease's 900).
  BUDGET_INFO=15 BUDGET_INSTALL=25 BUDGET_WARM=110 BUDGET_TESTS=150 BUDGET_ENGINE=100 BUDGET_ENV=70 BUDGET_TRAIN=40 BUDGET_LAUNCH=30
fi

echo "stage,budget_s,seconds,exit_code" > "$OUT_DIR/stages.csv"
SUITE_START=$(date +%s)

# stage NAME BUDGET COMMAND...: runs COMMAND under its own time limit and records how it went.
stage() {
  local name=$1 budget=$2
  shift 2
  echo "=== stage $name (budget ${budget}s) $(date -u +%FT%TZ): $*"
  local start=$(date +%s%N)
  timeout --signal=INT --kill-after=10 "$budget" "$@"
  local code=$?
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  local seconds=$(( ms / 1000 )).$(( ms % 1000 / 100 ))
  echo "$name,$budget,$seconds,$code" >> "$OUT_DIR/stages.csv"
  echo "=== stage $name: exit $code after ${seconds}s"
  return 0
}

install_packages() {
  # Carried wheels (tensordict, torchrl and their small dependencies) into a private folder;
  # then the project itself, editable, with no index and no build isolation.
  local site=/tmp/kinetix_site
  if [ -d "$CARRY/wheels" ] && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$CARRY"/wheels/*.whl || return 1
  fi
  if [ -d "$CARRY/upstream-kit/whl" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$CARRY"/upstream-kit/whl/*.whl || return 1
  fi
  if ! "$PYTHON" -c "import kinetix_torch" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . || return 1
  fi
  "$PYTHON" benchmarks/gpu_info.py --imports-only
}
run_tests() {
  # The gpu-marked tests, compiled kernels (no interpreter). Without CUDA (dry run) they skip.
  TRITON_INTERPRET=0 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT_DIR/tests.log" 2>&1
  local code=$?
  tail -15 "$OUT_DIR/tests.log"
  return $code
}
export -f install_packages run_tests
export PYTHON CARRY OUT_DIR
if [ "$DRY_RUN" = 0 ]; then
  export PYTHONPATH=/tmp/kinetix_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d "$CARRY/upstream-kit" ] && [ "$DRY_RUN" = 0 ]; then
  export KINETIX_UPSTREAM_KIT="$PWD/$CARRY/upstream-kit"
fi

stage info "$BUDGET_INFO" "$PYTHON" benchmarks/gpu_info.py --out "$OUT_DIR/info.json"
if [ "$DRY_RUN" = 0 ]; then
  stage install "$BUDGET_INSTALL" bash -c install_packages
else
  stage install "$BUDGET_INSTALL" "$PYTHON" benchmarks/gpu_info.py --imports-only
fi
# Compile every kernel variant the later stages launch, in parallel processes (ptxas is
# single-threaded; the machine has 16 cores), into the shared Triton cache.
stage warm "$BUDGET_WARM" "$PYTHON" benchmarks/warm_kernels.py --device "$DEVICE" --sweep
stage tests "$BUDGET_TESTS" bash -c run_tests
stage engine "$BUDGET_ENGINE" "$PYTHON" benchmarks/engine.py "${ENGINE_ARGS[@]}" --out "$OUT_DIR/engine.csv" --ceilings "$OUT_DIR/info.json"
stage env "$BUDGET_ENV" "$PYTHON" benchmarks/env.py --device "$DEVICE" "${ENV_ARGS[@]}" --csv "$OUT_DIR/env.csv"
stage train "$BUDGET_TRAIN" "$PYTHON" benchmarks/train.py --device "$DEVICE" "${TRAIN_ARGS[@]}" --csv "$OUT_DIR/train.csv"
stage launch "$BUDGET_LAUNCH" "$PYTHON" benchmarks/launch_sweep.py --device "$DEVICE" "${LAUNCH_ARGS[@]}" --csv "$OUT_DIR/launch.csv"

echo "=== suite done in $(( $(date +%s) - SUITE_START ))s; stages:"
column -s, -t < "$OUT_DIR/stages.csv" 2>/dev/null || cat "$OUT_DIR/stages.csv"
echo "results in $OUT_DIR"
