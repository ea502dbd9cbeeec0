"""A direct, set-by-set computation of SCAN's marks (the official ``PrePrune``, written out in Python
sets), and the synthetic two-direction loss stream the SCAN tests drive the pruner with."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

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
