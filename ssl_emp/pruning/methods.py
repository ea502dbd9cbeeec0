"""The selection rules and records of the built-in methods (SCAN's: ``ssl_emp.pruning.scan``).

Baselines and EMP as defined in docs/method.md:
- uniform random dynamic pruning, ε-greedy and UCB from Raju et al., "Accelerating Deep Learning
  with Dynamic Data Pruning" (arXiv 2111.12621);
- InfoBatch from Qin et al., ICLR 2024 (arXiv 2303.04947);
- ``emp``: EMP from Xiao et al., "EMP: Enhance Memory in Data Pruning" (arXiv 2408.16031); under
  the contrastive objective loss + memory deficit (both mean-normalised), under the supervised
  objective the paper's loss + β·entropy;
- ``emp-easy``: the reverse-ranking ablation of ``emp``. Same score and unseen-first sweep, then
  the (1 − ε)·K LOWEST scores plus ε·K uniform from the rest: the most typical images first, the
  rule the "keep easy examples at high pruning rates" line argues for (Sorscher et al., NeurIPS
  2022; SAS, Joshi & Mirzasoleiman, ICML 2023; CCS, Zheng et al., ICLR 2023);
- ``scan`` (SCAN, Guo & Kankanhalli, arXiv 2411.09126) is its own module, ``ssl_emp.pruning.scan``,
  with the state it keeps between epochs.

Each method's record (``MethodSpec``) follows its rule; ``ssl_emp.pruning.registry`` lists them.

Every rule is a pure function of (table, epoch, seed, params): all randomness comes from the
generator in the context, seeded from (seed, epoch), so every rank and every resumed run picks
the same set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssl_emp.pruning.score import emp_score, memory_strength, supervised_score
from ssl_emp.pruning.seeding import exact_fraction, make_generator
from ssl_emp.pruning.spec import NONNEG, MethodSpec, Param, Selection, SelectionContext


def _sorted(idx: Tensor) -> Tensor:
    return torch.sort(idx).values


def eps_greedy_pick(score: Tensor, seen: Tensor, budget: int, epsilon: float, gen: torch.Generator) -> Tensor:
    """Exactly ``budget`` indices: unseen first, then ε-greedy over the seen samples.

    Unseen samples (score +inf) always come first, so the data set is swept before any sample
    repeats. The R slots left after them go to the top R − ⌊εR⌋ seen scores plus ⌊εR⌋ drawn
    uniformly from the remaining seen samples. Ties break by a seeded random permutation.
    """
    perm = torch.randperm(score.numel(), generator=gen)
    # A stable sort of a randomly permuted array = sort by (score desc, random key).
    order = perm[torch.sort(score[perm], descending=True, stable=True).indices]
    unseen = int((~seen).sum())
    if unseen >= budget:
        return _sorted(order[:budget])
    rest_budget = budget - unseen
    explore = math.floor(exact_fraction(epsilon) * rest_budget)
    top = unseen + rest_budget - explore
    rest = order[top:]
    drawn = rest[torch.randperm(rest.numel(), generator=gen)[:explore]]
    return _sorted(torch.cat([order[:top], drawn]))


def select_full(ctx: SelectionContext) -> Selection:
    return Selection(torch.arange(ctx.table.num_samples))


def select_random_static(ctx: SelectionContext) -> Selection:
    # Own stream independent of the epoch: the same subset every epoch of the run.
    gen = make_generator(ctx.seed, "random-static")
    return Selection(_sorted(torch.randperm(ctx.table.num_samples, generator=gen)[: ctx.budget]))


def select_random_dynamic(ctx: SelectionContext) -> Selection:
    perm = torch.randperm(ctx.table.num_samples, generator=ctx.generator)
    return Selection(_sorted(perm[: ctx.budget]))


def emp_scores(ctx: SelectionContext, beta: float) -> tuple[Tensor, Tensor]:
    """(EMP score, seen mask) under the context's objective; unseen samples score +inf."""
    t = ctx.table
    seen = t.seen()
    if ctx.objective == "supervised":
        return supervised_score(t.loss, t.entropy, seen, beta), seen
    memory = memory_strength(t.align, t.last_epoch, t.count, ctx.epoch, ctx.params["rho"])
    return emp_score(t.loss, memory, seen, beta), seen


def select_emp(ctx: SelectionContext) -> Selection:
    score, seen = emp_scores(ctx, ctx.params["beta"])
    return Selection(eps_greedy_pick(score, seen, ctx.budget, ctx.params["epsilon"], ctx.generator))


