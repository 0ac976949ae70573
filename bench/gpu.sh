#!/bin/bash
# The one device script of the GPU check. On a machine with an NVIDIA GPU (written for an H100 or
# H200) it:
#   1. builds the kernel lab with nvcc (sm_90a only)                       -> build.log
#   2. runs the PyTorch peers (while the lab compiles on the CPU)          -> torch_peer.log
#      then `tsclip bench train|infer` on ViT-B/32 (batch 256, 20-token
#      captions) and their PyTorch peer, torch_train.py (eager and compiled)  -> lab.log, torch_peer.log
#   3. validates the GEMM kernels on small problems; if the wgmma path fails, the test suite runs
#      with TSCLIP_CUDA_GEMM=mma (said in steps.log and the table)       -> lab.log
#   4. runs the test suite with CUDA as the backend                        -> vitest.log
#   5. runs the lab: validation against float64 references, then timings  -> lab.log
#   6. runs the lab's small problems and the attention op tests under
#      compute-sanitizer memcheck and racecheck, in parallel               -> sanitizer.log
#   7. prints one table, tsclip against PyTorch, with ratios               -> results.md
# Every step has its own time limit (timeout), cut further so that the whole run ends within
# 8 minutes (GPU_BUDGET_S, default 470 s); a step with no time left is skipped and says so.
# Everything lands in $OUT (8 files: env.log, steps.log and the ones above).
#
# How to call it, from the project root, after `npm install` and a CUDA build of the addon:
#   ../shared/tools/gpu-carry.sh build dist
#   then the device tool's run, with carry [".gpu"] and the command
#     source .gpu/enter.sh && bash bench/gpu.sh
#   (timeout_s 540 leaves room; the table is the last thing printed)
# On any machine with a GPU and the tree built:  OUT=/tmp/gpu-out bash bench/gpu.sh
# Knobs: GPU_SKIP="torch bench vitest sanitizer"  leaves steps out;
#        GPU_SANITIZE_TESTS=attention        the vitest filter run under memcheck.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/tsclip-gpu-out}
mkdir -p "$OUT"
STEPS="$OUT/steps.log"
: >"$STEPS"
: >"$OUT/lab.log"
: >"$OUT/sanitizer.log"
LAB=${LAB:-/tmp/tsclip-lab}  # the lab's programs
T0=$(date +%s)
DEADLINE=$((T0 + ${GPU_BUDGET_S:-470}))
skip() { case " ${GPU_SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }

# run_step NAME LIMIT_S LOG CMD...: appends the output to LOG, the exit code and seconds to steps.log.
# The limit shrinks to what is left before the deadline (minus 20 s for the table).
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t left
  t=$(date +%s)
  left=$((DEADLINE - 20 - t))
  [ $limit -gt $left ] && limit=$left
  if [ $limit -lt 5 ]; then
    echo "$name skipped: no time left" >>"$STEPS"
    echo "   $name: skipped, no time left"
    return 125
  fi
  echo "== $name (limit ${limit}s, at +$((t - T0))s)" >>"$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(($(date +%s) - t))s" >>"$STEPS"
  [ $rc = 124 ] && echo "   $name timed out after ${limit}s" >>"$log"
  echo "   $name: rc=$rc after $(($(date +%s) - t))s (total +$(($(date +%s) - T0))s)"
  return $rc
}

# --- 0. what we run on ---
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  node --version 2>&1
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
  command -v compute-sanitizer || echo "compute-sanitizer not on PATH"
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"

# --- 1. lab build (CPU) in the background; 2. PyTorch peers meanwhile (GPU) ---
# The tensor-core lab (build.sh), and the memory-bound lab programs of the Makefile when present.
OTHER_LABS="layernorm_forward softmax_forward adamw"
build_lab() {
  native/cuda/dev/build.sh "$LAB" || return 1
  if [ -f native/cuda/dev/Makefile ]; then
    make -C native/cuda/dev -j4 OUT="$LAB/other" $OTHER_LABS || echo "(the Makefile's lab programs did not build)"
  fi
}
export -f build_lab
export LAB OTHER_LABS
run_step build 170 "$OUT/build.log" bash -c build_lab &
BUILD_PID=$!
if ! skip torch; then
  run_step torch 90 "$OUT/torch_peer.log" python3 bench/gpu/torch_peer.py
fi

# tsclip's training step and image encoder, then the same in PyTorch (bench/gpu/torch_train.py);
# the JSON lines go to lab.log (tsclip) and torch_peer.log (PyTorch), where report.py pairs them.
# The precision is bf16 when the build has an autocast, else fp32 (`bench` exits 2 on bf16 then).
# 120 s in all: tsclip at most 40 + 25 s (making ViT-B/32's weights in JS takes several seconds),
# PyTorch the rest (it compiles only if 45 s are left). It runs while the lab may still be building.
BENCH_LIMIT=120
bench_train() {
  local t0=$SECONDS prec rc
  for prec in bf16 fp32; do
    timeout -k 5 40 node dist/cli.js bench train --model ViT-B-32 --batch-size 256 --caption-tokens 20 \
      --steps 8 --warmup 2 --device cuda --precision $prec --json >>"$OUT/lab.log" 2>&1
    rc=$?
    [ $rc = 2 ] || break
  done
  echo "tsclip bench train rc=$rc ($prec)"
  timeout -k 5 25 node dist/cli.js bench infer --model ViT-B-32 --batch-size 1024 --steps 8 --warmup 2 \
    --device cuda --precision $prec --json >>"$OUT/lab.log" 2>&1
  echo "tsclip bench infer rc=$?"
  python3 bench/gpu/torch_train.py --batch-size 256 --caption-tokens 20 --infer-batch 1024 --steps 8 --warmup 2 \
    --budget-s $((BENCH_LIMIT - 5 - (SECONDS - t0))) >>"$OUT/torch_peer.log" 2>&1
  echo "torch_train rc=$?"
}
export -f bench_train
export OUT BENCH_LIMIT
if ! skip bench; then
  run_step bench-train $BENCH_LIMIT "$OUT/lab.log" bash -c bench_train
