"""Linear probe: a linear classifier trained on frozen, cached features.

The linear-evaluation protocol of self-supervised learning (Zhang et al., "Colorful Image
Colorization", ECCV 2016; used by InstDisc, MoCo, SimCLR). As in the transfer-learning linear
evaluation of SimCLR (Chen et al., ICML 2020, appendix) and the linear probes of CLIP (Radford et
al., ICML 2021), the features are fixed and un-augmented, so the probe is an L2-regularised
multinomial logistic regression, solved to convergence with full-batch L-BFGS, its L2 strength
chosen on a validation split of the training set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_emp.errors import ConfigError
from ssl_emp.eval.features import check_features, check_labels

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)

# L-BFGS memory. sklearn's lbfgs solver keeps 10 pairs; 20 costs nothing next to the
# [N, D] x [D, C] products and converges in fewer iterations on ill-conditioned features.
_HISTORY_SIZE = 20
_TOLERANCE_GRAD = 1e-5
_TOLERANCE_CHANGE = 1e-9
# Features whose training std falls below this are left unscaled instead of blown up.
_MIN_STD = 1e-8

# The settings of the protocol that no argument changes, recorded with every result.
_FIXED_PROTOCOL = {
    "features": "frozen, cached, per-feature z-score with mean/std of the fitted data only",
    "loss": "mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not decayed)",
    "optimizer": "L-BFGS (torch.optim.LBFGS, strong-Wolfe line search)",
    "history_size": _HISTORY_SIZE,
    "tolerance_grad": _TOLERANCE_GRAD,
    "tolerance_change": _TOLERANCE_CHANGE,
    "batch_size": "full batch",
    "selection": "highest val top-1 (ties: larger weight decay); test set unused",
    "warm_start": "grid fitted from largest to smallest weight decay, each from the previous "
    "solution; final fit starts from the chosen candidate",
    "val_split": "stratified per class, torch.Generator seeded with seed",
}


def _standardiser(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    return mean, torch.where(std > _MIN_STD, std, torch.ones_like(std))


def _smallest_class(fraction: float) -> int:
    """The fewest images a class needs for ``_stratified_split`` to hold one out (round() as there)."""
    return next(n for n in range(2, 10**6) if min(round(fraction * n), n - 1) >= 1)


def _stratified_split(y: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Seeded per-class split into (fit, val) indices; each class keeps at least one fit sample."""
    perm = torch.randperm(y.shape[0], generator=generator)
    y_perm = y[perm]
    fit_parts: list[Tensor] = []
    val_parts: list[Tensor] = []
    for c in torch.unique(y).tolist():
        members = perm[y_perm == c]
        n_val = min(round(fraction * members.shape[0]), members.shape[0] - 1)
        val_parts.append(members[:n_val])
        fit_parts.append(members[n_val:])
    return torch.cat(fit_parts).sort().values, torch.cat(val_parts).sort().values


def _fit(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    lr: float,
    max_iter: int,
    init: nn.Linear | None = None,
) -> tuple[nn.Linear, int]:
    """Minimise mean cross-entropy + weight_decay / 2 * ||W||^2 over an ``nn.Linear`` probe."""
    # skip_init builds the layer without drawing from the global RNG. The problem is convex, so
    # the start point does not change the optimum: zeros when cold, else a neighbouring solution.
    probe = torch.nn.utils.skip_init(nn.Linear, x.shape[1], num_classes, device=x.device)
    with torch.no_grad():
        if init is None:
            probe.weight.zero_()
            probe.bias.zero_()
        else:
            probe.weight.copy_(init.weight)
            probe.bias.copy_(init.bias)
    # Full-batch L-BFGS rather than mini-batch SGD/Adam: with cached features the objective is
    # a smooth convex logistic regression, which L-BFGS solves to the optimum in a few hundred
    # cheap [N, D] x [D, C] products, with no learning-rate/epoch schedule to tune and no batch
    # order to seed. The result is the same estimator as sklearn's LogisticRegression, but on
    # torch tensors (and a GPU when the features live there).
    opt = torch.optim.LBFGS(
        probe.parameters(),
        lr=lr,
        max_iter=max_iter,
        history_size=_HISTORY_SIZE,
        tolerance_grad=_TOLERANCE_GRAD,
        tolerance_change=_TOLERANCE_CHANGE,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y)
        if weight_decay:
            # The bias is not decayed, as in sklearn and the usual SGD linear-eval recipes.
            loss = loss + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    n_iter = int(opt.state[next(iter(probe.parameters()))].get("n_iter", 0))
    return probe, n_iter


