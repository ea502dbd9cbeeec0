"""The pruner's contracts: declared signals (model -> ``DynamicPruner.update`` -> buffer -> table)
and the sampler's view of the pruner (``KeptSetSource``)."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import Tensor, nn

from ssl_emp.models import MODELS
from ssl_emp.pruning import SIGNAL_SPECS, DynamicPruner, KeptSetSource, PrunedSampler, Signal
from ssl_emp.pruning.state import tracked_signals
from tests.pruning_helpers import assert_one_line_config_error, fake_stats, make, run_epoch

# The columns of today's checkpoints: a state written before the signals were declared loads as is.
TABLE_COLUMNS = {"loss", "align", "entropy", "last_epoch", "count", "loss_mean", "loss_m2", "loss_last", "loss_prev",
                 "align_last", "align_prev", "entropy_last", "entropy_prev"}


class ToyModel(nn.Module):
    """A new method's model: its own per-sample signal ``toy`` besides the contrastive ``align``."""

    num_views = 1
    needs_labels = False
    objective = "contrastive"
    signals = ("align", "toy")

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 2)

    def on_train_step(self, progress: float) -> None:
        """Nothing to schedule."""

    def forward(self, view: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        z = self.backbone(view)
        loss = z.pow(2).sum(1)
        return {"loss": loss, "align": torch.tanh(z[:, 0]).detach(), "toy": z[:, 1].abs().detach()}


@pytest.fixture
def toy_signal(monkeypatch):
    """The pruning state's side of the new signal: one entry in SIGNAL_SPECS."""
    monkeypatch.setitem(SIGNAL_SPECS, "toy", Signal(lambda v: v.isfinite() & (v >= 0), "finite and >= 0", since=4))


def test_a_new_signal_goes_from_the_model_through_update_into_buffer_and_table(toy_signal, tmp_path):
    model = ToyModel()
    pruner = DynamicPruner(num_samples=6, method="emp", pruning_rate=0.0, epochs=2, signals=model.signals)
    assert pruner.signals == ("align", "toy") and "toy" in tracked_signals()
    pruner.set_epoch(0)
    idx = torch.arange(6)
    out = model(torch.randn(6, 3))
    pruner.update(idx, out["loss"].detach(), **{name: out[name] for name in model.signals})
    step = pruner._pending[-1]
    assert set(step.signals) == {"loss", "align", "toy"} and torch.equal(step.signals["toy"], out["toy"])
    pruner.flush()
    table = pruner.table
    torch.testing.assert_close(table.toy, out["toy"].double())  # the first observation starts the EMA
    torch.testing.assert_close(table.toy_last, out["toy"])
    assert {"toy", "toy_last", "toy_prev"} <= set(table.state_dict())
    diagnostics = pruner.epoch_diagnostics()
    assert "kept_toy_mean" in diagnostics and "toy_repeatability" in diagnostics
    pruner.export_table(tmp_path / "table.csv")
    with (tmp_path / "table.csv").open() as f:
        assert next(csv.reader(f)) == ["index", "count", "loss", "align", "entropy", "toy", "memory", "last_epoch"]
    # Checked like every signal, by its spec, when the epoch is folded in.
    pruner.set_epoch(1)
    pruner.update(idx, out["loss"].detach(), align=out["align"], toy=-out["toy"] - 1)
    assert_one_line_config_error(pruner.flush, "toy must be finite and >= 0, got")


def test_a_state_from_before_a_new_signal_loads_with_its_columns_fresh(toy_signal, monkeypatch):
    with monkeypatch.context() as mp:  # written by code that did not know the toy signal
        mp.delitem(SIGNAL_SPECS, "toy")
        old = make("emp", 0.5, n=40, epochs=4, seed=1)
        run_epoch(old, 0)
        state = old.state_dict()
    assert set(state["table"]) == TABLE_COLUMNS and state["version"] == 2
    new = make("emp", 0.5, n=40, epochs=4, seed=1, signals=("align", "toy"))
    new.load_state_dict(state)  # version 2 < the toy signal's 4: its columns start fresh
    assert new.table.toy.isnan().all() and new.table.toy_prev.isnan().all()
    torch.testing.assert_close(new.table.loss, old.table.loss, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(new.kept_indices(), old.kept_indices())


def test_an_undeclared_or_missing_signal_is_one_line():
    pruner = make("emp", 0.0, n=8, epochs=1, signals=("align",))
    pruner.set_epoch(0)
    idx, (loss, align) = torch.arange(8), fake_stats(torch.arange(8), 0)
    assert_one_line_config_error(lambda: pruner.update(idx, loss, align, toy=loss),
                                 "update() got the signal 'toy', which was not declared (declared: align)")
    assert_one_line_config_error(lambda: pruner.update(idx, loss, align, entropy=loss.abs()),
                                 "got the signal 'entropy', which was not declared")
    assert_one_line_config_error(lambda: pruner.update(idx, loss), "update() is missing the declared signal 'align'")
    assert pruner._pending == []  # nothing half-buffered
    undeclared = make("emp", 0.0, n=8, epochs=1)  # signals=None: any known signal, each optional
    undeclared.set_epoch(0)
    assert_one_line_config_error(lambda: undeclared.update(idx, loss, align, toy=loss),
                                 "unknown signal 'toy' (known: align, entropy, loss_12, loss_21)")


@pytest.mark.parametrize("kwargs, message", [
    ({"signals": ("align", "toy")}, "unknown signal 'toy'"),
    ({"signals": ("loss", "align")}, "remove 'loss'"),
    ({"signals": ("align", "align")}, "signal 'align' is declared twice"),
    ({"signals": "align"}, "signals must be a sequence of signal names"),
    ({"signals": (3,)}, "signals must be signal names, got 3"),
    ({"signals": ("loss_12", "loss_21")}, "method 'emp' with objective 'contrastive' needs the per-sample align signal"),
    ({"signals": (), "objective": "supervised"}, "needs the per-sample entropy signal; the declared signals are: none"),
    ({"signals": ("align", "loss_12"), "method": "scan"}, "loss_12 and loss_21 go together"),
])
def test_bad_declarations_are_refused_when_the_pruner_is_built(kwargs, message):
    kwargs = {"method": "emp", **kwargs}
    assert_one_line_config_error(lambda: DynamicPruner(num_samples=10, epochs=2, **kwargs), message)


@pytest.mark.parametrize("method", ["emp", "scan", "infobatch", "ucb"])
def test_declared_signals_give_the_same_run_as_undeclared_and_resume_exactly(method):
    rate = 0.0 if method in ("scan", "infobatch") else 0.5
    declared = make(method, rate, n=120, epochs=6, seed=3, signals=MODELS["simclr"].signals)
    plain = make(method, rate, n=120, epochs=6, seed=3)

    def stats(idx, epoch):
        loss, align = fake_stats(idx, epoch)
        return {"loss": loss, "align": align, "loss_12": loss * 0.9, "loss_21": loss * 1.1}

    def epoch_of(pruner, epoch):
        pruner.set_epoch(epoch)
        for chunk in pruner.sampler().indices().split(32):
            pruner.update(chunk, **stats(chunk, epoch))
        return pruner.kept_indices()

    for epoch in range(3):
        assert torch.equal(epoch_of(declared, epoch), epoch_of(plain, epoch))
    state = declared.state_dict()
    assert set(state["table"]) == TABLE_COLUMNS and "signals" not in state["config"]  # the format is unchanged
    resumed = make(method, rate, n=120, epochs=6, seed=3, signals=MODELS["simclr"].signals)
    resumed.load_state_dict(state)
    plain.load_state_dict(state)  # and loads into an undeclared pruner alike
    for epoch in range(3, 6):
        kept = epoch_of(declared, epoch)
        assert torch.equal(epoch_of(resumed, epoch), kept) and torch.equal(epoch_of(plain, epoch), kept)
    for name, column in declared.table.state_dict().items():
        torch.testing.assert_close(resumed.table.columns[name], column, rtol=0, atol=0, equal_nan=True)


@pytest.mark.slow
def test_the_trainer_builds_its_pruner_from_the_model_declaration(tmp_path, tiny_args, monkeypatch):
    import ssl_emp.train
    from ssl_emp.cli import main

    built = []
    real = ssl_emp.train.build

    def build(cfg, run):
        t = real(cfg, run)
        built.append((t.state.pruner.signals, t.state.model.signals))
        return t

    monkeypatch.setattr(ssl_emp.train, "build", build)
    assert main(["pretrain", "--output-dir", str(tmp_path / "run"), *tiny_args, "--epochs", "1", "--method", "emp",
                 "--pruning-rate", "0.5", "--set", "data.train_subset=128", "--set", "eval.eval_every=0"]) == 0
    assert built == [(MODELS["simclr"].signals, MODELS["simclr"].signals)]


class ListSource:
    """Not a DynamicPruner: any object with the three calls can feed a PrunedSampler."""

    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> Tensor:
        return torch.tensor([5, 1, 4, 2, 3]) + self.epoch

    def epoch_size(self) -> int:
        return 5


def test_the_sampler_needs_only_its_protocol():
    source = ListSource()
    assert isinstance(source, KeptSetSource) and isinstance(make("emp", 0.5), KeptSetSource)
    sampler = PrunedSampler(source, rank=1, world_size=2)
    sampler.set_epoch(1)
    assert list(sampler) == [2, 3, 6] and len(sampler) == 3  # [6, 2, 5, 3, 4] padded to 6, rank 1's share
