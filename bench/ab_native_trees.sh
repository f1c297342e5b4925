#!/usr/bin/env bash
# Old tree against new tree through bench_native_ab, in alternating processes (old, new, old, new ...),
# one JSON line per process, tagged with its tree and the idle fraction of all CPUs over the second
# before it started (/proc/stat; 1.00 = nothing else running).
#
#   bench/ab_native_trees.sh OLD_TREE NEW_TREE ROUNDS -- [bench_native_ab args]
#
# Each tree is put first on PYTHONPATH (it gets its own just-in-time build: the build cache is keyed
# by the sources). FASTALIGN_NO_NATIVE=1 builds without -march=native, so on an AVX-512 host the
# avx2 path is the plain AVX2 + FMA code an AVX2-only CPU runs; FASTALIGN_CPU_ISA picks the path.
# WAIT_IDLE=0.95 waits (up to 60 s) before each process until the CPUs were that idle for a second.
# An old tree for comparison: git archive <commit> | tar -x -C /tmp/old
set -euo pipefail
old=$1 new=$2 rounds=$3
shift 3
[ "${1:-}" = "--" ] && shift
py=${PYTHON:-python}
idle() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local tot=0 i
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  awk -v i=$((b[4] - a[4])) -v t=$tot 'BEGIN { printf "%.2f", (t > 0 ? i / t : 0) }'
}
for r in $(seq 1 "$rounds"); do
  for tag in old new; do
    tree=$old; [ $tag = new ] && tree=$new
    id=$(idle)
    for _ in $(seq 1 60); do
      awk -v i="$id" -v w="${WAIT_IDLE:-0}" 'BEGIN { exit !(i < w) }' || break
      id=$(idle)
    done
    line=$(cd "$tree" && PYTHONPATH="$tree" "$py" -m bench.bench_native_ab "$@")
    echo "{\"tree\": \"$tag\", \"round\": $r, \"idle_before\": $id, ${line#\{}"
  done
done
