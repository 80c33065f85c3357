#!/usr/bin/env bash
# Learning-rate sweep of bench/demo_vs_adamw.py on a many-core machine: one single-threaded job
# per core, each optimiser tuned on its own grid, for three settings (base 300 steps, 600 steps,
# a 4x larger model). Prints one line per job: "<setting> <args> :: <figures>".
# Usage: bash tests/training/device_sweep.sh [parallel_jobs] [output_file]
set -u
P=${1:-14}
work=$(mktemp -d)
export SWEEP_OUT=${2:-$work/all.txt}
jobs=()
for setting in "base:" "long:--steps 600" "big:--dim 256 --ffn 704"; do
  name=${setting%%:*}; extra=${setting#*:}
  for lr in 5e-4 1e-3 2e-3 3e-3 1e-2; do jobs+=("$name|--only adamw --adamw-lr $lr $extra"); done
  for lr in 7e-4 1e-3 2e-3 3e-3 4e-3; do jobs+=("$name|--only demo --demo-lr $lr $extra"); done
done
jobs+=("chunk64|--only demo --demo-lr 3e-3 --chunk 64 --topk 64")
jobs+=("bf16|--only demo --demo-lr 3e-3 --values bf16")
jobs+=("k8|--only demo --demo-lr 3e-3 --topk 8")
i=0
for j in "${jobs[@]}"; do
  echo "$j" >"$work/job$i"
  i=$((i + 1))
done
ls "$work"/job* | xargs -P "$P" -I{} bash -c '
  j=$(cat {}); name=${j%%|*}; args=${j#*|}
  out=$(OMP_NUM_THREADS=1 python3 bench/demo_vs_adamw.py --threads 1 $args 2>&1 | tail -n 1)
  echo "$name $args :: $out" >>"$SWEEP_OUT"'
cat "$SWEEP_OUT"
