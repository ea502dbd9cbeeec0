"""SCAN (Guo & Kankanhalli, arXiv 2411.09126; docs/method.md "The rules") in the pruning engine, the
rule itself: the per-direction losses, its parameters, the warm-up trigger, the removal fractions, the
candidate marks and their top-ups against a direct computation, and the achieved rate. Resume, two
gloo ranks, the CLI and no host sync in update(): tests/test_scan_run.py."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from ssl_emp.benchmark.grid import RATELESS
from ssl_emp.config import ModelConfig
from ssl_emp.losses import info_nce_per_sample, moco_info_nce_per_sample
from ssl_emp.models import build_model
from ssl_emp.pruning import METHOD_PARAMS, METHODS
from ssl_emp.pruning.scan import removal_count, removal_fraction, scan_phase
from tests.pruning_helpers import assert_one_line_config_error, fake_stats, make
from tests.scan_reference import SCALES, direction_stats, mask_of, reference_candidates, run_scan_epoch, scan
from tests.scan_reference import SCAN_N as N


# --------------------------------------------------------------------------- per-direction losses
def test_simclr_directions_match_a_direct_computation_and_average_to_the_loss():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    result = info_nce_per_sample(z1, z2, 0.5)
    loss, align = result
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / 0.5

    def ell(a: int, b: int) -> torch.Tensor:  # -log softmax of the positive b among all but a
        return torch.logsumexp(torch.cat([sim[a, :a], sim[a, a + 1:]]), 0) - sim[a, b]

    torch.testing.assert_close(result.loss_12, torch.stack([ell(i, i + 6) for i in range(6)]))
    torch.testing.assert_close(result.loss_21, torch.stack([ell(i + 6, i) for i in range(6)]))
    assert torch.equal(0.5 * (result.loss_12 + result.loss_21), loss.detach())  # exactly the symmetrised loss
    assert (result.loss_12 + result.loss_21).mean() / 2 == loss.mean()
    assert not result.loss_12.requires_grad and not result.loss_21.requires_grad
    assert len(result) == 2 and align.shape == (6,)  # still unpacks as (loss, align)


def test_moco_directions_match_cross_entropy_per_direction():
    g = torch.Generator().manual_seed(1)
    q1, q2, k1, k2 = (torch.randn(5, 8, generator=g) for _ in range(4))
    queue = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    result = moco_info_nce_per_sample(q1, q2, k1, k2, queue, 0.2)

    def ce(q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long), reduction="none")

    torch.testing.assert_close(result.loss_12, ce(q1, k2))
    torch.testing.assert_close(result.loss_21, ce(q2, k1))
    assert torch.equal(0.5 * (result.loss_12 + result.loss_21), result[0])


@pytest.mark.parametrize("algorithm", ["simclr", "moco"])
def test_contrastive_models_return_both_directions_as_signals(algorithm):
    cfg = ModelConfig(backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [4, 8, 8, 8]}, proj_hidden_dim=16,
                      proj_out_dim=8, queue_size=32, channels_last=False)
    model = build_model(algorithm, cfg)
    views = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = model(views[0], views[1])
    assert set(out) == {"loss", "align", "loss_12", "loss_21"}
    assert out["loss_12"].shape == out["loss_21"].shape == (4,) and not out["loss_12"].requires_grad
    torch.testing.assert_close(0.5 * (out["loss_12"] + out["loss_21"]), out["loss"].detach(), rtol=0, atol=0)
    supervised = build_model("supervised", cfg, num_classes=3)(views[0], labels=torch.tensor([0, 1, 2, 0]))
    assert set(supervised) == {"loss", "entropy"}  # one direction: SCAN reads its loss for both


# --------------------------------------------------------------------------- params and API
def test_scan_params_defaults_and_rate_follow_infobatch():
    assert "scan" in METHODS and "scan" in RATELESS
    assert METHOD_PARAMS["scan"] == ("gamma", "rho", "scan_rho_max", "scan_rho_min", "scan_cycle", "scan_tau")
    pruner = scan()
    assert {k: pruner.params[k] for k in METHOD_PARAMS["scan"][2:]} == {
        "scan_rho_max": 0.35, "scan_rho_min": 0.35, "scan_cycle": 3, "scan_tau": 0.3}
    assert pruner.budget is None and pruner.epoch_size() == N
    # pruning_rate is ignored, as for infobatch: the same run at any rate.
    runs = []
    for rate in (0.0, 0.7):
        p = scan(pruning_rate=rate, epochs=8)
        for epoch in range(8):
            run_scan_epoch(p, epoch, SCALES[epoch])
        runs.append([p.kept_indices(e) for e in range(8)])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize(("kw", "needle"), [
    ({"scan_rho_max": 0.6}, "scan_rho_max must be in [0, 0.5]"),
    ({"scan_rho_min": -0.1}, "scan_rho_min must be in [0, 0.5]"),
    ({"scan_cycle": 0}, "scan_cycle must be an integer >= 1"),
    ({"scan_cycle": 2.5}, "scan_cycle must be an integer >= 1"),
    ({"scan_tau": 1.0}, "scan_tau must be in [0, 1)"),
    ({"alpha": 0.5}, "alpha"),  # SCAN reads fresh losses: no EMA rate
    ({"scan_tau": True}, "scan_tau must be a finite number"),
])
def test_bad_scan_params_are_one_line_config_errors(kw, needle):
    assert_one_line_config_error(lambda: scan(**kw), needle)


def test_other_methods_ignore_the_direction_signals_and_scan_wants_both_or_neither():
    emp = make("emp", 0.5, n=20, epochs=2)
    emp.set_epoch(0)
    kept = emp.kept_indices()
    loss, align = fake_stats(kept, 0)
    emp.update(kept, loss=loss, align=align, loss_12=torch.zeros(3), loss_21=torch.zeros(3))  # not even checked
    assert emp._pending[-1].loss_12 is None and emp._pending[-1].loss_21 is None  # and not buffered
    emp.flush()
    pruner = scan(n=20, epochs=2)
    pruner.set_epoch(0)
    idx = torch.arange(20)
    assert_one_line_config_error(lambda: pruner.update(idx, loss=torch.ones(20), loss_12=torch.ones(20)), "loss_21")
    assert_one_line_config_error(lambda: pruner.update(idx, loss=torch.ones(20), loss_12=torch.ones(20),
                                                       loss_21=torch.ones(3)), "(3,)")


def test_direction_losses_are_buffered_only_in_probe_epochs():
    pruner = scan()
    for epoch in range(3):  # warm-up: nothing to mark, nothing kept of the directions
        pruner.set_epoch(epoch)
        chunk = pruner.sampler().indices()[:32]
        l12, l21 = direction_stats(chunk, epoch, SCALES[epoch])
        pruner.update(chunk, loss=0.5 * (l12 + l21), loss_12=l12, loss_21=l21)
        assert pruner._pending[-1].loss_12 is None
        pruner.flush()
        run_scan_epoch(pruner, epoch, SCALES[epoch])  # the same epoch again: the rest of its stream
    pruner.set_epoch(3)  # the probe
    chunk = pruner.sampler().indices()[:32]
    l12, l21 = direction_stats(chunk, 3)
    pruner.update(chunk, loss=0.5 * (l12 + l21), loss_12=l12, loss_21=l21)
    assert torch.equal(pruner._pending[-1].loss_12, l12) and torch.equal(pruner._pending[-1].loss_21, l21)


def test_non_finite_direction_loss_is_reported_at_flush():
    pruner = scan(epochs=6)
    for epoch in range(3):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
    pruner.set_epoch(3)  # the probe
    idx = torch.arange(N)
    l12 = torch.ones(N)
    l12[7] = float("inf")
    pruner.update(idx, loss=torch.ones(N), loss_12=l12, loss_21=torch.ones(N))
    assert_one_line_config_error(pruner.flush, "loss_12 must be finite, got inf for index 7")


# --------------------------------------------------------------------------- schedule
def test_warm_up_ends_when_the_epoch_loss_improves_by_less_than_tau():
    pruner = scan(epochs=12)
    sizes = []
    for epoch in range(12):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
        sizes.append(pruner.epoch_size())
        # Epoch 2's loss is tested when epoch 3 is selected (the whole epoch is in by then).
        assert pruner.epoch_diagnostics()["scan_warmup_end"] == (-1 if epoch < 3 else 3)
    # Warm-up 0-2 and probes 3, 7, 11 train all data; 4-6 and 8-10 leave candidates out.
    assert [s == N for s in sizes] == [True] * 4 + [False] * 3 + [True] + [False] * 3 + [True]
    # The trigger compares with the previous epoch: against the first (64 % better) it would wait.
    sums = [float((0.5 * sum(direction_stats(torch.arange(N), e, SCALES[e]))).sum()) for e in range(3)]
    assert (sums[1] - sums[2]) / sums[1] < 0.3 < (sums[0] - sums[2]) / sums[0]
    assert pruner.method_state.prev_loss == pytest.approx(sums[1])


@pytest.mark.parametrize("tau", [0.0, 0.5])
def test_warm_up_trigger_follows_tau(tau: float):
    pruner = scan(epochs=5, scan_tau=tau)
    for epoch in range(5):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
    # τ = 0.5: epoch 1 improves by exactly 50 %, not < τ; epoch 2 by 28 %: w = 3. τ = 0: never
    # (the loss always falls).
    assert pruner.method_state.warmup_end == (3 if tau == 0.5 else -1)


@pytest.mark.parametrize("cycle", [1, 2, 3, 4])
def test_phases_and_removal_fractions(cycle: int):
    expected = {1: [1.0], 2: [0.5, 1.0], 3: [0.25, 0.75, 1.0],
                4: [0.5 * (1 - math.sqrt(0.5)), 0.5, 0.5 * (1 + math.sqrt(0.5)), 1.0]}[cycle]
    assert [removal_fraction(j, cycle) for j in range(1, cycle + 1)] == pytest.approx(expected)
    phases = [scan_phase(e, 3, cycle) for e in range(3 + 2 * (cycle + 1))]
    assert phases[:3] == [("warmup", 0)] * 3
    assert phases[3:] == 2 * ([("probe", 0)] + [("prune", j) for j in range(1, cycle + 1)])
    assert [removal_count(j, 3, 4) for j in (1, 2, 3)] == [1, 3, 4]  # ⌊0.25·4⌋, ⌊0.75·4⌋, 4


def test_pruning_epochs_leave_out_a_random_rho_j_share_of_the_candidates():
    pruner = scan(epochs=11)
    left_out = []
    for epoch in range(11):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
        if epoch == 3:  # the probe: its candidates serve epochs 4-6
            candidates = pruner.method_state.candidates.clone()
        if epoch in (4, 5, 6):
            kept = mask_of(pruner.kept_indices().tolist())
            assert bool((kept | candidates).all())  # only candidates are left out
            gone = candidates & ~kept
            assert int(gone.sum()) == math.floor([0.25, 0.75, 1.0][epoch - 4] * int(candidates.sum()))
            left_out.append(gone)
    assert 0 < int(left_out[0].sum()) < int(left_out[1].sum()) < int(candidates.sum())
    assert bool((left_out[0] & ~left_out[1]).any())  # independent draws, not nested prefixes of one order
    again = scan(epochs=11)  # seeded: the same sets
    for epoch in range(5):
        run_scan_epoch(again, epoch, SCALES[epoch])
    assert torch.equal(again.kept_indices(4), pruner.kept_indices(4))
    other = scan(epochs=11, seed=6)
    for epoch in range(5):
        run_scan_epoch(other, epoch, SCALES[epoch])
    assert not torch.equal(other.kept_indices(4), pruner.kept_indices(4))


# --------------------------------------------------------------------------- marks
@pytest.mark.parametrize(("rho_max", "rho_min", "batch"), [(0.35, 0.35, 32), (0.5, 0.1, 25), (0.0, 0.3, 40),
                                                          (0.03, 0.35, 20)])
def test_candidates_equal_a_direct_set_computation(rho_max: float, rho_min: float, batch: int):
    # ρ_max = 0.03 with B = 20: ⌊0.6⌋ = 0 marks nothing (the official code would mark the batch).
    pruner = scan(epochs=8, scan_rho_max=rho_max, scan_rho_min=rho_min)
    for epoch in range(3):
        run_scan_epoch(pruner, epoch, SCALES[epoch], batch=batch)
    batches = run_scan_epoch(pruner, 3, SCALES[3], batch=batch)  # the probe
    expected, top_ups = reference_candidates([[b] for b in batches], num_samples=N, rho_max=rho_max,
                                             rho_min=rho_min, seed=5, epoch=3)
    assert torch.equal(pruner.method_state.candidates, mask_of(expected))
    assert 0 < top_ups < 2 * len(batches)  # some steps topped up, some not: both paths checked
    assert pruner.epoch_diagnostics()["scan_candidates"] == len(expected)


def test_top_up_fills_to_the_first_directions_count_from_the_union():
    # One batch of 20: ill marks ⌊0.35·20⌋ = 7 per direction. Direction 1 marks 13-19; direction 2
    # reverses the losses of 8-19 and marks 8-14. They agree on 13 and 14 only (2 < 0.9·7), so 5
    # members of the rest of the union (8-12, 15-19) top the set up to 7.
    pruner = scan(n=20, epochs=6, scan_rho_min=0.0)
    for epoch in range(3):
        pruner.set_epoch(epoch)
        pruner.update(torch.arange(20), loss=torch.full((20,), SCALES[epoch]))
    pruner.set_epoch(3)
    l12 = torch.arange(20, dtype=torch.float32)  # ill in direction 1: 13-19
    l21 = l12.clone()
    l21[8:20] = l12[8:20].flip(0)
    pruner.update(torch.arange(20), loss=0.5 * (l12 + l21), loss_12=l12, loss_21=l21)
    pruner.flush()
    chosen = set(pruner.method_state.candidates.nonzero().flatten().tolist())
    assert len(chosen) == 7 and {13, 14} <= chosen and chosen <= set(range(8, 20))
    expected, top_ups = reference_candidates([[(list(range(20)), l12.tolist(), l21.tolist())]], num_samples=20,
                                             rho_max=0.35, rho_min=0.0, seed=5, epoch=3)
    assert chosen == expected and top_ups == 1


def test_one_direction_objective_marks_the_in_batch_extremes_of_its_loss():
    # Supervised (or any model without loss_12 / loss_21): the loss stands for both directions.
    pruner = scan(epochs=6, objective="supervised")
    for epoch in range(3):
        run_scan_epoch(pruner, epoch, SCALES[epoch], directions=False)
    batches = run_scan_epoch(pruner, 3, SCALES[3], directions=False)
    expected = set()
    for idx, loss, _ in batches:
        order = sorted(range(len(idx)), key=lambda i, loss=loss: -loss[i])
        k = math.floor(0.35 * len(idx))
        expected |= {idx[i] for i in order[:k] + order[len(idx) - k:]}
    assert torch.equal(pruner.method_state.candidates, mask_of(expected))
    assert reference_candidates([[b] for b in batches], num_samples=N, rho_max=0.35, rho_min=0.35, seed=5,
                                epoch=3)[1] == 0  # the directions agree: never topped up


# --------------------------------------------------------------------------- achieved rate
@pytest.mark.parametrize(("rho", "cycle"), [(0.35, 3), (0.5, 3), (0.2, 2)])
def test_achieved_rate_follows_the_formula(rho: float, cycle: int):
    epochs = 3 + 3 * (cycle + 1)
    pruner = scan(epochs=epochs, scan_rho_max=rho, scan_rho_min=rho, scan_cycle=cycle)
    removed = 0
    for epoch in range(epochs):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
        phase, j = scan_phase(epoch, 3, cycle)
        if phase == "probe":
            count = int(pruner.method_state.candidates.sum())
        elif phase == "prune":
            removed += math.floor(removal_fraction(j, cycle) * count + 1e-9)
    stats = pruner.stats()
    assert stats["sample_visits"] == N * epochs - removed
    assert stats["achieved_rate"] == pytest.approx(removed / (N * epochs))
    # After the warm-up: Σ_j ρ_j / (T + 1) of the candidate share, ≤ 0.5 for ρ ≤ 0.5.
    after = removed / (N * (epochs - 3))
    share = count / N
    assert after == pytest.approx(share * sum(removal_fraction(j, cycle) for j in range(1, cycle + 1)) / (cycle + 1),
                                  abs=0.01)
    assert after <= 0.5
    if rho == 0.35 and cycle == 3:
        assert after == pytest.approx(0.35, abs=0.03)  # the spec's ≈ 0.35 with the defaults


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
