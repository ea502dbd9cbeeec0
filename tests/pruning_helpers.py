"""Shared helpers of the pruning tests: a pruner with defaults, a deterministic epoch of updates."""

from __future__ import annotations

import pytest
import torch

from ssl_emp.errors import ConfigError
from ssl_emp.pruning import DynamicPruner
from ssl_emp.pruning.registry import method_spec


def fake_stats(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-sample (loss, align) that change with the epoch, like training."""
    idx = idx.to(torch.int64)
    loss = ((idx * 7919 + epoch * 104729) % 997).to(torch.float32) / 997 * 3 + 0.1
    align = ((idx * 31 + epoch * 17) % 200).to(torch.float32) / 100 - 1
    return loss, align


def run_epoch(pruner: DynamicPruner, epoch: int, batch: int = 32, stats=fake_stats) -> torch.Tensor:
    """One epoch through the public API; returns the indices served by the sampler."""
    pruner.set_epoch(epoch)
    served = pruner.sampler().indices()
    for chunk in served.split(batch):
        pruner.update(chunk, *stats(chunk, epoch))
    return served


def make(method: str = "emp", rate: float = 0.7, n: int = 100, epochs: int = 6, **kw) -> DynamicPruner:
    """A pruner; a method that reads per-sample inputs (the curation methods' embeddings) gets fixed
    random ones (seed 0), with a few exact copies so that SemDeDup has duplicates to find."""
    if "inputs" not in kw and method_spec(method).inputs:
        emb = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
        emb[n // 2: n // 2 + n // 10] = emb[: n // 10]
        kw["inputs"] = dict.fromkeys(method_spec(method).inputs, emb)
    return DynamicPruner(num_samples=n, method=method, pruning_rate=rate, epochs=epochs, **kw)


def assert_one_line_config_error(call, needle: str) -> None:
    """``call()`` raises a ConfigError (a ValueError) of one line that contains ``needle``."""
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
