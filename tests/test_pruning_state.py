"""Checkpointable state of ssl_emp.pruning: state_dict round trips, mid-epoch resume, older versions."""

from __future__ import annotations

import pytest
import torch

from ssl_emp.errors import ConfigError
from ssl_emp.pruning import METHODS
from tests.pruning_helpers import fake_stats, make, run_epoch


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


# --------------------------------------------------------------------------- state versions
def test_version_1_state_loads_with_fresh_new_columns() -> None:
    reference = make("emp", 0.6, n=90, epochs=6, seed=2)
    for epoch in range(3):
        run_epoch(reference, epoch)
    state = reference.state_dict()
    assert state["version"] == 2 and state["config"]["objective"] == "contrastive"
    v1 = {**state, "version": 1, "config": {k: v for k, v in state["config"].items() if k != "objective"}}
    v1["table"] = {k: state["table"][k] for k in ("loss", "align", "last_epoch", "count", "loss_mean", "loss_m2")}
    resumed = make("emp", 0.6, n=90, epochs=6, seed=2)
    run_epoch(resumed, 0)  # stale values must not survive the load
    resumed.load_state_dict(v1)
    assert resumed.table.entropy.isnan().all() and resumed.table.loss_last.isnan().all()
    for epoch in range(3, 6):  # the contrastive score never reads the new columns
        assert torch.equal(run_epoch(resumed, epoch), run_epoch(reference, epoch))
    with pytest.raises(ConfigError, match="objective"):
        make("emp", 0.6, n=90, epochs=6, seed=2, objective="supervised").load_state_dict(v1)
