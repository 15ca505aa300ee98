#!/usr/bin/env bash
# GPU suite (benchmarks/README.md, "GPU suite"): correctness checks and benchmark tables on one
# CUDA GPU, within SUITE_BUDGET seconds (default 470, under 8 minutes).
#
#   bash benchmarks/gpu_suite.sh                    # on the GPU machine; tables on stdout
#   OUT=results bash benchmarks/gpu_suite.sh        # also one file per part in $OUT (7 files)
#   bash benchmarks/gpu_suite.sh --cpu-dry-run      # CPU: every part at toy sizes (interpreter); figures meaningless
#
# Parts: (a) versions and imports; (b) GPU tests: Triton attention vs a float64 reference
# (fp32, bf16) and the model's forward/backward with the Triton vs the PyTorch attention;
# (c) attention benchmark, eager / torch.compile / Triton, bf16, target shape first;
# (d) K-Means, torch on the GPU vs the CPU (+ faiss if importable); (e) bare training
# loops vs `fedmm run --device cuda` (default preset, train.amp=bf16, FED_ROUNDS rounds);
# (c2) the other attention shapes, with what time is left.
# Each part has its own timeout; a failing part is reported and the next one runs; the exit
# status is non-zero if any part but the optional c2 failed, timed out or found no time left.
#
# Runs on a bare source checkout with the system python (PYTHON, default python3): nothing is
# installed or built. A temporary folder lays the checkout out as the installed package
# (fedmm/ plus kernels/ as fedmm.kernels and cli/ as fedmm.cli, by symbolic links) and goes
# first on PYTHONPATH; PYTHONSAFEPATH keeps the checkout's own fedmm/ off sys.path. Without
# the compiled core fedmm._C the numpy/scipy fallbacks run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
BUDGET="${SUITE_BUDGET:-470}"
FED_ROUNDS="${FED_ROUNDS:-3}"
DEADLINE=$(( $(date +%s) + BUDGET ))
RESULTS=""
if [[ -n "${OUT:-}" ]]; then RESULTS="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"; fi   # absolute: the suite cd's