fi

wait $BUILD_PID
BUILD_OK=0
[ -x $LAB/gemm ] && [ -x $LAB/attention_forward ] && [ -x $LAB/attention_backward ] &&
  [ -x $LAB/clip_loss ] && BUILD_OK=1
[ $BUILD_OK = 1 ] || { echo "lab build failed:"; tail -30 "$OUT/build.log"; }

# --- 3. the GEMM paths on small problems first: the suite avoids a wgmma path that fails ---
GEMM_ENV=()
if [ $BUILD_OK = 1 ]; then
  if ! run_step gemm-quick 30 "$OUT/lab.log" $LAB/gemm --quick; then
    GEMM_ENV=(TSCLIP_CUDA_GEMM=mma)
    echo "gemm-quick failed: the test suite runs with TSCLIP_CUDA_GEMM=mma" | tee -a "$STEPS"
  fi
fi

# --- 4. the test suite on CUDA (the carried addon) ---
if ! skip vitest; then
  run_step vitest 100 "$OUT/vitest.log" env NO_COLOR=1 TSCLIP_TEST_DEVICE=cuda ${GEMM_ENV[@]+"${GEMM_ENV[@]}"} node node_modules/vitest/vitest.mjs run
  tail -5 "$OUT/vitest.log"
fi

# --- 5. the lab: validation, then timings (nothing else on the GPU meanwhile) ---
if [ $BUILD_OK = 1 ]; then
  run_step lab-attention_forward 30 "$OUT/lab.log" $LAB/attention_forward
  run_step lab-attention_backward 40 "$OUT/lab.log" $LAB/attention_backward
  run_step lab-clip_loss 60 "$OUT/lab.log" $LAB/clip_loss
  run_step lab-gemm 60 "$OUT/lab.log" $LAB/gemm
  [ -x $LAB/conv ] && run_step lab-conv 45 "$OUT/lab.log" $LAB/conv
  for p in $OTHER_LABS; do
    [ -x "$LAB/other/$p" ] && run_step "lab-$p" 20 "$OUT/lab.log" "$LAB/other/$p"
  done
  grep -E "FAIL|INVALID|validations|error" "$OUT/lab.log" | head -40
fi

# --- 6. memory and race checkers, all at once on small problems ---
SAN_LIMIT=$((DEADLINE - 25 - $(date +%s)))
[ $SAN_LIMIT -gt 85 ] && SAN_LIMIT=85
if ! skip sanitizer && command -v compute-sanitizer >/dev/null && [ $SAN_LIMIT -ge 10 ]; then
  SAN_DIR=$(mktemp -d)
  t=$(date +%s)
  pids=()
  san() {  # san TOOL NAME CMD...
    local tool=$1 name=$2
    shift 2
    (
      timeout -k 5 $SAN_LIMIT compute-sanitizer --tool "$tool" --error-exitcode 3 "$@" >"$SAN_DIR/$tool-$name.log" 2>&1
      echo "$?" >"$SAN_DIR/$tool-$name.rc"
    ) &
    pids+=($!)
  }
  if [ $BUILD_OK = 1 ]; then
    for p in gemm attention_forward attention_backward clip_loss conv; do
      [ -x $LAB/$p ] || continue
      san memcheck "$p" $LAB/$p --quick
      san racecheck "$p" $LAB/$p --quick
    done
  fi
  san memcheck "vitest-${GPU_SANITIZE_TESTS:-attention}" --target-processes all \
    env NO_COLOR=1 TSCLIP_TEST_DEVICE=cuda ${GEMM_ENV[@]+"${GEMM_ENV[@]}"} node node_modules/vitest/vitest.mjs run "${GPU_SANITIZE_TESTS:-attention}"
  for pid in "${pids[@]}"; do wait "$pid"; done
  for f in "$SAN_DIR"/*.log; do
    n=$(basename "$f" .log)
    {
      echo "== sanitizer $n"
      tail -40 "$f"
      echo "SANITIZER $n rc=$(cat "$SAN_DIR/$n.rc" 2>/dev/null || echo ?) $(grep -E 'SUMMARY' "$f" | tail -1)"
    } >>"$OUT/sanitizer.log"
  done
  echo "sanitizer rc=- $(($(date +%s) - t))s" >>"$STEPS"
  grep '^SANITIZER' "$OUT/sanitizer.log"
  rm -rf "$SAN_DIR"
fi

# --- 7. the table ---
echo "total $(($(date +%s) - T0))s" >>"$STEPS"
python3 bench/gpu/report.py "$OUT"
