"""Memory strength and the EMP selection scores (contrastive and supervised).

EMP: "Enhance Memory in Data Pruning" (Xiao et al., arXiv 2408.16031). The formulas are the
project's definition in docs/method.md ("Memory term and EMP score",
"Supervised EMP").
"""

from __future__ import annotations

import torch
from torch import Tensor

# Guards the mean denominators: an all-zero mean (e.g. every deficit 0 when rho = 1 and all
# alignments are 1) would otherwise give 0/0 = NaN and break the sort.
_TINY = 1e-12


def memory_strength(align: Tensor, last_epoch: Tensor, count: Tensor, epoch: int, rho: float) -> Tensor:
    """m_i(t) = ((1 + align_i) / 2) · rho^(t − last_epoch_i − 1); 0 if count_i = 0.

    The exponent is clamped at 0 so that querying during or after epoch ``t``'s own updates
    (last_epoch = t) cannot push m above 1; a missing (NaN) alignment counts as no memory.
    """
    age = (epoch - last_epoch - 1).clamp_min(0).to(torch.float64)
    m = (1 + align.clamp(-1.0, 1.0)) / 2 * torch.pow(rho, age)
    return torch.where((count > 0) & align.isfinite(), m, torch.zeros_like(m))


def emp_score(loss: Tensor, memory: Tensor, seen: Tensor, beta: float) -> Tensor:
    """s_i = loss_i / mean(loss) + beta · (1 − m_i) / mean(1 − m); +inf for unseen samples.

    Means run over seen samples only. beta = 0 gives the loss-only ε-greedy score.
    """
    if not bool(seen.any()):
        return torch.full_like(loss, float("inf"))
    deficit = 1 - memory
    loss_term = loss / loss[seen].mean().clamp_min(_TINY)
    memory_term = deficit / deficit[seen].mean().clamp_min(_TINY)
    score = loss_term + beta * memory_term
    return torch.where(seen, score, torch.full_like(score, float("inf")))


def supervised_score(loss: Tensor, entropy: Tensor, seen: Tensor, beta: float) -> Tensor:
    """Supervised EMP: s_i = loss_i + beta · entropy_i (EMAs, raw sum in nats); +inf if unseen.

    beta = 0 uses the loss alone, so a table without entropy (NaN) still ranks by loss.
    """
    score = loss if beta == 0 else loss + beta * entropy
    return torch.where(seen, score, torch.full_like(score, float("inf")))