STAGE="$(mktemp -d)"
RUNS="$(mktemp -d)"
trap 'rm -rf "$STAGE" "$RUNS"' EXIT
mkdir "$STAGE/fedmm"
for entry in "$REPO"/fedmm/*; do ln -s "$entry" "$STAGE/fedmm/"; done
[[ -e "$STAGE/fedmm/kernels" ]] || ln -s "$REPO/kernels" "$STAGE/fedmm/kernels"
[[ -e "$STAGE/fedmm/cli" ]] || ln -s "$REPO/cli" "$STAGE/fedmm/cli"
export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
export FEDMM_CACHE="$RUNS/cache" MPLBACKEND=Agg
if (( DRY )); then export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""; else unset TRITON_INTERPRET; fi
cd "$REPO"

STATUS=()
FAILED=0

part_timeout() {  # min(budget, seconds left before the suite's deadline)
  local left=$(( DEADLINE - $(date +%s) ))
  echo $(( $1 < left ? $1 : left ))
}

run_part() {  # [OPTIONAL=1] run_part NAME TIMEOUT_S FILE COMMAND...: run, tee to $RESULTS/FILE, record the status
  local name="$1" t="$2" file="$3" rc start fail=1
  shift 3
  [[ "${OPTIONAL:-0}" == 1 ]] && fail=0 && name="$name (optional)"
  local log=/dev/null
  [[ -n "$RESULTS" ]] && log="$RESULTS/$file"
  echo
  local shown="$*"
  shown="${shown//$'\n'/ }"
  echo "================ [$name] timeout ${t}s: ${shown:0:300}" | tee -a "$log"
  if (( t < 15 )); then
    echo "[$name] SKIPPED: the suite's ${BUDGET}s budget is spent" | tee -a "$log"
    STATUS+=("$name: SKIPPED (budget spent)")
    (( fail )) && FAILED=1
    return 0
  fi
  start=$(date +%s)
  set +e
  timeout --kill-after=10 "$t" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  set -e
  local took=$(( $(date +%s) - start ))
  if (( rc == 0 )); then
    STATUS+=("$name: ok (${took}s)")
  elif (( rc == 124 || rc == 137 )); then
    STATUS+=("$name: TIMEOUT after ${took}s (limit ${t}s)"); (( fail )) && FAILED=1
    echo "[$name] TIMEOUT after ${took}s" | tee -a "$log"
  else
    STATUS+=("$name: FAILED (exit $rc, ${took}s)"); (( fail )) && FAILED=1
    echo "[$name] FAILED with exit status $rc" | tee -a "$log"
  fi
}

# ---------------------------------------------------------------- (a) versions and imports
ENV_PY="$(cat <<'PYEOF'
import importlib, platform, shutil, subprocess, sys
import torch
print(f"python {platform.python_version()} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
          f"{p.multi_processor_count} SMs, {torch.cuda.device_count()} device(s)")
else:
    print("device: no CUDA device")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
for name in ("triton", "transformers", "torchvision", "numpy", "scipy", "safetensors", "tokenizers", "typer",
             "rich", "pytest", "xdist", "faiss", "flwr", "tensorboard"):
    try:
        print(f"  {name:13s} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:
        print(f"  {name:13s} not importable ({type(exc).__name__})")
import fedmm, fedmm.cli.app, fedmm.kernels
from fedmm.ops.backend import extension_unavailable
print(f"fedmm from {fedmm.__path__[0]}; kernels {fedmm.kernels.__file__}; cli {fedmm.cli.app.__file__}")
print(f"fedmm._C: {extension_unavailable() or 'loaded'}; Triton kernels interpreted: {fedmm.kernels.INTERPRETED}")
PYEOF
)"
run_part "a versions" "$(part_timeout 30)" 1_env.txt "$PY" -c "$ENV_PY"

# ---------------------------------------------------------------- (b) GPU correctness tests
TESTS=(tests/ops/test_attention_triton.py tests/models/test_model_gpu.py tests/federated/test_train_amp.py
       tests/ops/test_kmeans.py)
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m gpu -k "not torch.float16" --rootdir "$REPO")
if "$PY" -c "import xdist" 2>/dev/null && (( ! DRY )); then PYTEST+=(-n 8); fi
run_part "b GPU tests (Triton vs reference fp32/bf16; model triton vs torch; amp; k-means)" "$(part_timeout 100)" 2_tests.txt \
  "${PYTEST[@]}" "${TESTS[@]}"

# ---------------------------------------------------------------- (c) attention benchmark, target shape
if (( DRY )); then
  ATT=(--device cpu --shapes 2x5x7x32x2 --dtypes fp32 --no-compile)
else
  ATT=(--quick)
fi
run_part "c attention (4096, 49, 64, 128, 4) bf16: eager / compile / triton" "$(part_timeout 110)" 3_attention.txt \
  "$PY" benchmarks/bench_attention_gpu.py "${ATT[@]}"

# ---------------------------------------------------------------- (d) K-Means
if (( DRY )); then KM=(--device cpu --sizes 300x16x4 --repeats 1); else KM=(--repeats 2); fi
run_part "d k-means torch cuda vs cpu" "$(part_timeout 35)" 4_kmeans.txt "$PY" benchmarks/bench_kmeans_gpu.py "${KM[@]}"

# ---------------------------------------------------------------- (e) training throughput
T=$(part_timeout 240)
JSON=()
[[ -n "$RESULTS" ]] && JSON=(--json "$RESULTS/train_gpu.json")
if (( DRY )); then
  TRAIN=(--device cpu --amp none --steps 2 --warmup 1 --client-rows 16 --preset smoke --rounds 1 -c workers=1
         -c data.n_samples=400 -c data.public_size=40 -c data.n_clients=3 -c data.n_image_only=1
         -c data.n_text_only=1 -c fed.n_centers=3 -c fed.local_centers=2 -c train.kd_public_per_round=16)
else
  TRAIN=(--device cuda --amp bf16 --rounds "$FED_ROUNDS")
fi
run_part "e training: bare loops vs fedmm run" "$T" 5_train.txt \
  "$PY" benchmarks/bench_train_gpu.py "${TRAIN[@]}" --budget "$T" --out "$RUNS/train" ${JSON[@]+"${JSON[@]}"}

# ---------------------------------------------------------------- (c2) the other attention shapes
if (( ! DRY )); then
  OPTIONAL=1 run_part "c2 attention, other shapes, bf16" "$(part_timeout 120)" 3_attention.txt \
    "$PY" benchmarks/bench_attention_gpu.py --shapes 256x49x64x128x4,512x49x128x256x8 --dtypes bf16
fi

# ---------------------------------------------------------------- summary
{
  echo
  echo "================ summary ($(( BUDGET - DEADLINE + $(date +%s) ))s of ${BUDGET}s)"
  for s in "${STATUS[@]}"; do echo "  $s"; done
} | tee ${RESULTS:+"$RESULTS/summary.txt"}
exit "$FAILED"
