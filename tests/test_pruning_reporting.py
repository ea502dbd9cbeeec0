"""Reporting of ssl_emp.pruning: stats, epoch diagnostics, signal repeatability, the exported table."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.pruning_helpers import make, run_epoch


# --------------------------------------------------------------------------- reporting
def test_stats_and_diagnostics_hand_case() -> None:
    pruner = make("random-dynamic", 0.5, n=10, epochs=4)
    pruner.set_epoch(0)
    kept = pruner.kept_indices()
    align = torch.linspace(-1, 1, 5)
    pruner.update(kept, torch.full((5,), 2.0), align)
    d = pruner.epoch_diagnostics()
    assert d["keep_fraction"] == 0.5 and d["cumulative_visits"] == 5
    assert d["count_histogram"] == [5, 5] and d["count_histogram_edges"] == [0, 1]
    assert d["count_cv"] == pytest.approx(1.0)  # counts 0/1 half each: std 0.5 / mean 0.5
    assert d["never_trained_fraction"] == 0.5
    assert d["mean_memory"] == pytest.approx(float(((1 + align) / 2).sum()) / 10)
    assert d["kept_loss_mean"] == 2.0 and d["pruned_loss_mean"] is None
    assert d["kept_align_mean"] == pytest.approx(0.0) and d["pruned_align_mean"] is None
    s = pruner.stats()
    assert s["achieved_rate"] == 0.5 and s["achieved_rate_total"] == pytest.approx(1 - 5 / 40)
    assert (s["method"], s["target_rate"], s["epochs_done"], s["optimizer_steps"]) == ("random-dynamic", 0.5, 1, 1)


def test_export_table(tmp_path) -> None:
    pruner = make("emp", 0.5, n=6, epochs=3)
    run_epoch(pruner, 0)
    path = tmp_path / "table.csv"
    pruner.export_table(path, labels=[f"c{i}" for i in range(6)])
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "count", "loss", "align", "entropy", "memory", "last_epoch", "label"]
    assert [int(r["count"]) for r in rows] == pruner.table.count.tolist()
    trained = [r for r in rows if r["count"] == "1"]
    assert len(trained) == 3 and all(float(r["loss"]) > 0 and r["last_epoch"] == "0" for r in trained)
    assert rows[5]["label"] == "c5"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # temp file replaced


# --------------------------------------------------------------------------- signal repeatability
def _spearman_reference(x: list[float], y: list[float]) -> float:
    scipy_stats = pytest.importorskip("scipy.stats")
    return float(scipy_stats.spearmanr(x, y).statistic)


def test_signal_repeatability_matches_scipy_on_a_synthetic_stream() -> None:
    gen = torch.Generator().manual_seed(0)
    n, epochs = 300, 5
    pruner = make("random-dynamic", 0.4, n=n, epochs=epochs, seed=2)
    history: dict[str, dict[int, list[float]]] = {"loss": {}, "align": {}}
    for epoch in range(epochs):
        pruner.set_epoch(epoch)
        for chunk in pruner.sampler().indices().split(32):
            # Rounded values make ties, which must share average ranks.
            loss = (torch.rand(chunk.numel(), generator=gen) * 20).round() / 10
            align = torch.rand(chunk.numel(), generator=gen) * 2 - 1
            give_align = bool(torch.rand(1, generator=gen) < 0.7)  # some steps without align
            pruner.update(chunk, loss=loss, align=align if give_align else None)
            for i, value in zip(chunk.tolist(), loss.tolist(), strict=True):
                history["loss"].setdefault(i, []).append(value)
            if give_align:
                for i, value in zip(chunk.tolist(), align.tolist(), strict=True):
                    history["align"].setdefault(i, []).append(value)
        d = pruner.epoch_diagnostics()
        for signal, seen in history.items():
            pairs = [(v[-1], v[-2]) for v in seen.values() if len(v) >= 2]
            if len(pairs) < 3:
                assert d[f"{signal}_repeatability"] is None
            else:
                expected = _spearman_reference([p[0] for p in pairs], [p[1] for p in pairs])
                assert d[f"{signal}_repeatability"] == pytest.approx(expected, abs=1e-9)
        assert d["entropy_repeatability"] is None  # a signal never given
    assert d["loss_repeatability"] is not None and d["align_repeatability"] is not None


def test_repeatability_sees_a_repeatable_signal() -> None:
    pruner = make("full", 0.0, n=50, epochs=3)
    for epoch in range(3):  # loss = index + small epoch noise: the same ranking every epoch
        pruner.set_epoch(epoch)
        idx = torch.arange(50)
        pruner.update(idx, loss=idx.to(torch.float32) + 0.1 * epoch)
    assert pruner.epoch_diagnostics()["loss_repeatability"] == pytest.approx(1.0)
