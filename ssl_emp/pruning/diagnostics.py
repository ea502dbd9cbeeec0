"""Per-epoch diagnostics of the state table (docs/method.md, "Diagnostics, each
epoch" and "Signal repeatability"): the LFL signature of the training counts, kept vs. pruned
signal means, and how repeatably each per-sample signal ranks the samples.

Dynamic data pruning after Raju et al. (arXiv 2111.12621) and EMP (Xiao et al., arXiv 2408.16031).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.state import SampleTable
from ssl_emp.run.files import atomic_write_text

_HIST_BINS = 32  # count_histogram never has more entries than this


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` (float64), ties sharing their average rank (scipy's 'average')."""
    values, order = torch.sort(x)
    _, counts = torch.unique_consecutive(values, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # 1-based rank of each tie group's last member
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = (ends - (counts - 1) / 2).repeat_interleave(counts)
    return ranks


def spearman(x: Tensor, y: Tensor) -> float | None:
    """Spearman rank correlation of paired samples; None for fewer than 3 pairs or a constant side."""
    if x.numel() < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / denom if denom > 0 else None


def repeatability(table: SampleTable, signal: str) -> float | None:
    """Spearman correlation of latest vs. previous raw ``signal`` over samples observed twice."""
    last, prev = table.columns[f"{signal}_last"], table.columns[f"{signal}_prev"]
    both = last.isfinite() & prev.isfinite()
    return spearman(last[both], prev[both])


def _finite_mean(values: Tensor) -> float | None:
    values = values[values.isfinite()]
    return float(values.mean()) if values.numel() else None


def table_diagnostics(table: SampleTable, kept: Tensor | None, memory: Tensor) -> dict[str, Any]:
    """Count distribution, mean memory, kept/pruned signal means and signal repeatability."""
    n = table.num_samples
    count = table.count.to(torch.float64)
    mean_count = float(count.mean())
    kept_mask = torch.zeros(n, dtype=torch.bool)
    if kept is not None:
        kept_mask[kept] = True
    width = max(1, math.ceil((int(table.count.max()) + 1) / _HIST_BINS))
    histogram = torch.bincount(table.count // width)
    out: dict[str, Any] = {
        "selected_fraction": int(kept_mask.sum()) / n,
        "count_mean": mean_count,
        "count_cv": float(count.std(correction=0)) / mean_count if mean_count > 0 else None,
        "never_trained_fraction": float((table.count == 0).to(torch.float64).mean()),
        "count_histogram": histogram.tolist(),
        "count_histogram_edges": [i * width for i in range(histogram.numel())],
        "mean_memory": float(memory.mean()),
    }
    for signal in table.signals:
        column = table.columns[signal]
        out[f"kept_{signal}_mean"] = _finite_mean(column[kept_mask])
        out[f"pruned_{signal}_mean"] = _finite_mean(column[~kept_mask])
    for signal in table.signals:
        out[f"{signal}_repeatability"] = repeatability(table, signal)
    return out


def write_table_csv(table: SampleTable, memory: Tensor, path: str | os.PathLike[str],
                    labels: Sequence[Any] | None = None) -> None:
    """The table as CSV (index,count,<each tracked signal's EMA>,memory,last_epoch[,label]), written
    atomically: readers never see half a table."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"directory for the table does not exist: {path.parent}")
    n = table.num_samples
    header = ["index", "count", *table.signals, "memory", "last_epoch"]
    columns = [range(n), table.count.tolist(), *(table.columns[name].tolist() for name in table.signals),
               memory.tolist(), table.last_epoch.tolist()]
    if labels is not None:
        label_list = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        if len(label_list) != n:
            raise ConfigError(f"labels has {len(label_list)} entries, expected num_samples={n}")
        columns.append(label_list)
        header.append("label")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(zip(*columns, strict=True))
    atomic_write_text(path, buf.getvalue())
