#!/usr/bin/env bash
# CIFAR-10 CPU config: full data vs EMP at r = 0.7, same epochs, run side by side on one core each
# (OMP_NUM_THREADS=1) so both see the same machine; resumable (a finished run is skipped, a killed
# one continues with --resume). Results: benchmarks/results/cifar10_cpu_*.json
#   bash benchmarks/run_cifar10_cpu.sh [DATA]   (DATA defaults to ../shared/data/cifar10-jpeg.tar.gz)
set -u
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
export OMP_NUM_THREADS=1
run() {  # name, extra args...
  local name=$1; shift
  local out=runs/bench/cifar10_cpu_$name
  if [ -f "$out/summary.json" ]; then echo "$name: done"; return; fi
  local resume=""; [ -f "$out/checkpoints/last.pt" ] && resume="--resume"
  .venv/bin/ssl-emp pretrain --config configs/cifar10_simclr_cpu.yaml --data-dir "$DATA" --output-dir "$out" \
    --no-progress $resume "$@" > "$out.log" 2>&1 || { echo "$name failed: $(tail -n 1 "$out.log")"; return; }
  cp "$out/summary.json" "benchmarks/results/cifar10_cpu_$name.json"
  echo "$name: $(tail -n 1 "$out.log")"
}
mkdir -p runs/bench
.venv/bin/python -c "from ssl_emp.config import load_config; from ssl_emp.data import load_data; load_data(load_config('configs/cifar10_simclr_cpu.yaml', ['data.data_dir=$DATA']).data)"  # decode once
run full --method full &
run emp_r0.7 --method emp --pruning-rate 0.7 &
wait
