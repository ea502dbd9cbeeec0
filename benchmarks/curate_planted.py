"""How well SemDeDup finds planted copies: precision and recall against ε on a redundancy-probe set.

    python benchmarks/curate_planted.py --config CFG [--set KEY=VALUE ...] --checkpoint NAME=CKPT [...]
                                        [--k K] [--out DIR]

CFG is a pretrain config or a benchmark config (its base run config is used) whose
``data.redundancy`` plants copies (docs/method.md "Redundancy probe"): the training set holds U
unique images and, for a fraction of them, extra exact or near copies. The copies a perfect
de-duplication drops are known (``extra_copies``), so SemDeDup's removed set at each ε is scored
against them: precision (removals that leave one member of a planted group), recall (the planted
extra copies so removed), whichever member of a group survives.
Each ``--checkpoint NAME=CKPT`` is an encoder (its backbone's kNN features, as ``ssl-emp curate``
embeds them). For each it also reports the ε a user would pick from the kept-fraction curve alone
(``plateau_eps``, the rule ``ssl-emp curate`` marks on its ε curve: no knowledge of the copies), and precision / recall there.

Writes DIR/planted.json (every figure, the command, commit and versions), DIR/planted.md (table)
and DIR/planted.png (precision, recall and kept fraction against ε).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssl_emp.benchmark.grid import load_benchmark
from ssl_emp.config import Config, load_config
from ssl_emp.curate.embed import embed
from ssl_emp.curate.semdedup import plateau_eps, semdedup
from ssl_emp.data import load_data
from ssl_emp.data.redundancy import extra_copies
from ssl_emp.eval.from_checkpoint import backbone_from_checkpoint

EPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]


def run_config(path: str, overrides: list[str]) -> Config:
    """The run config of a pretrain YAML, or the base run config of a benchmark YAML."""
    try:
        return load_benchmark(path, overrides).base
    except Exception:  # not a benchmark config: a pretrain one
        return load_config(path, overrides)


def score(removed: np.ndarray, unique_of: np.ndarray) -> dict[str, float]:
    """Precision and recall of a removed set against the planted copies, whichever member of a group
    survives: of a group of c images (an original and its c − 1 copies) removing up to c − 1 is
    right, so a group contributes min(removed in it, c − 1) correct removals."""
    sizes = np.bincount(unique_of)
    removed_in = np.bincount(unique_of[removed], minlength=len(sizes))
    hit = int(np.minimum(removed_in, sizes - 1).sum())
    planted = int((sizes - 1).sum())
    return {"removed": int(removed.sum()), "precision": hit / removed.sum() if removed.any() else float("nan"),
            "recall": hit / planted if planted else float("nan"), "kept_fraction": float(1 - removed.mean())}


def measure(cfg: Config, checkpoint: str, k: int, seed: int, device: torch.device) -> dict:
    data = load_data(cfg.data)
    if data.unique_of is None:
        raise SystemExit("the config plants no copies: set data.redundancy.unique")
    unique_of = data.unique_of.numpy()
    planted = extra_copies(data.unique_of).numpy()
    backbone, _ = backbone_from_checkpoint(checkpoint)
    start = time.perf_counter()
    emb = embed(backbone, data.train, cfg, device, "train")
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    found = semdedup(emb, k=k, seed=seed, keep="hard")
    cluster_s = time.perf_counter() - start
    curve = [{"eps": e, **score(found.removed(e), unique_of)} for e in EPS]
    plateau = plateau_eps(EPS, [row["kept_fraction"] for row in curve])
    return {"n": len(planted), "planted": int(planted.sum()), "k": k, "embed_s": round(embed_s, 2),
            "semdedup_s": round(cluster_s, 2), "curve": curve, "plateau_eps": plateau,
            "at_plateau": score(found.removed(plateau), unique_of)}


def markdown(results: dict) -> str:
    lines = []
    for name, r in results["encoders"].items():
        lines += [f"### {name}: {r['checkpoint']}", "",
                  f"N {r['n']}, planted copies {r['planted']} ({r['planted'] / r['n']:.1%}), k {r['k']} clusters; "
                  f"ε at the end of the kept curve's flattest stretch: {r['plateau_eps']} "
                  f"(precision {r['at_plateau']['precision']:.3f}, recall {r['at_plateau']['recall']:.3f}).", "",
                  "| ε | removed | kept fraction | precision | recall |", "|---|---|---|---|---|"]
        lines += [f"| {c['eps']} | {c['removed']} | {c['kept_fraction']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} |"
                  for c in r["curve"]]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results["encoders"]), figsize=(5 * len(results["encoders"]), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], results["encoders"].items(), strict=True):
        eps = [c["eps"] for c in r["curve"]]
        for key in ("precision", "recall", "kept_fraction"):
            ax.plot(eps, [c[key] for c in r["curve"]], marker="o", label=key.replace("_", " "))
        ax.axvline(r["plateau_eps"], color="grey", ls=":", label="end of the kept curve's flattest stretch")
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_title(name)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=CKPT")
    parser.add_argument("--k", type=int, default=50, help="SemDeDup's k-means clusters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/curate_planted")
    args = parser.parse_args(argv)
    cfg = run_config(args.config, args.overrides)
    cfg.progress = False
    device = torch.device("cpu")
    results = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s)",
               "versions": {"torch": torch.__version__, "numpy": np.__version__}, "encoders": {}}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        results["encoders"][name] = {"checkpoint": path, **measure(cfg, path, args.k, args.seed, device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "planted.json").write_text(json.dumps(results, indent=2))
    (out / "planted.md").write_text(markdown(results))
    plot(results, out / "planted.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
