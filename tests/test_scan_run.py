"""SCAN (Guo & Kankanhalli, arXiv 2411.09126; docs/method.md "The rules") across runs and processes:
exact resume (pruner state mid-cycle and mid-probe, the CLI interrupted and resumed), no host sync in
update(), and two gloo ranks. The rule itself against direct computations: tests/test_scan_rule.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_emp.cli import main
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import Interrupt, interrupt_after, load_script, rank_records, resume, torchrun
from tests.pruning_helpers import assert_one_line_config_error, make
from tests.scan_reference import SCALES, direction_stats, mask_of, reference_candidates, run_scan_epoch, scan
from tests.sync_calls import sync_calls


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stop", [4, 5, 8])  # after the probe, mid-cycle, and after the second probe
def test_state_dict_round_trip_mid_cycle_resumes_exactly(stop: int, tmp_path):
    reference = scan(epochs=11)
    for epoch in range(stop):
        run_scan_epoch(reference, epoch, SCALES[epoch])
    path = tmp_path / "pruner.pt"
    torch.save(reference.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["version"] == 4 and set(state["method_state"]) == {"prev_loss", "warmup_end", "candidates", "candidates_epoch"}
    resumed = scan(epochs=11)
    resumed.load_state_dict(state)
    for epoch in range(stop, 11):
        run_scan_epoch(resumed, epoch, SCALES[epoch])
        run_scan_epoch(reference, epoch, SCALES[epoch])
        assert torch.equal(resumed.kept_indices(), reference.kept_indices())
        assert torch.equal(resumed.method_state.candidates, reference.method_state.candidates)
    assert resumed.stats() == reference.stats()


def test_resume_mid_probe_epoch_marks_the_same_candidates():
    # A single-process state_dict() mid-epoch flushes part of the probe; the marks of the rest are
    # added after the load, with the same top-ups as one flush of the whole epoch.
    straight, split = scan(epochs=6), scan(epochs=6)
    for epoch in range(3):
        for p in (straight, split):
            run_scan_epoch(p, epoch, SCALES[epoch])
    for p in (straight, split):
        p.set_epoch(3)
    chunks = straight.sampler().indices().split(32)
    for i, chunk in enumerate(chunks):
        l12, l21 = direction_stats(chunk, 3)
        straight.update(chunk, loss=0.5 * (l12 + l21), loss_12=l12, loss_21=l21)
        if i == 4:
            resumed = scan(epochs=6)
            resumed.load_state_dict(split.state_dict())
            split = resumed
        split.update(chunk, loss=0.5 * (l12 + l21), loss_12=l12, loss_21=l21)
    straight.flush()
    split.flush()
    assert int(straight.method_state.candidates.sum()) > 0
    assert torch.equal(split.method_state.candidates, straight.method_state.candidates)
    for p in (straight, split):
        run_scan_epoch(p, 4)
    assert torch.equal(split.kept_indices(), straight.kept_indices())


def test_other_methods_keep_state_version_2_and_scan_needs_its_state():
    assert make("emp", 0.5).state_dict()["version"] == 2 and "method_state" not in make("infobatch", 0.0).state_dict()
    pruner = scan(epochs=6)
    for epoch in range(4):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
    state = pruner.state_dict()
    broken = {k: v for k, v in state.items() if k != "method_state"}
    fresh = scan(epochs=6)
    assert_one_line_config_error(lambda: fresh.load_state_dict(broken), "SCAN state")
    assert fresh.epoch == -1  # a refused load leaves the pruner as it was
    short = {**state, "method_state": {**state["method_state"], "candidates": torch.zeros(5, dtype=torch.bool)}}
    assert_one_line_config_error(lambda: fresh.load_state_dict(short), "(300,)")


@pytest.mark.slow
def test_cli_scan_run_interrupted_and_resumed_equals_the_uninterrupted_run(tmp_path, tiny_args):
    # τ = 0.99: the warm-up ends after epoch 1 (any loss change is < 99 %), T = 1: epoch 2 probes,
    # epoch 3 leaves out all candidates. Interrupted after the probe's checkpoint, resumed.
    common = [*tiny_args, "--set", "log_every=1", "--set", "data.train_subset=256", "--set", "eval.eval_every=0",
              "--method", "scan", "--set", "pruning.params.scan_tau=0.99", "--set", "pruning.params.scan_cycle=1",
              "--epochs", "4"]
    assert main(["pretrain", "--output-dir", str(tmp_path / "straight"), *common]) == 0
    with interrupt_after(3 * 4), pytest.raises(Interrupt):  # three full epochs of 256 / 64 steps
        main(["pretrain", "--output-dir", str(tmp_path / "split"), *common])
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["pruner"]["method_state"]["warmup_end"] == 2
    assert bool(ckpt["pruner"]["method_state"]["candidates"].any())
    assert resume(tmp_path / "split") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["pruner"]["kept"], b["pruner"]["kept"]) and a["pruner"]["kept"].numel() < 256
    assert torch.equal(a["pruner"]["method_state"]["candidates"], b["pruner"]["method_state"]["candidates"])
    assert a["pruner"]["sample_visits"] == b["pruner"]["sample_visits"] < 4 * 256
    assert (tmp_path / "split" / "steps.csv").read_text() == (tmp_path / "straight" / "steps.csv").read_text()


# --------------------------------------------------------------------------- no host sync
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_update_in_a_probe_epoch_makes_no_host_synchronising_call(device: str):
    pruner = scan(epochs=6)
    for epoch in range(3):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
    pruner.set_epoch(3)
    batches = []
    for chunk in pruner.sampler().indices().split(32):
        l12, l21 = (t.to(device) for t in direction_stats(chunk, 3))
        batches.append((chunk, 0.5 * (l12 + l21), l12, l21))
    with sync_calls(devices=None if device == "cpu" else {"meta"}) as calls:
        for idx, loss, l12, l21 in batches:
            pruner.update(idx, loss=loss, align=torch.zeros_like(loss), loss_12=l12, loss_21=l21)
    assert calls == [], calls[:3]


# --------------------------------------------------------------------------- two ranks
@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_gloo_ranks_mark_the_same_candidates(tmp_path: Path):
    script = load_script(Path(__file__).resolve().parent / "ddp_scan_script.py")
    torchrun(Path(script.__file__), tmp_path, timeout=180)
    ranks = rank_records(tmp_path)
    cfg = script.CONFIG
    assert ranks[0]["state"]["method_state"]["warmup_end"] == ranks[1]["state"]["method_state"]["warmup_end"] == 3
    for epoch in range(cfg["epochs"]):
        assert torch.equal(ranks[0]["kept"][epoch], ranks[1]["kept"][epoch])
        assert torch.equal(ranks[0]["candidates"][epoch], ranks[1]["candidates"][epoch])
    for probe in (3, 6):
        served = [ranks[r]["served"][probe] for r in range(2)]
        assert len(served[0]) == 13 and len(served[1]) == 11  # uneven steps: the last hold rank 0 only
        steps = [[(idx.tolist(), l12.tolist(), l21.tolist()) for r in range(2) if s < len(served[r])
                  for idx, l12, l21 in [served[r][s]]] for s in range(len(served[0]))]
        expected, top_ups = reference_candidates(steps, num_samples=cfg["num_samples"], rho_max=cfg["scan_rho_max"],
                                                 rho_min=cfg["scan_rho_min"], seed=cfg["seed"], epoch=probe)
        assert top_ups > 0
        assert torch.equal(ranks[0]["candidates"][probe], mask_of(expected, cfg["num_samples"]))
    # Pruning epochs leave candidates out on both ranks alike; the accounting agrees.
    assert ranks[0]["kept"][5].numel() < cfg["num_samples"]
    same = [{k: v for k, v in ranks[r]["stats"].items() if k != "optimizer_steps"} for r in range(2)]
    assert same[0] == same[1]  # (each rank counts its own steps: their batch sizes differ)
    assert ranks[0]["stats"]["sample_visits"] == sum(k.numel() for k in ranks[0]["kept"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_version_3_state_with_scan_under_its_name_still_loads():
    """Checkpoints written before version 4 kept SCAN's state under "scan": they resume the same."""
    pruner = scan(epochs=6)
    for epoch in range(4):
        run_scan_epoch(pruner, epoch, SCALES[epoch])
    state = pruner.state_dict()
    legacy = {**{k: v for k, v in state.items() if k != "method_state"}, "version": 3, "scan": state["method_state"]}
    a, b = scan(epochs=6), scan(epochs=6)
    a.load_state_dict(state)
    b.load_state_dict(legacy)
    for p in (a, b):
        run_scan_epoch(p, 4, SCALES[4])
    assert torch.equal(a.kept_indices(), b.kept_indices())
    assert torch.equal(a.method_state.candidates, b.method_state.candidates)
