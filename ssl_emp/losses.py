"""Per-sample contrastive losses and view alignment.

lightly's ``NTXentLoss`` returns only the batch mean; data pruning needs the loss of every image,
so the same InfoNCE is written here per sample (lightly stays the reference in the tests).

- SimCLR / NT-Xent: Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020, https://arxiv.org/abs/2002.05709
- MoCo: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
  CVPR 2020, https://arxiv.org/abs/1911.05722 (v2: https://arxiv.org/abs/2003.04297)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils import dist as lightly_dist
from torch import Tensor

from ssl_emp.errors import ConfigError


class PerSampleLoss(tuple):
    """``(loss, align)``, each [B], with the two directions' per-sample losses as attributes.

    ``loss_12`` is view 1 scored against view 2 (SimCLR: anchor z¹ᵢ, positive z²ᵢ; MoCo: query q¹ᵢ,
    key k²ᵢ), ``loss_21`` the reverse, both detached; ``loss = ½(loss_12 + loss_21)``. SCAN (Guo &
    Kankanhalli, arXiv 2411.09126) marks samples in each direction separately, so the models pass
    both on as pruner signals. A pair that unpacks as before: callers reading ``loss, align``, and
    code substituting these functions with ones that return a plain pair, keep working.
    """

    loss_12: Tensor
    loss_21: Tensor

    def __new__(cls, loss: Tensor, align: Tensor, loss_12: Tensor, loss_21: Tensor) -> PerSampleLoss:
        self = super().__new__(cls, (loss, align))
        self.loss_12, self.loss_21 = loss_12, loss_21
        return self


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def info_nce_per_sample(
    z1: Tensor, z2: Tensor, temperature: float = 0.5, gather_distributed: bool = False
) -> PerSampleLoss:
    """NT-Xent per image: ``(loss, align)``, each of shape [B] (directions: ``.loss_12``, ``.loss_21``).

    ``loss_i = ½[ℓ(z¹ᵢ→z²ᵢ) + ℓ(z²ᵢ→z¹ᵢ)]`` over the 2B−1 in-batch candidates, so
    ``loss.mean()`` equals lightly's ``NTXentLoss(temperature)(z1, z2)``; the two terms are
    ``loss_12`` and ``loss_21`` (detached; the rows of the logits already computed, no extra work).
    ``align_i = ⟨z¹ᵢ, z²ᵢ⟩`` of the L2-normalised projections, in [−1, 1].

    With ``gather_distributed`` under torch.distributed (lightly's ``NTXentLoss(gather_distributed=True)``)
    the candidates are the 2·B·world projections of all ranks: each rank's losses equal those of
    one process on the concatenated batch. Gradients flow into the other ranks' projections too
    and reach their owner through lightly's ``GatherLayer`` (an all-reduce in backward); every
    rank must hold the same B.
    """
    _check_temperature(temperature)
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ConfigError(f"z1 and z2 must both be [B, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    batch_size = z1.shape[0]
    # float32 logits: under bf16 autocast the log-sum-exp over 2B candidates loses too much.
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    rank, world = (lightly_dist.rank(), lightly_dist.world_size()) if gather_distributed else (0, 1)
    if world > 1:
        all1, all2 = torch.cat(lightly_dist.gather(z1)), torch.cat(lightly_dist.gather(z2))
    else:
        all1, all2 = z1, z2
    total = world * batch_size  # images over all ranks; this rank's are rows [offset, offset + B)
    anchors = torch.cat([z1, z2])  # [2B, D]
    logits = anchors @ torch.cat([all1, all2]).T / temperature  # [2B, 2·total]
    own = rank * batch_size + torch.arange(batch_size, device=z1.device)
    self_col = torch.cat([own, own + total])
    logits[torch.arange(2 * batch_size, device=z1.device), self_col] = float("-inf")
    targets = torch.cat([own + total, own])  # the other view of the same image
    per_view = F.cross_entropy(logits, targets, reduction="none")
    loss_12, loss_21 = per_view[:batch_size], per_view[batch_size:]
    loss = 0.5 * (loss_12 + loss_21)
    align = (z1 * z2).sum(dim=1)
    return PerSampleLoss(loss, align.detach(), loss_12.detach(), loss_21.detach())


def moco_info_nce_per_sample(
    q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, queue: Tensor, temperature: float = 0.2
) -> PerSampleLoss:
    """Symmetric MoCo InfoNCE per image: ``(loss, align)``, each of shape [B] (directions: ``.loss_12``, ``.loss_21``).

    Query ``q¹ᵢ`` is scored against its positive key ``k²ᵢ`` (momentum encoder, other view) and the
    queue of negatives ``[Q, D]`` (``loss_12``), and symmetrically ``q²ᵢ`` against ``k¹ᵢ`` (``loss_21``);
    the loss is the mean of the two directions. ``align_i = ½(⟨q¹ᵢ, k²ᵢ⟩ + ⟨q²ᵢ, k¹ᵢ⟩)``.
    """
    _check_temperature(temperature)
    queue = F.normalize(queue.float(), dim=1)

    def one_direction(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        pos = (q * k).sum(dim=1)
        logits = torch.cat([pos[:, None], q @ queue.T], dim=1) / temperature
        return torch.logsumexp(logits, dim=1) - logits[:, 0], pos

    loss_a, pos_a = one_direction(q1, k2)
    loss_b, pos_b = one_direction(q2, k1)
    return PerSampleLoss(0.5 * (loss_a + loss_b), (0.5 * (pos_a + pos_b)).detach(), loss_a.detach(), loss_b.detach())


def cross_entropy_per_sample(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy and prediction entropy: ``(loss, entropy)``, each of shape [B].

    ``loss_i = −log softmax(fᵢ)[yᵢ]`` (no label smoothing: it is also the pruning score) and
    ``entropy_i = H(softmax(fᵢ)) = −Σ_c p_c log p_c ∈ [0, log C]``, the EMP paper's supervised memory
    signal (Xiao et al., arXiv 2408.16031). Both in float32, also under bf16 autocast; the entropy
    is detached (a selection signal, not a training objective).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ConfigError(f"logits must be [B, C] and labels [B], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = F.log_softmax(logits.float(), dim=1)
    loss = F.nll_loss(log_p, labels, reduction="none")
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return loss, entropy.detach()
