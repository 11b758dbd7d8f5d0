#!/usr/bin/env bash
# The share of a train step's CPU time spent inside matrix multiplication (gemm micro-kernels and
# packing), sampled by `perf` over the steady-state steps only (model load and the warm-up step are
# skipped with `perf record -D`). Issue 6's goal "a step at most 1.2x its own pure matmul time" is
# 100 / share. Usage: [STEPS=3] bash bench/matmul_share.sh [CHECKPOINT] [DELAY_MS] [train-step options, e.g. --batch 8 --seq 256]
# (STEPS: the timed steps after the warm-up one; more steps, more samples.)
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:-bench/out/smollm2-retro}
delay=${2:-15000}
shift $(( $# < 2 ? $# : 2 ))
data=$(mktemp --suffix=.perf.data)
trap 'rm -f "$data"' EXIT
perf record -q -o "$data" -D "$delay" -F 499 -- target/release/retro --threads 2 bench train-step \
    --model "$ckpt" --steps "${STEPS:-3}" --warmup 1 "$@" >&2
perf report -i "$data" --no-children --sort symbol --stdio -g none 2>/dev/null | python3 -c '
import re, sys
total = gemm = 0.0
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
    if not m:
        continue
    pct, sym = float(m.group(1)), m.group(2)
    total += pct
    if re.search(r"gemm_f32::|gemm_common::|retro_kernels::matmul", sym):
        gemm += pct
print(f"matmul share of sampled CPU time: {gemm:.1f}% of {total:.1f}% -> step = {total / gemm:.2f}x its matmul time")
'
