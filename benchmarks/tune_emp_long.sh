#!/usr/bin/env bash
# EMP given a fair chance in the long protocol (issue 10): its EMA rates matched to the number of
# visits (alpha = gamma), beta, rho and epsilon one at a time around the spec's defaults, plus the
# reverse ranking (emp-easy) and beta = 0 (= eps-greedy), at r = 0.9 (8 visits per image) on
# configs/bench_cifar10_long_cpu.yaml, scored by kNN on 20 % of the TRAINING images held out
# (data.val_fraction): the test split is never read. random-dynamic is the reference.
# Seeds 0, 1, 2 per setting; each setting is its own resumable benchmark folder.
#   bash benchmarks/tune_emp_long.sh   (results: benchmarks/results/tune_emp_long/<setting>/results.json,
#                                       table: benchmarks/results/tune_emp_long/summary.md)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/tune_emp_long}
SSL_EMP=${SSL_EMP:-.venv/bin/ssl-emp}   # PYTHON for the summary: ${PYTHON:-.venv/bin/python}
common=(--config configs/bench_cifar10_long_cpu.yaml --set data.val_fraction=0.2 --set "grid.rates=[${RATE:-0.9}]"
        --set "grid.seeds=${SEEDS:-[0,1,2]}" --set linear_probe=false)
bench() {  # name, extra --set args...
  local name=$1; shift
  "$SSL_EMP" benchmark "${common[@]}" --output-dir "$OUT/$name" "$@" | grep -E "done|error"
}
bench random-dynamic --set "grid.methods=[random-dynamic]" --set grid.method_params=null
bench emp-easy --set "grid.methods=[emp-easy]" --set grid.method_params=null
for beta in 0.0 0.5 1.0 2.0; do bench "emp_beta$beta" --set "grid.methods=[emp]" --set "grid.method_params.emp.beta=$beta"; done
for rate in 0.1 0.3; do
  bench "emp_alpha$rate" --set "grid.methods=[emp]" --set "grid.method_params.emp.alpha=$rate" --set "grid.method_params.emp.gamma=$rate"
done
for rho in 0.5 1.0; do bench "emp_rho$rho" --set "grid.methods=[emp]" --set "grid.method_params.emp.rho=$rho"; done
for eps in 0.0 0.5; do bench "emp_eps$eps" --set "grid.methods=[emp]" --set "grid.method_params.emp.epsilon=$eps"; done
"${PYTHON:-.venv/bin/python}" benchmarks/summarize_tune_emp.py "$OUT"