def select_emp_easy(ctx: SelectionContext) -> Selection:
    score, seen = emp_scores(ctx, ctx.params["beta"])
    # Negating the seen scores turns "highest first" into "lowest first"; unseen stay +inf, first.
    easy = torch.where(seen, -score, score)
    return Selection(eps_greedy_pick(easy, seen, ctx.budget, ctx.params["epsilon"], ctx.generator))


def select_eps_greedy(ctx: SelectionContext) -> Selection:
    # Literally EMP with beta = 0, so the ablation is exact by construction.
    score, seen = emp_scores(ctx, 0.0)
    return Selection(eps_greedy_pick(score, seen, ctx.budget, ctx.params["epsilon"], ctx.generator))


def select_ucb(ctx: SelectionContext) -> Selection:
    t = ctx.table
    seen = t.seen()
    score = t.loss_mean + ctx.params["ucb_c"] * t.loss_std()
    score = torch.where(seen, score, torch.full_like(score, float("inf")))
    return Selection(eps_greedy_pick(score, seen, ctx.budget, 0.0, ctx.generator))


def infobatch_full_from(epochs: int, delta: float) -> int:
    """First (0-based) epoch of InfoBatch's full-data annealing phase: floor(δ·E).

    The official code anneals once its 1-based iteration counter exceeds δ·E; with 0-based epochs
    that is epoch floor(δ·E) (E = 10, δ = 0.875: epochs 8 and 9 use all data).
    """
    return math.floor(exact_fraction(delta) * epochs)


def select_infobatch(ctx: SelectionContext) -> Selection:
    n = ctx.table.num_samples
    if ctx.epoch >= infobatch_full_from(ctx.epochs, ctx.params["infobatch_delta"]):
        return Selection(torch.arange(n))
    seen = ctx.table.seen()
    draw = torch.rand(n, generator=ctx.generator, dtype=torch.float64)
    if not bool(seen.any()):
        return Selection(torch.arange(n))
    score = ctx.table.loss  # latest loss: the table runs with alpha = 1 for InfoBatch
    low = seen & (score < score[seen].mean())
    pruned = low & (draw < ctx.params["infobatch_prune_prob"])
    return Selection((~pruned).nonzero().flatten(), upweight=low & ~pruned)


BETA = Param(1.0, *NONNEG, "weight of the memory / entropy term")
EPSILON = Param(0.2, lambda x: 0 <= x <= 1, "in [0, 1]", "exploration share of K")
# EMP's memory signal: the view alignment (contrastive), the prediction entropy (supervised).
_EMP_NEEDS = {"contrastive": "align", "supervised": "entropy"}

FULL = MethodSpec("full", select_full, "all data every epoch: the full-data reference", full_data=True, static=True)
RANDOM_STATIC = MethodSpec("random-static", select_random_static,
                           "one uniform random subset of K for the whole run (Raju et al., arXiv 2111.12621)",
                           static=True)
RANDOM_DYNAMIC = MethodSpec("random-dynamic", select_random_dynamic,
                            "a fresh uniform random K each epoch (Raju et al., arXiv 2111.12621)")
EPS_GREEDY = MethodSpec("eps-greedy", select_eps_greedy, "highest loss EMA plus ε uniform exploration "
                        "(Raju et al., arXiv 2111.12621)", params={"epsilon": EPSILON})
UCB = MethodSpec("ucb", select_ucb, "highest loss mean + c·std (Raju et al., arXiv 2111.12621)",
                 params={"ucb_c": Param(1.0, *NONNEG, "UCB: mean + c * std")})
INFOBATCH = MethodSpec(
    "infobatch", select_infobatch, "drop below-mean-loss samples with probability p, rescale the rest, "
    "full data from δ·E (Qin et al., arXiv 2303.04947)",
    params={"infobatch_prune_prob": Param(0.5, lambda x: 0 <= x < 1, "in [0, 1)", "InfoBatch p"),
            "infobatch_delta": Param(0.875, lambda x: 0 <= x <= 1, "in [0, 1]", "InfoBatch δ")},
    own_rate=True, latest_loss=True)
EMP = MethodSpec("emp", select_emp, "highest loss + β·memory deficit with ε exploration "
                 "(Xiao et al., arXiv 2408.16031)", params={"beta": BETA, "epsilon": EPSILON}, needs=_EMP_NEEDS)
EMP_EASY = MethodSpec("emp-easy", select_emp_easy, "EMP's score, lowest first: keep the easy samples "
                      "(Sorscher et al., arXiv 2206.14486)",
                      params={"beta": BETA, "epsilon": EPSILON}, needs=_EMP_NEEDS)
