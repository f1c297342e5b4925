#!/usr/bin/env bash
# One GPU session, prepared to run unattended in under 8 minutes on a machine with an NVIDIA GPU whose
# python3 already holds a CUDA torch, Triton, transformers, pytest and hypothesis (nothing is fetched):
#
#   1. versions, GPU and driver                              -> $OUT/env.txt
#   2. install fastalign over that python without dependencies, build the CUDA extension (sm of the GPU)
#   3. the GPU test suite (pytest -m gpu)                     -> $OUT/pytest-gpu.txt (summary + failures)
#   4. fastalign check (every backend against the reference) -> $OUT/check.json
#   5. the GPU microbenchmarks at the roofline shapes (sea_step fp32 and bf16, aisp_perturb, aisp_update;
#      cuda, triton, naive, naive+torch.compile; GB/s and % of the copy bandwidth measured in the run)
#                                                             -> $OUT/bench-gpu.json, bench-gpu.csv, bench-gpu-bf16.csv
#   6. the decode step of a random Llama-3.2-1B-shape model in bf16 at batch 32: eager, compiled and
#      CUDA-graph captured, model.generate, the weight-read floor; AISP vs Best-of-N at equal samples
#                                                             -> $OUT/decode.json
# and a log of everything                                     -> $OUT/session.log
# (8 files: what one device call brings back). The step limits add up to about 11 minutes; the steps
# are expected to take 5-7 (the CUDA build about 1.5, the GPU tests about 2).
#
# Usage (from the repository root):
#   OUT=/some/dir bash bench/gpu_session.sh            on the GPU machine
#   bash bench/gpu_session.sh --dry-run                here, without a GPU: every step in a small CPU
#                                                      form (tiny shapes, a tiny model), to check the script
# Each step has its own time limit; a failing step is logged and the session goes on.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export FASTALIGN_CACHE_DIR=${FASTALIGN_CACHE_DIR:-/tmp/fastalign-cache}
LOG="$OUT/session.log"
: > "$LOG"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS CMD...: run with a time limit, output to the log, never abort the session
  local name=$1 limit=$2; shift 2
  log "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  log "== $name: exit $rc after $((SECONDS - t0))s"
  return $rc
}

log "fastalign GPU session (dry run: $DRY), output in $OUT"
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  nvcc --version 2>&1 | tail -n 1 || echo "nvcc: not available"
  "$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('transformers', transformers.__version__); print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$LOG"

if [ "$DRY" -eq 1 ]; then
  # here: the checkout's own venv already has fastalign installed; nothing to build for a GPU
  export TRITON_INTERPRET=1
else
  step install 60 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
  # build for this GPU only (its compute capability), then check that both GPU backends load
  export TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')")
  step build-cuda-extension 180 "$PY" -c "
from fastalign import available_backends as a
r = a('cuda'); print(r)
assert r['cuda'] is None, r['cuda']; assert r['triton'] is None, r['triton']"
fi

# every GPU test runs (no -x); the summary and the failures' short tracebacks land in the file
gpu_tests="tests"
[ "$DRY" -eq 1 ] && gpu_tests="tests/test_engine.py tests/test_library.py"  # collected and skipped here
log "== pytest-gpu (limit 180s)"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -m gpu $gpu_tests --tb=short -ra > "$OUT/pytest-gpu.txt" 2>&1
log "== pytest-gpu: exit $? ($(tail -n 1 "$OUT/pytest-gpu.txt"))"

if [ "$DRY" -eq 1 ]; then
  step check 300 sh -c "fastalign check --quick --backend torch --json > '$OUT/check.json'"
else
  step check 60 sh -c "fastalign check --json > '$OUT/check.json'"
fi

if [ "$DRY" -eq 1 ]; then
  step bench-gpu 300 "$PY" bench/bench_ops.py --quick --threads 1 --no-memory --op aisp_update --op sea_step \
    --provider naive --provider cpu --csv "$OUT/bench-gpu.csv"
  step bench-gpu-json 300 sh -c "'$PY' bench/bench_ops.py --quick --threads 1 --no-memory --op aisp_perturb --json > '$OUT/bench-gpu.json'"
else
  providers="--provider cuda --provider triton --provider naive"
  step bench-gpu-fp32 120 sh -c "'$PY' bench/bench_ops.py --preset gpu-roofline --dtype float32 $providers --provider naive+torch.compile --json --csv '$OUT/bench-gpu.csv' > '$OUT/bench-gpu.json'"
  # bf16 sea_step: the CSV holds every column; the tables go to the log
  step bench-gpu-bf16 60 "$PY" bench/bench_ops.py --preset gpu-roofline --dtype bfloat16 --op sea_step $providers --csv "$OUT/bench-gpu-bf16.csv"
fi

if [ "$DRY" -eq 1 ]; then
  step decode 300 "$PY" bench/bench_decode.py --dry-run --json "$OUT/decode.json"
else
  # the methods run eagerly here (--no-compile): the compiled/captured step is timed in the step table
  step decode 150 "$PY" bench/bench_decode.py --config llama-3.2-1b --dtype bfloat16 --device cuda --batch 32 \
    --prompt-len 64 --new-tokens 64 --n 8 --iterations 4 --no-compile --json "$OUT/decode.json"
fi

log "done; files: $(ls "$OUT" | tr '\n' ' ')"
