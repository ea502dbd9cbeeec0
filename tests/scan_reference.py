"""A direct, set-by-set computation of SCAN's marks (the official ``PrePrune``, written out in Python
sets), the synthetic two-direction loss stream the SCAN tests drive the pruner with, and the pruner
driven by it through its public API."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ssl_emp.pruning import DynamicPruner
from ssl_emp.pruning.seeding import make_generator

Batch = tuple[list[int], list[float], list[float]]  # (sample indices, loss_12, loss_21) of one rank's batch


def direction_stats(idx: torch.Tensor, epoch: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-direction losses of (index, epoch): a shared part and a direction-specific
    part, so the two directions agree on some marks and not on others (top-ups happen)."""
    idx = idx.to(torch.int64)
    base = ((idx * 7919 + epoch * 104729) % 997).to(torch.float64) / 997 * 3 + 0.1
    noise = ((idx * 613 + epoch * 31) % 211).to(torch.float64) / 211 - 0.5
    return (scale * (base + noise)).float(), (scale * (base - noise)).float()


def reference_candidates(steps: list[list[Batch]], *, num_samples: int, rho_max: float, rho_min: float,
                         seed: int, epoch: int) -> tuple[set[int], int]:
    """(candidates, number of top-ups) of a probe epoch, step by step as the official code does it.

    Per rank batch and direction: the ⌊ρ_max·B⌋ highest losses (ill) and ⌊ρ_min·B⌋ lowest (red);
    per step and kind, the set of direction 1 (all ranks) ∩ that of direction 2, topped up to the
    size of direction 1's set with the members of the union that come first in the seeded priority
    permutation when it holds fewer than 0.9× direction 1's set.
    """
    priority = {kind: torch.randperm(num_samples, generator=make_generator(seed, epoch, "scan", kind)).tolist()
                for kind in ("ill", "red")}
    candidates: set[int] = set()
    top_ups = 0
    for step in steps:
        for kind, rho in (("ill", rho_max), ("red", rho_min)):
            sets: list[set[int]] = [set(), set()]
            for idx, l12, l21 in step:
                b = len(idx)
                k = math.floor(Fraction(repr(rho)) * b)
                for direction, losses in enumerate((l12, l21)):
                    ranked = sorted(range(b), key=lambda i, losses=losses: (-losses[i], i))  # highest first
                    marked = ranked[:k] if kind == "ill" else ranked[b - k:] if k else []
                    sets[direction].update(idx[i] for i in marked)
            first, second = sets
            agreed = first & second
            if len(agreed) < 0.9 * len(first):
                rest = sorted((first | second) - agreed, key=lambda s, p=priority[kind]: p[s])
                agreed |= set(rest[: len(first) - len(agreed)])
                top_ups += 1
            candidates |= agreed
    return candidates, top_ups


# --------------------------------------------------------------------------- SCAN through the public API
SCAN_N = 300  # the data set size of the SCAN tests


def scan(n: int = SCAN_N, epochs: int = 10, **kw) -> DynamicPruner:
    return DynamicPruner(num_samples=n, method="scan", epochs=epochs, **{"seed": 5, **kw})


def run_scan_epoch(pruner: DynamicPruner, epoch: int, scale: float = 1.0, batch: int = 32,
                   directions: bool = True) -> list[tuple[list[int], list[float], list[float]]]:
    """One epoch of two-direction losses through the public API; returns its batches."""
    pruner.set_epoch(epoch)
    batches = []
    for chunk in pruner.sampler().indices().split(batch):
        l12, l21 = direction_stats(chunk, epoch, scale)
        loss = 0.5 * (l12 + l21)
        if directions:
            pruner.update(chunk, loss=loss, align=torch.zeros_like(loss), loss_12=l12, loss_21=l21)
            batches.append((chunk.tolist(), l12.tolist(), l21.tolist()))
        else:
            pruner.update(chunk, loss=loss, align=torch.zeros_like(loss))
            batches.append((chunk.tolist(), loss.tolist(), loss.tolist()))
    pruner.flush()
    return batches


def mask_of(indices: set[int] | list[int], n: int = SCAN_N) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


# Epoch loss sums 100 %, 50 % (improves 50 % ≥ τ), 36 % (improves 28 % < τ = 0.3 on the previous
# epoch, though 64 % on the first): the warm-up ends after epoch 2, so w = 3.
SCALES = [1.0, 0.5, 0.36] + [0.35 - 0.01 * e for e in range(20)]
