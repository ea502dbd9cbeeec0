"""The metrics seam's TensorBoard sink, where users meet it: ``ssl-emp pretrain`` with
``logging.tensorboard=true``, read back with TensorBoard's own event reader."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'ssl-emp[dev]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from ssl_emp.cli import main  # noqa: E402
from ssl_emp.run.layout import RunLayout  # noqa: E402
from tests.helpers import Interrupt, interrupt_after, resume  # noqa: E402


def _common(tiny_args: list[str]) -> list[str]:
    return [*tiny_args, "--set", "log_every=1", "--set", "data.train_subset=256", "--set", "eval.eval_every=2",
            "--set", "logging.tensorboard=true", "--method", "emp", "--pruning-rate", "0.5", "--epochs", "4"]


def _events(run: RunLayout) -> EventAccumulator:
    acc = EventAccumulator(str(run.tensorboard), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _check_against_files(run: RunLayout) -> dict[str, list[tuple[int, float]]]:
    """Every number of metrics.jsonl and steps.csv is in the event files at its step, once."""
    scalars = _scalars(_events(run))
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate or unordered steps {steps}"
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [-1, 0, 1, 2, 3]
    for record in records:
        for key, value in record.items():
            if key in ("epoch", "step") or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            tag = key if "/" in key else f"epoch/{key}"
            assert dict(scalars[tag])[record["step"]] == pytest.approx(value, rel=1e-6), (tag, record["epoch"])
    with open(run.steps, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [s for s, _ in scalars["step/loss"]] == [int(r["step"]) for r in rows]
    for (_, loss), (_, lr), row in zip(scalars["step/loss"], scalars["step/lr"], rows, strict=True):
        assert loss == pytest.approx(float(row["loss"]), abs=1e-6)
        assert lr == pytest.approx(float(row["lr"]), rel=1e-5)
    return scalars


@pytest.mark.slow
def test_tensorboard_matches_the_run_logs(tmp_path, tiny_args):
    run = RunLayout(tmp_path / "run")
    assert main(["pretrain", *_common(tiny_args), "--output-dir", str(run.dir)]) == 0
    scalars = _check_against_files(run)
    assert {"epoch/knn_top1", "epoch/loss", "pruning/keep_fraction", "step/loss"} <= set(scalars)
    # The per-sample training counts at every epoch's end: 256 samples, half of them kept per epoch.
    histograms = _events(run).Histograms("pruning/count")
    assert len(histograms) == 4
    assert all(h.histogram_value.num == 256 for h in histograms)
    assert histograms[-1].histogram_value.sum == pytest.approx(4 * 128)


@pytest.mark.slow
def test_resumed_run_continues_the_same_tensorboard_run_without_duplicates(tmp_path, tiny_args):
    straight, split = RunLayout(tmp_path / "straight"), RunLayout(tmp_path / "split")
    assert main(["pretrain", *_common(tiny_args), "--output-dir", str(straight.dir)]) == 0
    with interrupt_after(5), pytest.raises(Interrupt):  # 2 steps per epoch: dies after one step of epoch 3
        main(["pretrain", *_common(tiny_args), "--output-dir", str(split.dir)])
    # The interrupted run wrote step events past its last checkpoint (after the second epoch, at step 4) ...
    assert max(s for s, _ in _scalars(_events(split))["step/loss"]) == 5
    assert resume(split.dir) == 0
    # ... which the resumed run's purge drops: one curve, each step once, equal to the uninterrupted run's.
    resumed = _check_against_files(split)
    expected = _scalars(_events(straight))
    assert set(resumed) == set(expected)
    for tag in ("step/loss", "step/lr", "epoch/loss", "epoch/knn_top1", "pruning/keep_fraction"):
        assert [s for s, _ in resumed[tag]] == [s for s, _ in expected[tag]], tag
        assert [v for _, v in resumed[tag]] == pytest.approx([v for _, v in expected[tag]], rel=1e-5), tag
    assert len(list(Path(split.tensorboard).glob("events.out.tfevents.*"))) == 2  # one file per session


@pytest.mark.slow
@pytest.mark.parametrize("seconds_back", [0, 3600], ids=["same-second", "clock-set-back"])
def test_a_resumed_session_is_read_after_the_interrupted_one_whatever_the_clock(tmp_path, tiny_args, monkeypatch,
                                                                                 seconds_back):
    """TensorBoard reads a run's event files in name order and applies a session's purge only to the
    files read before it; the names begin with the wall-clock second. A clock set back (or a resume
    within the same second from a process whose id sorts lower) would put the resumed session first,
    and every purged step would show twice."""
    split = RunLayout(tmp_path / "split")
    with interrupt_after(5), pytest.raises(Interrupt):
        main(["pretrain", *_common(tiny_args), "--output-dir", str(split.dir)])
    (first,) = Path(split.tensorboard).glob("events.out.tfevents.*")
    then = int(first.name.split(".")[3])
    monkeypatch.setattr(time, "time", lambda: then - seconds_back + 0.5)  # the system clock, for everyone
    # The writer's process id, as its file name spells it: "1" sorts before any other of the same second.
    monkeypatch.setattr("tensorboard.summary.writer.event_file_writer.os", SimpleNamespace(path=os.path, getpid=lambda: 1))
    assert resume(split.dir) == 0
    monkeypatch.undo()
    _check_against_files(split)  # each step once, in order


def test_tensorboard_is_off_by_default(tmp_path, tiny_args):
    run = RunLayout(tmp_path / "run")
    args = [*tiny_args, "--set", "data.train_subset=128", "--set", "eval.eval_every=0", "--epochs", "1"]
    assert main(["pretrain", *args, "--output-dir", str(run.dir)]) == 0
    assert not run.tensorboard.exists()


def test_tensorboard_without_the_package_is_one_line(tmp_path, tiny_args, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    run = RunLayout(tmp_path / "run")
    args = [*tiny_args, "--set", "data.train_subset=128", "--set", "eval.eval_every=0", "--epochs", "1",
            "--set", "logging.tensorboard=true"]
    assert main(["pretrain", *args, "--output-dir", str(run.dir)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssl-emp: error: logging.tensorboard needs the tensorboard package"), err
    assert run.config.is_file()  # the run can be started again once it is installed


def test_a_users_own_sink_gets_what_the_run_logs(tmp_path, tiny_args):
    """The seam as a library user meets it: ``pretrain(cfg, sinks=[...])`` with a W&B-like writer."""
    from ssl_emp.config import load_config
    from ssl_emp.train import pretrain

    class Recording:
        wants_histograms = True

        def __init__(self):
            self.steps, self.epochs, self.histograms, self.closed = [], [], [], False

        def step(self, step, epoch, scalars):
            self.steps.append((step, dict(scalars)))

        def epoch(self, step, record):
            self.epochs.append((step, dict(record)))

        def histogram(self, step, name, values):
            self.histograms.append((step, name, int(values.sum())))

        def close(self):
            self.closed = True

    run = RunLayout(tmp_path / "run")
    overrides = [item for flag, item in zip(tiny_args[1::2], tiny_args[2::2], strict=True) if flag == "--set"]
    cfg = load_config(None, [*overrides, "log_every=1", "data.train_subset=256", "eval.eval_every=2", "epochs=2",
                             "pruning.method=emp", "pruning.rate=0.5", "progress=false", f"output_dir={run.dir}"])
    sink = Recording()
    pretrain(cfg, sinks=[sink])
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r for _, r in sink.epochs] == records  # the same records, in order
    assert [s for s, _ in sink.epochs] == [r["step"] for r in records]
    with open(run.steps, newline="") as f:
        assert [s for s, _ in sink.steps] == [int(row["step"]) for row in csv.DictReader(f)]
    assert [(s, n, total) for s, n, total in sink.histograms] == [(2, "pruning/count", 128), (4, "pruning/count", 256)]
    assert sink.closed
