"""Selection rules of ssl_emp.pruning (docs/method.md): budgets, scores, baselines,
InfoBatch, the supervised objective, determinism and the sampler that serves the kept set."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ssl_emp.distributed import shard
from ssl_emp.pruning import DynamicPruner, emp_score, memory_strength
from ssl_emp.pruning.methods import infobatch_full_from
from tests.pruning_helpers import make, run_epoch

FIXED_K = ("random-static", "random-dynamic", "eps-greedy", "ucb", "emp", "emp-easy")


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


@pytest.mark.parametrize("method", ["emp", "emp-easy", "eps-greedy", "ucb"])
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
    # floor(0.5 · 5) = 2 (the official code's rule): epochs 2-4 are full though losses allow pruning.
    pruner = make("infobatch", 0.0, n=2000, epochs=5, infobatch_delta=0.5)
    sizes = [run_epoch(pruner, e, batch=512, stats=_infobatch_loss).numel() for e in range(5)]
    assert sizes[0] == 2000 and sizes[1] < 2000
    assert sizes[2:] == [2000, 2000, 2000]


@pytest.mark.parametrize(("epochs", "full_epochs"), [(10, [8, 9]), (40, list(range(35, 40))), (8, [7])])
def test_infobatch_full_data_from_floor_delta_e(epochs: int, full_epochs: list[int]) -> None:
    # E = 10, δ = 0.875: δE = 8.75 -> full data in epochs 8 and 9 (ceil would give only 9);
    # E = 40: δE = 35 is an integer, floor = ceil.
    assert infobatch_full_from(epochs, 0.875) == full_epochs[0]
    pruner = make("infobatch", 0.0, n=500, epochs=epochs)
    full = []
    for epoch in range(epochs):
        run_epoch(pruner, epoch, batch=500, stats=_infobatch_loss)
        if pruner.epoch_size() == 500 and epoch > 0:
            full.append(epoch)
    assert full == full_epochs


# --------------------------------------------------------------------------- supervised objective
def sup_stats(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-sample (cross-entropy, entropy) that change with the epoch."""
    idx = idx.to(torch.int64)
    loss = ((idx * 7919 + epoch * 104729) % 997).to(torch.float32) / 997 * 2
    entropy = ((idx * 613 + epoch * 31) % 211).to(torch.float32) / 211 * math.log(10)
    return loss, entropy


def run_sup_epoch(pruner: DynamicPruner, epoch: int, batch: int = 16) -> None:
    pruner.set_epoch(epoch)
    for chunk in pruner.sampler().indices().split(batch):
        loss, entropy = sup_stats(chunk, epoch)
        pruner.update(chunk, loss=loss, entropy=entropy)


@pytest.mark.parametrize(("method", "beta"), [("emp", 1.0), ("emp", 2.5), ("emp-easy", 1.0)])
def test_supervised_emp_picks_exactly_the_top_k_of_loss_plus_beta_entropy(method: str, beta: float) -> None:
    n, k = 60, 18  # rate 0.7
    pruner = make(method, 0.7, n=n, epochs=8, objective="supervised", beta=beta, epsilon=0.0, seed=3)
    for epoch in range(4):  # 4 · 18 >= 60: everything seen
        run_sup_epoch(pruner, epoch)
    assert bool(pruner.table.seen().all())
    score = pruner.table.loss + beta * pruner.table.entropy
    pruner.set_epoch(4)
    expected = torch.argsort(score, descending=method == "emp")[:k]
    assert pruner.kept_indices().tolist() == sorted(expected.tolist())
    loss_only = torch.argsort(pruner.table.loss, descending=method == "emp")[:k]
    assert set(expected.tolist()) != set(loss_only.tolist())  # the entropy term changes the choice


def test_supervised_entropy_ema_hand_case() -> None:
    pruner = make("emp", 0.0, n=2, epochs=3, objective="supervised", alpha=0.5, gamma=0.25)
    idx = torch.tensor([0, 1])
    pruner.set_epoch(0)
    pruner.update(idx, loss=torch.tensor([2.0, 1.0]), entropy=torch.tensor([1.0, 0.5]))
    pruner.set_epoch(1)
    pruner.update(idx[:1], loss=torch.tensor([4.0]), entropy=torch.tensor([2.0]))
    t = pruner.table
    assert t.loss.tolist() == [3.0, 1.0] and t.entropy.tolist() == [1.25, 0.5]  # 0.75·1 + 0.25·2
    d = pruner.epoch_diagnostics()
    assert d["kept_entropy_mean"] == pytest.approx(0.875) and d["kept_align_mean"] is None
    assert d["align_repeatability"] is None and d["entropy_repeatability"] is None  # 1 sample seen twice
    assert pruner.stats()["objective"] == "supervised"


def test_supervised_baselines_read_the_loss_only() -> None:
    # eps-greedy and UCB need no entropy and rank by the loss exactly as under the contrastive objective.
    for method in ("eps-greedy", "ucb"):
        runs = []
        for objective in ("supervised", "contrastive"):
            pruner = make(method, 0.7, n=80, epochs=6, objective=objective, seed=1)
            for epoch in range(6):
                pruner.set_epoch(epoch)
                for chunk in pruner.sampler().indices().split(16):
                    pruner.update(chunk, loss=sup_stats(chunk, epoch)[0])
            runs.append([pruner.kept_indices(e) for e in range(6)])
        assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# --------------------------------------------------------------------------- emp-easy
def test_emp_easy_reverses_the_emp_ranking() -> None:
    # Hand scores at t = 3, rho = 0.5 (test_emp_score_hand_case): [0.47, 2.66, 1.41, 3.46].
    for method, expected in (("emp", [1, 3]), ("emp-easy", [0, 2])):
        pruner = make(method, 0.5, n=4, epochs=5, rho=0.5, epsilon=0.0)
        _hand_table(pruner)
        pruner.set_epoch(3)
        assert pruner.kept_indices().tolist() == expected


def test_emp_easy_unseen_first_then_lowest_scores_plus_exploration() -> None:
    pruner = make("emp-easy", 0.69, n=100, epochs=6, epsilon=0.3, seed=1)  # K = 31: 22 easiest + 9 drawn
    kept = [set(run_epoch(pruner, e).tolist()) for e in range(3)]
    assert len(kept[0] | kept[1] | kept[2]) == 93  # a sweep over unseen samples, no repeats
    run_epoch(pruner, 3)  # the last 7 unseen, then 24 seen
    pruner.set_epoch(4)
    t = pruner.table
    memory = memory_strength(t.align, t.last_epoch, t.count, 4, pruner.params["rho"])
    ranking = torch.argsort(emp_score(t.loss, memory, t.seen(), 1.0)).tolist()  # ascending
    chosen = set(pruner.kept_indices().tolist())
    assert len(chosen) == 31 and set(ranking[:22]) <= chosen and chosen != set(ranking[:31])


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


# --------------------------------------------------------------------------- sampler and sharding
def test_dataloader_uses_the_last_set_epoch() -> None:
    pruner = make("random-dynamic", 0.5, n=40, epochs=3)
    loader = DataLoader(torch.arange(40), batch_size=7, sampler=pruner.sampler())
    for epoch in range(3):
        pruner.set_epoch(epoch)
        seen = torch.cat(list(loader))
        assert torch.equal(torch.sort(seen).values, pruner.kept_indices(epoch))
        assert len(loader) == math.ceil(20 / 7)
    assert not torch.equal(pruner.kept_indices(0), pruner.kept_indices(1))


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
