"""How repeatable are the per-sample signals that the pruners rank by?

    python benchmarks/signal_reliability.py --run RUN_DIR [--passes 3] [--batch-size B] --output results/FILE.json

Loss-based selection (ε-greedy, UCB, EMP's first term) assumes that an image's InfoNCE loss says
something about the image. In SimCLR a sample's loss also depends on which negatives share its
batch and on the two random views it got. This script measures how much of the ranking survives a
fresh draw of both: it takes a run's final checkpoint (and the same architecture at its random
initialisation, seeded as the run), passes the run's training set through the training forward
pass ``passes`` times, each with its own shuffled batches and augmentations (no update; batch norm
in training mode, as during pretraining), and reports for every per-sample signal the model gives
(``loss_i`` and ``align_i`` for SimCLR / MoCo; ``loss_i`` and ``entropy_i`` for the supervised
objective, where only the crop and flip are redrawn): Pearson and Spearman correlation between
passes, and the overlap of the top 30% (the slots a r = 0.7 greedy pick fills; 0.30 is what an
unrelated ranking gives).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ssl_emp.augment import view_augmentation
from ssl_emp.config import config_from_dict
from ssl_emp.data import load_data
from ssl_emp.models import build_model
from ssl_emp.pruning.methods import make_generator
from ssl_emp.run.checkpoint import load_checkpoint
from ssl_emp.run.layout import RunLayout
from ssl_emp.runtime import versions

TOP_FRACTION = 0.3


@torch.no_grad()
def signals(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None, augment: torch.nn.Module,
            batch_size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Every per-sample signal the model returns (loss and align, or loss and entropy) for every
    image, in shuffled batches with fresh views."""
    n = images.shape[0]
    out: dict[str, torch.Tensor] = {}
    order = torch.randperm(n, generator=gen)
    model.train()  # batch statistics as in pretraining; nothing is stepped or saved
    for idx in order.split(batch_size):
        if len(idx) < 2:
            continue
        x = images[idx]
        batch = model(*(augment(x) for _ in range(model.num_views)),
                      labels=labels[idx] if model.needs_labels else None)
        for name, value in batch.items():
            out.setdefault(name, torch.full((n,), float("nan")))[idx] = value.float()
    return out


def _rank(x: torch.Tensor) -> torch.Tensor:
    return torch.argsort(torch.argsort(x)).double()


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Pearson, Spearman and top-30% overlap of two passes' values of one signal."""
    k = round(TOP_FRACTION * a.numel())
    top_a, top_b = set(torch.topk(a, k).indices.tolist()), set(torch.topk(b, k).indices.tolist())
    return {
        "pearson": float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1]),
        "spearman": float(torch.corrcoef(torch.stack([_rank(a), _rank(b)]))[0, 1]),
        "top30_overlap": len(top_a & top_b) / k,
        "mean": float(a.mean()),
        "std_across_samples": float(a.std()),
    }


def measure(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None, augment: torch.nn.Module,
            batch_size: int, passes: int, seed: int) -> dict[str, dict[str, float]]:
    draws = [signals(model, images, labels, augment, batch_size, make_generator(seed, "reliability", p))
             for p in range(passes)]
    out = {}
    for name in draws[0]:
        pairs = [agreement(draws[p][name], draws[q][name]) for p, q in itertools.combinations(range(passes), 2)]
        out[name] = {key: sum(d[key] for d in pairs) / len(pairs) for key in pairs[0]}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a pretrain run folder (config.yaml, checkpoints/final.pt)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's (more negatives per loss)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    run = RunLayout(args.run)
    if not run.final.is_file() or args.passes < 2 or (args.batch_size or 2) < 2:
        print(f"signal_reliability: error: need {run.final}, --passes >= 2 and --batch-size >= 2",
              file=sys.stderr)
        return 2
    ckpt = load_checkpoint(run.final)
    cfg = config_from_dict(ckpt["config"])
    data = load_data(cfg.data)
    images = data.train.images
    augment = view_augmentation(cfg.augment, cfg.data.image_size)
    batch_size = args.batch_size or cfg.optim.batch_size
    labels = data.train.labels
    torch.manual_seed(cfg.seed)  # the run's own initialisation
    classes = data.train.classes
    model = build_model(cfg.algorithm, cfg.model, num_classes=len(classes) if classes else None)
    t0 = time.perf_counter()
    torch.manual_seed(1234)  # augmentation draws: fixed, independent of the run's
    result = {"init": measure(model, images, labels, augment, batch_size, args.passes, cfg.seed)}
    model.load_state_dict(ckpt["model"])
    result["final"] = measure(model, images, labels, augment, batch_size, args.passes, cfg.seed)
    report = {
        "command": "python " + " ".join([sys.argv[0], *argv]), "run": str(run), "images": int(images.shape[0]),
        "batch_size": batch_size, "passes": args.passes, "top_fraction": TOP_FRACTION,
        "seconds": round(time.perf_counter() - t0, 1), "machine": f"{platform.machine()}, "
        f"{torch.get_num_threads()} threads", "versions": versions(), **result,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    for stage in ("init", "final"):
        for name, r in result[stage].items():
            print(f"{stage:5s} {name:7s}: pearson {r['pearson']:.3f}, spearman {r['spearman']:.3f}, "
                  f"top-30% overlap {r['top30_overlap']:.3f} (chance {TOP_FRACTION:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
