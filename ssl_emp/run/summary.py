"""A finished run's ``summary.json``: what it reached, what it cost, what its selection did.

The one list of the summary's diagnostics lives here (the trainer writes them, the benchmark's
result rows carry them): the signals' repeatability as of the last epoch (it settles as the
statistics fill in), and the probes' shares of the kept set averaged over epochs (the selection's
behaviour over the run). Rows written before a key existed lack it: readers use ``row.get``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

REPEATABILITY_KEYS = ("loss_repeatability", "align_repeatability", "entropy_repeatability")
REDUNDANCY_KEYS = ("repeat_share", "distinct_unique")  # the redundancy probe's
EPOCH_MEAN_KEYS = ("junk_kept_fraction", *REDUNDANCY_KEYS)
DIAGNOSTIC_KEYS = (*REPEATABILITY_KEYS, *EPOCH_MEAN_KEYS)


def epoch_diagnostics(record: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's diagnostics among an epoch record's ``pruning/...`` entries."""
    return {k: record[f"pruning/{k}"] for k in DIAGNOSTIC_KEYS if f"pruning/{k}" in record}


def run_diagnostics(per_epoch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Signal repeatability at the last epoch; the junk and redundancy figures averaged over all
    epochs (None when the run did not probe)."""
    last = per_epoch[-1] if per_epoch else {}
    out = {key: last.get(key) for key in REPEATABILITY_KEYS}
    for key in EPOCH_MEAN_KEYS:
        values = [d[key] for d in per_epoch if key in d]
        out[key] = sum(values) / len(values) if values else None
    return out


def accuracy_fields(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last evaluation's figures and the kNN top-1 before training (epoch -1), from the history."""
    final = history[-1] if history else {}
    before = history[0]["knn_top1"] if history and history[0]["epoch"] == -1 else None
    return {"knn_top1": final.get("knn_top1"), "knn_top5": final.get("knn_top5"),
            "test_top1": final.get("test_top1"), "knn_top1_epoch0": before}
