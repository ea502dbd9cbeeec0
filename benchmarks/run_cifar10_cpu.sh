#!/usr/bin/env bash
# CIFAR-10 CPU config (configs/cifar10_simclr_cpu.yaml, 15 epochs): the full-data run, then EMP at
# r = 0.7, one after the other on an otherwise idle machine, for the kNN the config reaches and
# the wall-time ratio of the pruned run. Resumable: a finished run is skipped, a killed one
# continues with --resume. Summaries are copied to benchmarks/results/cifar10_cpu_<name>.json.
#   bash benchmarks/run_cifar10_cpu.sh [DATA]   (DATA defaults to ../shared/data/cifar10-jpeg.tar.gz)
set -u
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
run() {  # name, extra args...
  local name=$1; shift
  local out=runs/bench/cifar10_cpu_$name
  if [ -f "$out/summary.json" ]; then echo "$name: done"; return; fi
  local resume=""; [ -f "$out/checkpoints/last.pt" ] && resume="--resume"
  mkdir -p runs/bench
  .venv/bin/ssl-emp pretrain --config configs/cifar10_simclr_cpu.yaml --data-dir "$DATA" --output-dir "$out" \
    --no-progress $resume "$@" > "$out.log" 2>&1 || { echo "$name failed: $(tail -n 1 "$out.log")"; return; }
  cp "$out/summary.json" "benchmarks/results/cifar10_cpu_$name.json"
  echo "$name: $(tail -n 1 "$out.log")"
}
run full --method full
run emp_r0.7 --method emp --pruning-rate 0.7
