#!/usr/bin/env bash
# EMP's beta, rho and epsilon, one at a time around the spec's defaults (beta 1, rho 0.9, eps 0.2),
# at r = 0.7 on the CPU sweep's configuration, scored by kNN on 20% of the TRAINING images held out
# (data.val_fraction): the test split is never read. random-dynamic at r = 0.7 is the reference.
# Seeds 0, 1, 2 per setting (SEEDS="[0]" for a quick pass); each setting is its own resumable
# benchmark folder, so finished (setting, seed) runs are skipped on a rerun.
#   bash benchmarks/tune_emp.sh   (results: benchmarks/results/tune_emp/<setting>/results.json,
#                                  table: benchmarks/results/tune_emp/summary.md)
set -u
cd "$(dirname "$0")/.."
OUT=benchmarks/results/tune_emp
common=(--config configs/bench_cifar10_cpu.yaml --set data.val_fraction=0.2 --set "grid.rates=[0.7]"
        --set "grid.seeds=${SEEDS:-[0,1,2]}" --set linear_probe=false)
bench() {  # name, extra --set args...
  local name=$1; shift
  .venv/bin/ssl-emp benchmark "${common[@]}" --output-dir "$OUT/$name" "$@" | grep -E "done|error"
}
# emp rides along: the grid names emp parameters, and its run repeats emp_beta1.0 (a determinism check).
bench random-dynamic --set "grid.methods=[random-dynamic,emp]"
for beta in 0.0 0.5 1.0 2.0; do bench "emp_beta$beta" --set "grid.methods=[emp]" --set "grid.method_params.emp.beta=$beta"; done
for rho in 0.5 1.0; do bench "emp_rho$rho" --set "grid.methods=[emp]" --set "grid.method_params.emp.rho=$rho"; done
for eps in 0.0 0.5; do bench "emp_eps$eps" --set "grid.methods=[emp]" --set "grid.method_params.emp.epsilon=$eps"; done
.venv/bin/python benchmarks/summarize_tune_emp.py "$OUT"
