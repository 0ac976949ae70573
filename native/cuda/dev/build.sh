#!/bin/bash
# Builds the kernel lab (standalone programs; no addon, no cmake) into $1 or /tmp/tsclip-lab.
#   native/cuda/dev/build.sh [outdir]     nvcc, sm_90a only (H100/H200); LAB_GENCODE overrides,
#                                         e.g. LAB_GENCODE=-gencode=arch=compute_80,code=sm_80
#   native/cuda/dev/build.sh emu [group]  g++ only: builds and runs the CPU emulation of the kernels
#                                         (group: gemm, attention, clip or conv; all by default)
# Programs: gemm attention_forward attention_backward clip_loss conv (each takes --quick: validation only).
set -eu
cd "$(dirname "$0")/../../.."
if [ "${1:-}" = emu ]; then
  out=${TMPDIR:-/tmp}/tsclip-lab
  mkdir -p "$out"
  g++ -std=c++17 -O1 -DTSCLIP_EMU -Wall -Wno-unknown-pragmas -Inative native/cuda/dev/emu_test.cpp -o "$out/emu_test"
  exec "$out/emu_test" "${@:2}"
fi
out=${1:-${TMPDIR:-/tmp}/tsclip-lab}
mkdir -p "$out"
gencode=${LAB_GENCODE:--gencode=arch=compute_90a,code=sm_90a}
flags=(-std=c++17 --expt-relaxed-constexpr -O3 $gencode -Inative -Inative/cuda/dev -lineinfo)
pids=()
for p in gemm attention_forward attention_backward clip_loss conv; do
  nvcc "${flags[@]}" "native/cuda/dev/$p.cu" -o "$out/$p" &
  pids+=($!)
done
fail=0
for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
[ $fail = 0 ] || { echo "lab build failed" >&2; exit 1; }
echo "lab built in $out"
