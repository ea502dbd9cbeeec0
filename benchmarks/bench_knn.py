"""Weighted-kNN evaluation time against the matrix product that bounds it.

The kNN of ``ssl_emp.eval.knn`` (InstDisc, Wu et al. 2018) has to compute every query x bank
similarity, so the bare float32 product ``queries @ bank.T`` is a lower bound on its time; the
goal is to stay within 1.5x of it while never holding that [queries, bank] matrix.

Each measurement runs in a fresh subprocess so that its peak-RSS delta (``ru_maxrss`` after the
runs minus before, with the data already allocated) is its own and not a previous step's.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_knn.py --output runs/bench_knn.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _make_data(args: argparse.Namespace):
    import torch

    g = torch.Generator().manual_seed(0)
    # Clustered features, so the reported accuracy shows the kNN is doing real work.
    centres = torch.randn(args.classes, args.dim, generator=g)
    train_y = torch.randint(0, args.classes, (args.bank,), generator=g)
    test_y = torch.randint(0, args.classes, (args.queries,), generator=g)
    train_x = centres[train_y] + 15.0 * torch.randn(args.bank, args.dim, generator=g)
    test_x = centres[test_y] + 15.0 * torch.randn(args.queries, args.dim, generator=g)
    return train_x, train_y, test_x, test_y


def _worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    train_x, train_y, test_x, test_y = _make_data(args)
    extra: dict = {}
    if args.worker == "matmul":
        bank_t = train_x.T.contiguous()
        _ = test_x[:64] @ bank_t  # thread pool and BLAS start-up, kept out of the timing

        def op() -> None:
            _ = test_x @ bank_t

    else:
        import faiss

        from ssl_emp.eval import knn_accuracy

        if args.threads:
            faiss.omp_set_num_threads(args.threads)
        _ = knn_accuracy(train_x[:1000], train_y[:1000], test_x[:64], test_y[:64], k=10, use_gpu=False)

        def op() -> None:
            extra.update(
                knn_accuracy(
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                    k=args.k,
                    temperature=args.temperature,
                    chunk_size=args.chunk_size,
                    use_gpu=False,
                )
            )

    rss_before = _maxrss_mib()
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        op()
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu_seconds() - c0)
    result = {
        "times_s": times,
        "cpu_s": cpu,
        "peak_rss_delta_mib": _maxrss_mib() - rss_before,
        "torch_threads": torch.get_num_threads(),
    }
    if args.worker == "knn":
        import faiss

        result |= {"faiss_threads": faiss.omp_get_max_threads(), "top1": extra["top1"], "top5": extra["top5"]}
    print(json.dumps(result))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _environment() -> dict:
    import faiss
    import numpy as np
    import torch

    return {
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _run_worker(args: argparse.Namespace, kind: str, chunk_size: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--chunk-size",
        str(chunk_size),
        *("--bank", str(args.bank), "--queries", str(args.queries), "--dim", str(args.dim)),
        *("--classes", str(args.classes), "--k", str(args.k), "--temperature", str(args.temperature)),
        *("--repeats", str(args.repeats), "--threads", str(args.threads)),
    ]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


_REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    if str(_REPO) not in sys.path:  # runnable without PYTHONPATH=.
        sys.path.insert(0, str(_REPO))
    from ssl_emp.eval.knn import DEFAULT_CHUNK_SIZE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=int, default=50_000, help="training-bank vectors")
    p.add_argument("--queries", type=int, default=10_000, help="query vectors")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; min and median reported")
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[DEFAULT_CHUNK_SIZE], help="kNN query chunks")
    p.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: library default)")
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    p.add_argument("--worker", choices=["matmul", "knn"], help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return

    env = _environment()
    rows = [{"op": "matmul", "chunk_size": None, **_run_worker(args, "matmul", 0)}]
    for cs in args.chunk_sizes:
        rows.append({"op": "knn_accuracy", "chunk_size": cs, **_run_worker(args, "knn", cs)})
    base = min(rows[0]["times_s"])
    for row in rows:
        row["min_s"] = min(row["times_s"])
        row["median_s"] = statistics.median(row["times_s"])
        row["ratio_vs_matmul"] = row["min_s"] / base

    shape = f"bank {args.bank} x queries {args.queries} x D {args.dim}, k={args.k}, C={args.classes}"
    print(f"kNN vs matmul bound ({shape}); {env['cpu_model']}, {env['cpus_available']} CPUs")
    print(f"torch {env['torch']}, faiss {env['faiss']}, repeats {args.repeats}, load avg {env['loadavg_at_start']}\n")
    print("| op | chunk | min s | median s | CPU s (min run) | x matmul | peak RSS delta MiB | top1 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cpu = row["cpu_s"][row["times_s"].index(row["min_s"])]
        top1 = f"{row['top1']:.4f}" if "top1" in row else "-"
        print(
            f"| {row['op']} | {row['chunk_size'] or '-'} | {row['min_s']:.2f} | {row['median_s']:.2f} | {cpu:.2f} "
            f"| {row['ratio_vs_matmul']:.2f} | {row['peak_rss_delta_mib']:.0f} | {top1} |"
        )
    full_mib = args.queries * args.bank * 4 / 2**20
    print(f"\n(the full float32 similarity matrix the matmul materialises is {full_mib:.0f} MiB)")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "output", "chunk_size")}}
        payload["config"]["output"] = str(args.output)
        payload |= {"environment": env, "similarity_matrix_mib": full_mib, "results": rows}
        args.output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