@torch.no_grad()
def _topk_accuracy(probe: nn.Linear, x: Tensor, y: Tensor, k: int) -> tuple[float, float]:
    logits = probe(x)
    hit1 = logits.argmax(dim=1) == y
    hitk = hit1 | (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1)
    return float(hit1.float().mean()), float(hitk.float().mean())


def _check_probe_args(
    weight_decays: Sequence[float], max_iter: int, lr: float, val_fraction: float, seed: int
) -> list[float]:
    try:
        grid = [float(wd) for wd in weight_decays]
    except (TypeError, ValueError):
        raise ConfigError(f"weight_decays must be a sequence of numbers, got {weight_decays!r}") from None
    if not grid:
        raise ConfigError("weight_decays is empty; give at least one candidate")
    if any(not math.isfinite(wd) or wd < 0 for wd in grid):
        raise ConfigError(f"weight_decays must be finite and >= 0, got {grid}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return grid


def _check_inputs(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int | None,
    device: torch.device | str | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Validated features and labels on the probe's device, and the number of classes."""
    x = check_features(train_x, "train_x")
    y = check_labels(train_y, x.shape[0], "train_y")
    xt = check_features(test_x, "test_x")
    yt = check_labels(test_y, xt.shape[0], "test_y")
    if xt.shape[1] != x.shape[1]:
        raise ConfigError(f"test_x has dimension {xt.shape[1]} but train_x has {x.shape[1]}")
    needed = max(int(y.max()), int(yt.max())) + 1
    if num_classes is None:
        num_classes = needed
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < needed:
        raise ConfigError(f"num_classes={num_classes!r} but labels go up to {needed - 1}")
    try:
        dev = torch.device(device) if device is not None else x.device
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None
    return x.to(dev), y.to(dev), xt.to(dev), yt.to(dev), num_classes


def _select_weight_decay(
    x_fit: Tensor,
    y_fit: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    grid: list[float],
    num_classes: int,
    lr: float,
    max_iter: int,
) -> tuple[float, nn.Linear, list[dict]]:
    """The weight decay with the best validation top-1, its fitted probe and every candidate's score."""
    # The grid is walked from strong to weak regularisation, each fit warm-started from the
    # previous solution (a regularisation path, as in glmnet / sklearn's warm_start): the weakly
    # regularised fits are the slow ones to converge and start close to their optimum instead.
    fitted: dict[float, nn.Linear] = {}
    previous: nn.Linear | None = None
    for wd in sorted(set(grid), reverse=True):
        previous, _ = _fit(x_fit, y_fit, num_classes, wd, lr, max_iter, init=previous)
        fitted[wd] = previous
    k = min(5, num_classes)
    val_scores = [{"weight_decay": wd, "val_top1": _topk_accuracy(fitted[wd], x_val, y_val, k)[0]} for wd in grid]
    # Among equally good candidates the strongest regulariser is kept: validation cannot tell
    # them apart, and the smaller-norm solution is the safer bet on unseen data.
    best = max(val_scores, key=lambda s: (s["val_top1"], s["weight_decay"]))
    return best["weight_decay"], fitted[best["weight_decay"]], val_scores


def _fit_and_score(
    x: Tensor,
    y: Tensor,
    xt: Tensor,
    yt: Tensor,
    num_classes: int,
    weight_decay: float,
    lr: float,
    max_iter: int,
    start: nn.Linear,
) -> tuple[float, float, float, int]:
    """Refit on the whole (standardised) training set; (train top-1, test top-1, test top-k, L-BFGS iterations)."""
    mean, std = _standardiser(x)
    x_std = (x - mean) / std
    probe, n_iter = _fit(x_std, y, num_classes, weight_decay, lr, max_iter, init=start)
    k = min(5, num_classes)
    train_top1, _ = _topk_accuracy(probe, x_std, y, k)
    del x_std
    top1, topk = _topk_accuracy(probe, (xt - mean) / std, yt, k)
    return train_top1, top1, topk, n_iter


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    max_iter: int = 200,
    lr: float = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str | None = None,
    num_classes: int | None = None,
) -> dict:
    """Train a linear classifier on frozen features and report its test accuracy.

    Features are standardised with the mean/std of the data being fitted. Each weight decay
    (L2 coefficient: loss = CE + wd / 2 * ||W||^2) is fitted on the training set minus a
    stratified, seeded ``val_fraction`` split and scored on that split; the best (ties go to
    the larger weight decay) is refitted on the whole training set and evaluated once on the
    test set, which plays no part in any choice. ``seed`` drives a private
    ``torch.Generator``; the global RNG is neither reseeded nor advanced.

    Returns ``{"top1", "top5", "train_top1", "weight_decay", "val_top1", "protocol"}``:
    fractions in [0, 1], top-5 meaning top-min(5, C); ``val_top1`` is a list of
    ``{"weight_decay", "val_top1"}`` per candidate; ``protocol`` records every setting.
    """
    grid = _check_probe_args(weight_decays, max_iter, lr, val_fraction, seed)
    x, y, xt, yt, num_classes = _check_inputs(train_x, train_y, test_x, test_y, num_classes, device)
    fit_idx, val_idx = _stratified_split(y.cpu(), val_fraction, torch.Generator().manual_seed(seed))
    if val_idx.numel() == 0:
        # Said in terms a CLI user can act on: the held-out share is the protocol's, not a flag.
        raise ConfigError(
            f"the linear probe holds out {val_fraction:g} of each class's training images to choose its weight "
            f"decay, which leaves none of these {x.shape[0]} (a class needs at least {_smallest_class(val_fraction)} "
            "images): add training images, or use ssl-emp eval knn"
        )
    fit_idx, val_idx = fit_idx.to(x.device), val_idx.to(x.device)
    x_fit, y_fit, x_val, y_val = x[fit_idx], y[fit_idx], x[val_idx], y[val_idx]
    mean, std = _standardiser(x_fit)
    chosen, start, val_scores = _select_weight_decay(
        (x_fit - mean) / std, y_fit, (x_val - mean) / std, y_val, grid, num_classes, lr, max_iter
    )
    del x_fit, x_val
    train_top1, top1, top5, n_iter = _fit_and_score(x, y, xt, yt, num_classes, chosen, lr, max_iter, start)

    protocol = {
        "classifier": f"nn.Linear({x.shape[1]}, {num_classes}), zero init",
        **_FIXED_PROTOCOL,
        "lr": float(lr),
        "max_iter": max_iter,
        "iterations_final_fit": n_iter,
        "weight_decays": grid,
        "chosen_weight_decay": chosen,
        "val_fraction": float(val_fraction),
        "seed": seed,
        "n_fit": int(fit_idx.numel()),
        "n_val": int(val_idx.numel()),
        "n_train": int(x.shape[0]),
        "n_test": int(xt.shape[0]),
        "num_classes": num_classes,
        "feature_dim": int(x.shape[1]),
        "device": str(x.device),
    }
    return {
        "top1": top1,
        "top5": top5,
        "train_top1": train_top1,
        "weight_decay": chosen,
        "val_top1": val_scores,
        "protocol": protocol,
    }
