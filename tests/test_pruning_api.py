"""Arguments and call order of ssl_emp.pruning: one parameter table for the pruner and the config,
and the bad arguments and out-of-order calls the pruner rejects with one line."""

from __future__ import annotations

import pytest
import torch

from ssl_emp.config import config_from_dict, finalize
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import METHOD_PARAMS, METHODS, PARAM_METHODS, PARAMS, validate_params
from tests.pruning_helpers import assert_one_line_config_error, make


# --------------------------------------------------------------------------- one parameter table
def test_validate_params_is_the_pruner_validation() -> None:
    assert set(METHOD_PARAMS) == set(METHODS)
    assert METHOD_PARAMS["emp-easy"] == METHOD_PARAMS["emp"] and "alpha" not in METHOD_PARAMS["infobatch"]
    assert set(PARAM_METHODS) == set(PARAMS) and all(set(m) <= set(METHODS) for m in PARAM_METHODS.values())
    resolved = validate_params("emp", 0.7, {"beta": 2})
    assert resolved == {**{n: PARAMS[n].default for n in METHOD_PARAMS["emp"]}, "beta": 2.0}
    assert make("emp", 0.7, beta=2).params == resolved
    for method, rate, params, needle in [
        ("emp", 0.7, {"beta": -1}, "beta must be >= 0"),
        ("ucb", 0.7, {"beta": 1}, "unknown parameter 'beta'"),
        ("emp", 0.99, {}, "pruning_rate must be in"),
        ("full", 0.5, {}, "must be 0"),
        ("nope", 0.5, {}, "unknown pruning method 'nope'"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            validate_params(method, rate, params)
        with pytest.raises(ConfigError, match=needle):
            make(method, rate, **params)


@pytest.mark.parametrize(("pruning", "needle"), [
    ({"method": "emp", "rate": 0.5, "params": {"beta": -1}}, "pruning.params.beta must be >= 0, got -1"),
    ({"method": "emp", "rate": 0.5, "params": {"ucb_c": 1}}, "pruning.params: unknown parameter 'ucb_c'"),
    ({"method": "emp", "rate": 1.2}, "pruning.rate must be in [0, 0.95], got 1.2"),
    ({"method": "magic"}, "unknown pruning method 'magic'"),
    ({"method": "full", "rate": 0.3}, "pruning.rate must be 0"),
])
def test_config_validates_pruning_params_at_load_time(pruning: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        finalize(config_from_dict({"pruning": pruning}))
    assert needle in str(info.value) and "\n" not in str(info.value)
    finalize(config_from_dict({"pruning": {"method": "emp-easy", "rate": 0.9, "params": {"epsilon": 0.1}}}))


# --------------------------------------------------------------------------- bad arguments and calls
def _pruner_then(fn):
    p = make("emp", 0.5, n=100, epochs=3)
    return lambda: fn(p)


_OTHER_STATE = make("emp", 0.5, n=100, epochs=3, seed=9).state_dict()

BAD_ARGUMENTS = [
    pytest.param(lambda: make(n=0), "0", id="num_samples-zero"),
    pytest.param(lambda: make(n=2.5), "2.5", id="num_samples-float"),
    pytest.param(lambda: make(method="bogus"), "bogus", id="unknown-method"),
    pytest.param(lambda: make(rate=0.96), "0.96", id="rate-too-high"),
    pytest.param(lambda: make(rate=-0.1), "-0.1", id="rate-negative"),
    pytest.param(lambda: make(rate=float("nan")), "nan", id="rate-nan"),
    pytest.param(lambda: make("full", 0.5), "0.5", id="full-with-rate"),
    pytest.param(lambda: make(epochs=0), "0", id="epochs-zero"),
    pytest.param(lambda: make(seed="x"), "'x'", id="seed-str"),
    pytest.param(lambda: make(beta=-1.0), "-1.0", id="beta-negative"),
    pytest.param(lambda: make(rho=1.5), "1.5", id="rho-above-1"),
    pytest.param(lambda: make(rho=0.0), "0.0", id="rho-zero"),
    pytest.param(lambda: make(alpha=0.0), "0.0", id="alpha-zero"),
    pytest.param(lambda: make(gamma=2.0), "2.0", id="gamma-above-1"),
    pytest.param(lambda: make(epsilon=1.2), "1.2", id="epsilon-above-1"),
    pytest.param(lambda: make("ucb", ucb_c=-0.5), "-0.5", id="ucb_c-negative"),
    pytest.param(lambda: make("infobatch", infobatch_prune_prob=1.0), "1.0", id="infobatch-prob-1"),
    pytest.param(lambda: make("infobatch", infobatch_delta=1.5), "1.5", id="infobatch-delta-above-1"),
    pytest.param(lambda: make("emp", ucb_c=1.0), "ucb_c", id="emp-with-ucb_c"),
    pytest.param(lambda: make("infobatch", alpha=0.5), "alpha", id="infobatch-with-alpha"),
    pytest.param(lambda: make("random-dynamic", beta=1.0), "beta", id="random-with-beta"),
    pytest.param(lambda: make(beta="high"), "'high'", id="beta-str"),
    pytest.param(lambda: make(objective="bogus"), "bogus", id="unknown-objective"),
]

BAD_CALLS = [
    pytest.param(_pruner_then(lambda p: p.update(torch.tensor([0]), torch.tensor([1.0]), torch.tensor([0.0]))),
                 "set_epoch", id="update-before-set_epoch"),
    pytest.param(lambda: make("emp", objective="supervised").update(torch.tensor([0]), torch.tensor([1.0])),
                 "set_epoch", id="supervised-update-before-set_epoch"),
    pytest.param(_pruner_then(lambda p: p.set_epoch(3)), "3", id="epoch-past-the-end"),
    pytest.param(_pruner_then(lambda p: p.set_epoch(-1)), "-1", id="epoch-negative"),
    pytest.param(_pruner_then(lambda p: (p.set_epoch(2), p.set_epoch(1))), "1", id="epoch-backwards"),
    pytest.param(_pruner_then(lambda p: (p.set_epoch(0), p.kept_indices(7))), "7", id="kept-of-unselected-epoch"),
    pytest.param(_pruner_then(lambda p: list(p.sampler())), "set_epoch", id="sampler-before-set_epoch"),
    pytest.param(_pruner_then(lambda p: p.load_state_dict(_OTHER_STATE)), "seed", id="state-of-another-seed"),
    pytest.param(_pruner_then(lambda p: p.sampler(rank=2, world_size=2)), "rank=2", id="sampler-rank-out-of-range"),
    pytest.param(_pruner_then(lambda p: p.export_table("/nonexistent-dir-xyz/t.csv")), "nonexistent-dir-xyz",
                 id="export-to-missing-dir"),
    pytest.param(_pruner_then(lambda p: p.export_table("t.csv", labels=[1, 2, 3])), "3", id="export-wrong-label-count"),
]


@pytest.mark.parametrize(("call", "needle"), [*BAD_ARGUMENTS, *BAD_CALLS])
def test_bad_argument_or_call_raises_config_error(call, needle: str) -> None:
    assert_one_line_config_error(call, needle)
