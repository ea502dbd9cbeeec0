"""A new pruning method is one record and one registration (ssl_emp.pruning.registry): methods defined
in this file, a stateful one and a static one, run through `pretrain` and the pruner with nothing
else edited; every list of method names is derived from the records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from ssl_emp.benchmark import grid
from ssl_emp.cli import main
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import (
    FULL_DATA,
    METHOD_PARAMS,
    METHODS,
    OWN_RATE,
    DynamicPruner,
    MethodSpec,
    Param,
    method_spec,
    register,
    registered,
)
from ssl_emp.pruning.methods import eps_greedy_pick
from ssl_emp.pruning.spec import EpochRows, Selection, SelectionContext
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import Interrupt, interrupt_after, resume
from tests.pruning_helpers import assert_one_line_config_error, run_epoch


# --------------------------------------------------------------------------- a stateful method
class AboveMeanState:
    """How often each sample's loss was above its batch's mean loss, over every flushed epoch."""

    def __init__(self, num_samples: int, params: Mapping[str, float], seed: int) -> None:
        self.count = torch.zeros(num_samples, dtype=torch.int64)

    def begin_epoch(self, table: Any, finished: int, upcoming: int) -> None:
        pass

    def observes(self, epoch: int) -> bool:
        return True

    def observe(self, rows: EpochRows) -> None:
        loss, batch = rows.signals["loss"], rows.batch
        size = torch.zeros(int(batch.max()) + 1, dtype=torch.float64).index_add_(0, batch, torch.ones_like(loss))
        mean = torch.zeros_like(size).index_add_(0, batch, loss) / size
        self.count.index_add_(0, rows.idx[loss > mean[batch]], torch.ones_like(rows.idx[loss > mean[batch]]))

    def diagnostics(self) -> dict[str, float | int]:
        return {"above_mean_marks": int(self.count.sum())}

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count.clone()}

    def load_state_dict(self, state: object) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("count"), torch.Tensor):
            raise ConfigError("state_dict has no above-mean state")
        self.count = state["count"].clone()


def select_above_mean(ctx: SelectionContext) -> Selection:
    """The K samples most often above their batch's mean, unseen first, ε of them uniform."""
    score = ctx.state.count.to(torch.float64)
    seen = ctx.table.seen()
    score = torch.where(seen, score, torch.full_like(score, float("inf")))
    return Selection(eps_greedy_pick(score, seen, ctx.budget, ctx.params["explore"], ctx.generator))


ABOVE_MEAN = MethodSpec("above-mean", select_above_mean, "toy: most often above the batch mean",
                        params={"explore": Param(0.1, lambda x: 0 <= x <= 1, "in [0, 1]", "uniform share of K")},
                        state=AboveMeanState)


# --------------------------------------------------------------------------- a static method
RULE_CALLS: list[int] = []


def select_top_input(ctx: SelectionContext) -> Selection:
    """The K samples with the highest precomputed score (e.g. a curation method's per-sample array)."""
    RULE_CALLS.append(ctx.epoch)
    return Selection(torch.sort(torch.topk(ctx.inputs["score"], ctx.budget).indices).values)


TOP_INPUT = MethodSpec("top-input", select_top_input, "toy: highest precomputed score", inputs=("score",), static=True)


# --------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_a_stateful_method_defined_here_trains_through_pretrain_and_resumes_exactly(tmp_path, tiny_args):
    # 256 images at r = 0.5: 128 an epoch, two steps of 64. Interrupted after epoch 1, resumed.
    common = [*tiny_args, "--set", "data.train_subset=256", "--set", "eval.eval_every=0", "--method", "above-mean",
              "--pruning-rate", "0.5", "--set", "pruning.params.explore=0.25", "--epochs", "3"]
    with registered(ABOVE_MEAN):
        assert main(["pretrain", "--output-dir", str(tmp_path / "straight"), *common]) == 0
        with interrupt_after(2 * 2), pytest.raises(Interrupt):
            main(["pretrain", "--output-dir", str(tmp_path / "split"), *common])
        assert resume(tmp_path / "split") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "final.pt")["pruner"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")["pruner"]
    assert a["version"] == 4 and a["config"]["params"]["explore"] == 0.25
    assert 0 < int(a["method_state"]["count"].sum()) and torch.equal(a["method_state"]["count"], b["method_state"]["count"])
    assert torch.equal(a["kept"], b["kept"]) and a["sample_visits"] == b["sample_visits"] == 3 * 128
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["achieved_rate"] == pytest.approx(0.5)
    # Registered for the block only: afterwards the name is unknown again, in one line.
    assert_one_line_config_error(lambda: method_spec("above-mean"), "unknown pruning method 'above-mean'")


def test_a_static_method_selects_once_from_its_per_sample_input():
    score = torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    top = torch.sort(torch.topk(score, 30).indices).values
    with registered(TOP_INPUT):
        RULE_CALLS.clear()
        pruner = DynamicPruner(100, method="top-input", pruning_rate=0.7, epochs=4, inputs={"score": score.numpy()})
        assert RULE_CALLS == [0] and pruner.epoch_size() == 30  # selected when built, before training
        for epoch in range(2):
            run_epoch(pruner, epoch)
            assert torch.equal(pruner.kept_indices(), top)
        resumed = DynamicPruner(100, method="top-input", pruning_rate=0.7, epochs=4, inputs={"score": score})
        resumed.load_state_dict(pruner.state_dict())
        run_epoch(resumed, 2)
        assert torch.equal(resumed.kept_indices(), top) and RULE_CALLS == [0, 0]
        assert_one_line_config_error(lambda: DynamicPruner(100, method="top-input", epochs=4),
                                     "needs the per-sample input 'score'")
        assert_one_line_config_error(
            lambda: DynamicPruner(100, method="top-input", epochs=4, inputs={"score": score[:50]}), "(50,)")
        assert_one_line_config_error(lambda: DynamicPruner(100, method="emp", epochs=4, inputs={"score": score}),
                                     "reads no input 'score'")


def test_a_name_or_a_parameter_registered_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(method_spec("emp"))
    clash = MethodSpec("other", select_above_mean, "reuses a name", params={"epsilon": Param(0.5, bool, "any", "")})
    with pytest.raises(ValueError, match="parameter 'epsilon' differently"):
        register(clash)
    with pytest.raises(ValueError, match="full-data reference"):
        register(MethodSpec("all", select_top_input, "a second full", full_data=True))
    assert_one_line_config_error(lambda: method_spec("other"), "unknown pruning method 'other'")


def test_the_lists_of_names_are_the_records():
    specs = [method_spec(m) for m in METHODS]
    assert OWN_RATE == tuple(s.name for s in specs if s.own_rate) == ("infobatch", "scan", "semdedup-eps")
    assert grid.RATELESS == ("full", "infobatch", "scan", "semdedup-eps") and FULL_DATA == "full"
    assert [m for m in METHODS if method_spec(m).needs] == ["emp", "emp-easy"]
    assert method_spec("scan").reads == ("loss_12", "loss_21") and method_spec("scan").state is not None
    assert [m for m in METHODS if method_spec(m).static] == ["full", "random-static", "semdedup", "semdedup-eps",
                                                              "prototypes", "prototypes-easy"]
    assert [m for m in METHODS if method_spec(m).inputs == ("embeddings",)] == [
        "semdedup", "semdedup-eps", "semdedup+random", "prototypes", "prototypes-easy"]
    assert METHOD_PARAMS["ucb"] == ("alpha", "gamma", "rho", "ucb_c")
