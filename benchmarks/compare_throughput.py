"""Training throughput of two checkouts of this project on the same machine, interleaved.

    python benchmarks/compare_throughput.py --checkout OLD_DIR --checkout NEW_DIR \
        --config configs/cifar10_simclr_cpu.yaml [--epochs 1] [--repeats 2] --output results/FILE.json

Each repeat runs ``ssl-emp pretrain`` once per checkout (in turn, so drifts of the machine hit
both alike) and reads the loop's ``images_per_s`` of every epoch from metrics.jsonl: the whole
training loop (data, augmentation on the device, forward, backward, optimizer, pruner), without the
kNN evaluation before and after. Reports the mean per checkout and the ratio of the last to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ssl_emp.run.layout import RunLayout


def _commit(checkout: Path) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def run_once(checkout: Path, config: Path, epochs: int, extra: list[str]) -> list[float]:
    """images_per_s of each epoch of one short pretrain run of ``checkout``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ssl_emp", "pretrain", "--config", str(config), "--epochs", str(epochs),
               "--output-dir", tmp + "/run", "--no-progress", "--set", "eval.eval_every=0", *extra]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"compare_throughput: {checkout} failed: {proc.stderr.strip().splitlines()[-1]}")
        lines = [json.loads(ln) for ln in RunLayout(Path(tmp, "run")).metrics.read_text().splitlines()]
        return [ln["images_per_s"] for ln in lines if ln["epoch"] >= 0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True, type=Path, help="a project checkout (twice)")
    parser.add_argument("--config", required=True, type=Path, help="relative to each checkout")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    if len(args.checkout) != 2 or args.repeats < 1:
        print("compare_throughput: error: give --checkout twice and --repeats >= 1", file=sys.stderr)
        return 2
    extra = [x for item in args.overrides for x in ("--set", item)]
    # Named relative to where the script runs: the results file must not hold this machine's paths.
    names = [os.path.relpath(c) for c in args.checkout]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, checkout in zip(names, args.checkout, strict=True):
            samples[name] += run_once(checkout.resolve(), args.config, args.epochs, extra)
    means = {c: statistics.fmean(v) for c, v in samples.items()}
    old, new = names
    report = {
        "command": "python " + " ".join([sys.argv[0], *argv]),
        "checkouts": {c: {"commit": _commit(Path(c)), "images_per_s": v, "mean": means[c]} for c, v in samples.items()},
        "ratio_new_over_old": means[new] / means[old],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{old}: {means[old]:.0f} img/s, {new}: {means[new]:.0f} img/s, ratio {report['ratio_new_over_old']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
