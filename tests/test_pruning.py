"""Tests for ssl_emp.pruning (EMP_SSL.md (the method spec; summary in README "Method")): budgets, scores, baselines, state, errors."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ssl_emp.errors import ConfigError
from ssl_emp.pruning import METHODS, DynamicPruner, emp_score, memory_strength
from ssl_emp.pruning.distributed import shard

FIXED_K = ("random-static", "random-dynamic", "eps-greedy", "ucb", "emp")


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
        loss, align = stats(chunk, epoch)
        pruner.update(chunk, loss=loss, align=align)
    return served


def make(method: str = "emp", rate: float = 0.7, n: int = 100, epochs: int = 6, **kw) -> DynamicPruner:
    return DynamicPruner(num_samples=n, method=method, pruning_rate=rate, epochs=epochs, **kw)


# --------------------------------------------------------------------------- budgets
# Hand-written K = ceil((1 - r) N) for N = 101, and N = 100 (where (1 - 0.7) * 100 in floats is
# 30.000000000000004 and a naive ceil would give 31).
EXPECTED_K = {
    (101, 0.3): 71, (101, 0.5): 51, (101, 0.7): 31, (101, 0.9): 11,
    (100, 0.3): 70, (100, 0.5): 50, (100, 0.7): 30, (100, 0.9): 10,
}  # fmt: skip


@pytest.mark.parametrize("method", FIXED_K)
@pytest.mark.parametrize("n,rate", sorted(EXPECTED_K))
def test_fixed_budget_methods_keep_exactly_k_every_epoch(method: str, n: int, rate: float) -> None:
    k = EXPECTED_K[(n, rate)]
    pruner = make(method, rate, n=n, epochs=5)
    sampler = pruner.sampler()
    for epoch in range(5):
        served = run_epoch(pruner, epoch, batch=16)
        kept = pruner.kept_indices()
        assert kept.numel() == k and len(sampler) == k
        assert torch.equal(torch.sort(served).values, kept)  # no duplicates, exactly the set
        assert pruner.stats()["visits_per_epoch"][epoch] == k
    assert pruner.stats()["sample_visits"] == 5 * k
    assert pruner.stats()["achieved_rate"] == pytest.approx(1 - k / n)


def test_full_trains_everything() -> None:
    pruner = make("full", 0.0, n=37, epochs=3)
    for epoch in range(3):
        run_epoch(pruner, epoch)
        assert torch.equal(pruner.kept_indices(), torch.arange(37))
    assert pruner.stats()["achieved_rate"] == 0.0


def test_dataloader_uses_the_last_set_epoch() -> None:
    pruner = make("random-dynamic", 0.5, n=40, epochs=3)
    loader = DataLoader(torch.arange(40), batch_size=7, sampler=pruner.sampler())
    for epoch in range(3):
        pruner.set_epoch(epoch)
        seen = torch.cat(list(loader))
        assert torch.equal(torch.sort(seen).values, pruner.kept_indices(epoch))
        assert len(loader) == math.ceil(20 / 7)
    assert not torch.equal(pruner.kept_indices(0), pruner.kept_indices(1))


# --------------------------------------------------------------------------- score
def test_memory_strength_hand_cases() -> None:
    align = torch.tensor([0.5, 0.5, 1.0, -1.0, 0.2], dtype=torch.float64)
    last = torch.tensor([2, 4, 0, 3, -1])
    count = torch.tensor([1, 3, 2, 1, 0])
    m = memory_strength(align, last, count, epoch=5, rho=0.9)
    # 0.75·0.9², 0.75·0.9⁰, 1·0.9⁴, 0, unseen -> 0
    expected = torch.tensor([0.6075, 0.75, 0.6561, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)
    no_forgetting = memory_strength(align, last, count, epoch=5, rho=1.0)
    torch.testing.assert_close(no_forgetting[:3], torch.tensor([0.75, 0.75, 1.0], dtype=torch.float64))


def _hand_table(pruner: DynamicPruner) -> None:
    t = pruner.table
    t.loss[:] = torch.tensor([1.0, 2.0, 3.0, 2.5], dtype=torch.float64)
    t.align[:] = torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    t.last_epoch[:] = torch.tensor([2, 0, 2, 2])
    t.count[:] = 1


def test_emp_score_hand_case() -> None:
    # At t = 3 with rho = 0.5: m = [1, 0.25, 1, 0]; deficits [0, .75, 0, 1] (mean 0.4375);
    # loss mean 2.125.
    loss = torch.tensor([1.0, 2.0, 3.0, 2.5], dtype=torch.float64)
    memory = torch.tensor([1.0, 0.25, 1.0, 0.0], dtype=torch.float64)
    seen = torch.ones(4, dtype=torch.bool)
    s = emp_score(loss, memory, seen, beta=1.0)
    expected = torch.tensor([0.470588235, 2.655462185, 1.411764706, 3.462184874], dtype=torch.float64)
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-8)
    # Means run over seen samples only; unseen score +inf.
    seen2 = torch.tensor([True, True, False, False])
    s2 = emp_score(torch.tensor([1.0, 3.0, float("nan"), 9.0], dtype=torch.float64), memory, seen2, 2.0)
    torch.testing.assert_close(s2[:2], torch.tensor([0.5 + 2 * 0 / 0.375, 1.5 + 2 * 0.75 / 0.375], dtype=torch.float64))
    assert torch.isinf(s2[2:]).all()


@pytest.mark.parametrize(
    ("method", "beta", "expected"), [("emp", 1.0, [1, 3]), ("emp", 0.0, [2, 3]), ("eps-greedy", None, [2, 3])]
)
def test_selection_follows_hand_computed_scores(method: str, beta: float | None, expected: list[int]) -> None:
    kw = {"beta": beta} if beta is not None else {}
    pruner = make(method, 0.5, n=4, epochs=5, rho=0.5, epsilon=0.0, **kw)
    _hand_table(pruner)
    pruner.set_epoch(3)
    assert pruner.kept_indices().tolist() == expected


def test_pruner_memory_and_emas_from_updates() -> None:
    pruner = make("emp", 0.0, n=3, epochs=5, alpha=0.5, gamma=0.25, rho=0.5)
    idx = torch.tensor([0, 1, 2])
    pruner.set_epoch(0)
    pruner.update(idx, torch.tensor([2.0, 1.0, 1.0]), torch.tensor([0.2, 0.0, 1.0]))
    pruner.set_epoch(1)
    pruner.update(idx[:1], torch.tensor([4.0]), torch.tensor([0.6]))
    t = pruner.table
    assert t.loss[0].item() == pytest.approx(3.0)  # 0.5·2 + 0.5·4
    assert t.align[0].item() == pytest.approx(0.3)  # 0.75·0.2 + 0.25·0.6
    assert t.count.tolist() == [2, 1, 1] and t.last_epoch.tolist() == [1, 0, 0]
    # As the epoch-2 selection sees it: ((1+a)/2)·0.5^(2 - last - 1).
    torch.testing.assert_close(pruner.memory(), torch.tensor([0.65, 0.25, 0.5], dtype=torch.float64))


def test_beta_zero_reproduces_eps_greedy_and_beta_matters() -> None:
    runs = {}
    for name, method, kw in [("emp0", "emp", {"beta": 0.0}), ("eps", "eps-greedy", {}), ("emp1", "emp", {"beta": 1.0})]:
        pruner = make(method, 0.7, n=200, epochs=8, seed=5, **kw)
        runs[name] = []
        for epoch in range(8):
            run_epoch(pruner, epoch)
            runs[name].append(pruner.kept_indices())
    assert all(torch.equal(a, b) for a, b in zip(runs["emp0"], runs["eps"], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(runs["emp1"], runs["eps"], strict=True))


def test_eps_greedy_split_is_exact() -> None:
    # N = 100, r = 0.69 -> K = 31; epsilon 0.3 -> 9 explored, 22 greedy.
    pruner = make("eps-greedy", 0.69, n=100, epochs=6, epsilon=0.3, seed=1)
    for epoch in range(4):  # epochs 0-3 sweep the data (4·31 >= 100)
        run_epoch(pruner, epoch)
    pruner.set_epoch(4)
    kept = set(pruner.kept_indices().tolist())
    ranking = torch.argsort(pruner.table.loss, descending=True).tolist()
    assert len(kept) == 31
    assert set(ranking[:22]) <= kept  # the greedy part
    assert kept != set(ranking[:31])  # and 9 drawn from the rest, not the next 9


def test_ucb_scores_by_mean_plus_c_std() -> None:
    pruner = make("ucb", 0.5, n=4, epochs=4, ucb_c=1.0)
    t = pruner.table
    t.count[:] = 2
    t.loss_mean[:] = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)
    t.loss_m2[:] = torch.tensor([0.0, 0.0, 0.0, 32.0], dtype=torch.float64)  # std of #3 = 4
    pruner.set_epoch(1)
    assert pruner.kept_indices().tolist() == [2, 3]
    greedy = make("ucb", 0.5, n=4, epochs=4, ucb_c=0.0)
    greedy.table.load_state_dict(t.state_dict())
    greedy.set_epoch(1)
    assert greedy.kept_indices().tolist() == [1, 2]


def test_welford_running_stats() -> None:
    pruner = make("ucb", 0.0, n=2, epochs=3)
    for epoch, value in enumerate([1.0, 3.0]):
        pruner.set_epoch(epoch)
        pruner.update(torch.tensor([0]), torch.tensor([value]))
    assert pruner.table.loss_mean[0].item() == pytest.approx(2.0)
    assert pruner.table.loss_std()[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["emp", "eps-greedy", "ucb"])
def test_unseen_first_sweep(method: str) -> None:
    pruner = make(method, 0.7, n=100, epochs=6, seed=2)
    kept = []
    for epoch in range(4):
        run_epoch(pruner, epoch)
        kept.append(set(pruner.kept_indices().tolist()))
    first_three = kept[0] | kept[1] | kept[2]
    assert len(first_three) == 90  # epochs 0-2: 90 distinct samples, no repeats
    remaining = set(range(100)) - first_three
    assert remaining <= kept[3]  # epoch 3 trains the last 10 before any repeats...
    assert len(kept[3] - remaining) == 20  # ...and fills up with 20 repeats
    assert pruner.epoch_diagnostics()["never_trained_fraction"] == 0.0


def test_random_static_and_dynamic() -> None:
    static, dynamic = make("random-static", 0.5), make("random-dynamic", 0.5)
    for epoch in range(3):
        run_epoch(static, epoch)
        run_epoch(dynamic, epoch)
    assert all(torch.equal(static.kept_indices(e), static.kept_indices(0)) for e in range(3))
    assert not torch.equal(dynamic.kept_indices(1), dynamic.kept_indices(0))


# --------------------------------------------------------------------------- infobatch
def _infobatch_loss(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    loss = ((idx * 7919 + epoch * 13) % 1000).to(torch.float32) / 1000 + 0.5
    return loss, torch.zeros_like(loss)


@pytest.mark.parametrize("prob", [0.5, 0.25])
def test_infobatch_prunes_low_loss_with_prob_p_and_rescales(prob: float) -> None:
    n, epochs = 20000, 8  # delta 0.875 -> epochs 0-6 may prune, epoch 7 uses all data
    pruner = make("infobatch", 0.7, n=n, epochs=epochs, infobatch_prune_prob=prob)
    visits = 0
    for epoch in range(epochs):
        prev = pruner.table.loss.clone()
        pruner.set_epoch(epoch)
        kept = pruner.kept_indices()
        weights = []
        for chunk in pruner.sampler().indices().split(4096):
            loss, align = _infobatch_loss(chunk, epoch)
            w = pruner.update(chunk, loss=loss, align=align)
            assert w.shape == loss.shape and w.dtype == loss.dtype
            weights.append(torch.stack([chunk.to(torch.float32), w], 1))
        visits += kept.numel()
        got = torch.cat(weights)
        order = torch.argsort(got[:, 0])
        w_by_index = got[order, 1]
        if epoch == 0 or epoch == epochs - 1:  # all unseen / annealing: full data, weight 1
            assert kept.numel() == n and bool((w_by_index == 1).all())
            continue
        low = prev < prev.mean()
        pruned = torch.ones(n, dtype=torch.bool)
        pruned[kept] = False
        assert not bool((pruned & ~low).any())  # only below-mean samples are dropped
        frac = (pruned & low).sum().item() / low.sum().item()
        assert abs(frac - prob) < 4 * math.sqrt(prob * (1 - prob) / low.sum().item())
        scale = torch.where(low[kept], 1 / (1 - prob), 1.0).to(torch.float32)
        torch.testing.assert_close(w_by_index, scale)
    stats = pruner.stats()
    assert stats["sample_visits"] == visits
    assert stats["achieved_rate"] == pytest.approx(1 - visits / (n * epochs))
    # About half the samples are below the mean, pruned with prob p in 6 of the 8 epochs.
    assert stats["achieved_rate"] == pytest.approx(prob * 0.5 * 6 / 8, abs=0.01)
    assert stats["budget"] is None


def test_infobatch_never_prunes_unseen_samples() -> None:
    pruner = make("infobatch", 0.0, n=100, epochs=4)
    pruner.set_epoch(0)
    pruner.update(torch.arange(50), *_infobatch_loss(torch.arange(50), 0))  # half never trained
    pruner.set_epoch(1)
    assert set(range(50, 100)) <= set(pruner.kept_indices().tolist())


def test_infobatch_annealing_start() -> None:
    # ceil(0.5 · 5) = 3: epochs 3 and 4 are full even though losses would allow pruning.
    pruner = make("infobatch", 0.0, n=2000, epochs=5, infobatch_delta=0.5)
    sizes = [run_epoch(pruner, e, batch=512, stats=_infobatch_loss).numel() for e in range(5)]
    assert sizes[0] == 2000 and sizes[1] < 2000 and sizes[2] < 2000
    assert sizes[3:] == [2000, 2000]


# --------------------------------------------------------------------------- determinism
def test_deterministic_per_seed_and_different_across_seeds() -> None:
    def trace(method: str, seed: int) -> list[list[int]]:
        pruner = make(method, 0.7, n=120, epochs=5, seed=seed)
        return [run_epoch(pruner, e).tolist() for e in range(5)]  # served order included

    rng_before = torch.get_rng_state()
    for method in ("emp", "random-dynamic", "ucb"):
        assert trace(method, 0) == trace(method, 0)
        assert trace(method, 0) != trace(method, 1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG never touched


def test_update_ignores_repeats_within_an_epoch() -> None:
    pruner = make("emp", 0.0, n=10, epochs=2)
    pruner.set_epoch(0)
    w = pruner.update(torch.tensor([3, 3, 4]), torch.tensor([1.0, 9.0, 2.0]), torch.tensor([0.0, 0.0, 0.0]))
    pruner.update(torch.tensor([4]), torch.tensor([7.0]), torch.tensor([0.5]))  # padding repeat
    assert w.tolist() == [1.0, 1.0, 1.0]
    assert pruner.table.loss[3].item() == 1.0 and pruner.table.loss[4].item() == 2.0
    assert pruner.table.count[4].item() == 1
    stats = pruner.stats()
    assert stats["sample_visits"] == 2 and stats["optimizer_steps"] == 2


# --------------------------------------------------------------------------- checkpoint
@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_resumes_identically(method: str, tmp_path) -> None:
    rate = 0.0 if method == "full" else 0.6
    reference = make(method, rate, n=150, epochs=6, seed=4)
    for epoch in range(3):
        run_epoch(reference, epoch)
    path = tmp_path / "pruner.pt"
    torch.save(reference.state_dict(), path)
    resumed = make(method, rate, n=150, epochs=6, seed=4)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.stats() == reference.stats()
    for epoch in range(3, 6):
        assert torch.equal(run_epoch(resumed, epoch), run_epoch(reference, epoch))
        assert torch.equal(resumed.kept_indices(), reference.kept_indices())
    for name, column in reference.table.state_dict().items():
        torch.testing.assert_close(getattr(resumed.table, name), column, rtol=0, atol=0, equal_nan=True)
    assert resumed.stats() == reference.stats()


def test_mid_epoch_resume_keeps_the_epoch_selection() -> None:
    pruner = make("infobatch", 0.0, n=200, epochs=4)
    run_epoch(pruner, 0)
    pruner.set_epoch(1)
    chunk = pruner.sampler().indices()[:50]
    pruner.update(chunk, *fake_stats(chunk, 1))
    resumed = make("infobatch", 0.0, n=200, epochs=4)
    resumed.load_state_dict(pruner.state_dict())
    resumed.set_epoch(1)  # same epoch: the restored set, not a fresh one from updated state
    assert torch.equal(resumed.kept_indices(), pruner.kept_indices())
    rest = pruner.sampler().indices()
    torch.testing.assert_close(resumed.update(rest, *fake_stats(rest, 1)), pruner.update(rest, *fake_stats(rest, 1)))


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
    assert list(rows[0]) == ["index", "count", "loss", "align", "memory", "last_epoch", "label"]
    assert [int(r["count"]) for r in rows] == pruner.table.count.tolist()
    trained = [r for r in rows if r["count"] == "1"]
    assert len(trained) == 3 and all(float(r["loss"]) > 0 and r["last_epoch"] == "0" for r in trained)
    assert rows[5]["label"] == "c5"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # temp file replaced


# --------------------------------------------------------------------------- distributed sharding
@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 2), (2, 4), (9, 1)])
def test_shard_matches_distributed_sampler(n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    for rank in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert shard(order, rank, world).tolist() == [order[i].item() for i in ref]


def test_sampler_explicit_rank_shards_cover_kept_set() -> None:
    pruner = make("emp", 0.7, n=101, epochs=2)
    pruner.set_epoch(0)
    shards = [pruner.sampler(rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [11, 11, 11]  # K = 31 padded to 33
    union = set().union(*(set(s) for s in shards))
    assert union == set(pruner.kept_indices().tolist())


# --------------------------------------------------------------------------- bad input
def _bad_cases():
    def upd(**kw):
        p = make("emp", 0.5, n=100, epochs=3)
        p.set_epoch(0)
        args = {"idx": torch.tensor([0, 1]), "loss": torch.tensor([1.0, 1.0]), "align": torch.tensor([0.0, 0.0])}
        args.update(kw)
        return lambda: p.update(**args)

    def pruner_then(fn):
        p = make("emp", 0.5, n=100, epochs=3)
        return lambda: fn(p)

    other = make("emp", 0.5, n=100, epochs=3, seed=9).state_dict()
    return [
        (lambda: make(n=0), "0"),
        (lambda: make(n=2.5), "2.5"),
        (lambda: make(method="bogus"), "bogus"),
        (lambda: make(rate=0.96), "0.96"),
        (lambda: make(rate=-0.1), "-0.1"),
        (lambda: make(rate=float("nan")), "nan"),
        (lambda: make("full", 0.5), "0.5"),
        (lambda: make(epochs=0), "0"),
        (lambda: make(seed="x"), "'x'"),
        (lambda: make(beta=-1.0), "-1.0"),
        (lambda: make(rho=1.5), "1.5"),
        (lambda: make(rho=0.0), "0.0"),
        (lambda: make(alpha=0.0), "0.0"),
        (lambda: make(gamma=2.0), "2.0"),
        (lambda: make(epsilon=1.2), "1.2"),
        (lambda: make("ucb", ucb_c=-0.5), "-0.5"),
        (lambda: make("infobatch", infobatch_prune_prob=1.0), "1.0"),
        (lambda: make("infobatch", infobatch_delta=1.5), "1.5"),
        (lambda: make("emp", ucb_c=1.0), "ucb_c"),
        (lambda: make("infobatch", alpha=0.5), "alpha"),
        (lambda: make("random-dynamic", beta=1.0), "beta"),
        (lambda: make(beta="high"), "'high'"),
        (pruner_then(lambda p: p.update(torch.tensor([0]), torch.tensor([1.0]), torch.tensor([0.0]))), "set_epoch"),
        (pruner_then(lambda p: p.set_epoch(3)), "3"),
        (pruner_then(lambda p: p.set_epoch(-1)), "-1"),
        (pruner_then(lambda p: (p.set_epoch(2), p.set_epoch(1))), "1"),
        (pruner_then(lambda p: (p.set_epoch(0), p.kept_indices(7))), "7"),
        (pruner_then(lambda p: list(p.sampler())), "set_epoch"),
        (pruner_then(lambda p: p.load_state_dict(other)), "seed"),
        (pruner_then(lambda p: p.sampler(rank=2, world_size=2)), "rank=2"),
        (pruner_then(lambda p: p.export_table("/nonexistent-dir-xyz/t.csv")), "nonexistent-dir-xyz"),
        (pruner_then(lambda p: p.export_table("/tmp/t.csv", labels=[1, 2, 3])), "3"),
        (upd(idx=torch.tensor([0, 100])), "100"),
        (upd(idx=torch.tensor([-1, 0])), "-1"),
        (upd(idx=torch.tensor([0.0, 1.0])), "float32"),
        (upd(loss=torch.tensor([1.0, 1.0, 1.0])), "(3,)"),
        (upd(align=torch.tensor([[0.0, 0.0]])), "(1, 2)"),
        (upd(loss=torch.tensor([1.0, float("nan")])), "nan"),
        (upd(loss=torch.tensor([1, 2])), "int64"),
        (upd(align=torch.tensor([0.0, float("inf")])), "inf"),
        (upd(align=torch.tensor([0.0, 1.5])), "1.5"),
        (upd(align=None), "align"),
        (upd(loss=[1.0, 1.0]), "list"),
    ]


@pytest.mark.parametrize(("call", "needle"), _bad_cases())
def test_bad_input_raises_config_error(call, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_accepts_cuda_tensors() -> None:
    pruner = make("infobatch", 0.0, n=50, epochs=3)
    run_epoch(pruner, 0)
    pruner.set_epoch(1)
    idx = pruner.sampler().indices().cuda()
    loss, align = fake_stats(idx, 1)
    w = pruner.update(idx, loss.half(), align)
    assert w.device == idx.device and w.dtype == torch.float16 and w.shape == idx.shape
