"""A run's lifecycle around the loop: open (new, or resumed from a checkpoint whose config must
match), start (a clean, marked folder and its config) and finish (summary.json's fields, final.pt,
the pruning table)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ssl_emp.config import Config, config_diff, save_config
from ssl_emp.data import DataSplits
from ssl_emp.errors import ConfigError
from ssl_emp.run.checkpoint import checkpoint_config, load_checkpoint
from ssl_emp.run.folder import Run
from ssl_emp.run.state import TrainState
from ssl_emp.run.summary import accuracy_fields, run_diagnostics
from ssl_emp.runtime import machine, versions

# The one list of keys that may differ between invocations of a run (--resume) or a benchmark sweep
# without changing what it computes: where it runs and writes, what it logs, how it reads the data.
# data.num_workers: every loader has its own generator (ssl_emp.data.datasets.loader_generator), so 0
# and 2 workers give the same weights (tests/test_workers_and_signals.py). data.data_dir: the data is
# compared by its fingerprint instead (data_changes), so a moved folder is the same data; data.keep_file
# likewise, by its bytes (ssl_emp.data.fingerprint.data_fingerprint). curate: the
# whole section, which only `ssl-emp curate` reads (a curation method in a run takes its own params).
NEUTRAL_KEYS = ("output_dir", "progress", "device", "threads", "log_every", "logging.tensorboard", "data.data_dir",
                "data.keep_file", "data.num_workers", "data.cache_dir", "curate")


def data_changes(saved: dict[str, Any], saved_data: str | None, wanted: dict[str, Any], wanted_data: str) -> list[str]:
    """How the data of a run or sweep recorded as (``saved`` config dict, data fingerprint) differs
    from the one wanted; a record from before fingerprints were kept (None) has only the data
    folder's path to compare."""
    if saved_data is None:
        return [d for d in config_diff(saved, wanted) if d.startswith(("data.data_dir ", "data.keep_file "))]
    if saved_data != wanted_data:
        return [f"the data (fingerprint {saved_data} -> {wanted_data}: other images, or the same files changed)"]
    return []


def open_run(cfg: Config, run: Run, resume: bool) -> dict[str, Any] | None:
    """The last checkpoint when resuming (its config must match ``cfg`` outside ``NEUTRAL_KEYS``;
    ``check_data`` compares the data once it is loaded); None for a new run."""
    if not resume:
        if run.has_checkpoint():
            raise ConfigError(f"{run.dir} already holds a run; pass --resume to continue it or choose another --output-dir")
        run.check_new()  # before the data is loaded: a folder that is not ours is refused at once
        return None
    if not run.last.is_file():
        raise ConfigError(_nothing_to_resume(run))
    ckpt = load_checkpoint(run.last)
    diff = config_diff(asdict(checkpoint_config(ckpt, run.last)), asdict(cfg), NEUTRAL_KEYS)
    if diff:
        raise ConfigError(f"--resume with a config that differs from the checkpoint's: {', '.join(diff)}")
    run.mark()  # a run begun before folders were marked: recognisable from now on
    return ckpt


def check_data(ckpt: dict[str, Any], cfg: Config, fingerprint: str, source: Path) -> None:
    """Refuse to resume the checkpoint ``ckpt`` (read from ``source``) on data other than it was
    trained on, wherever the data folder now lies (``fingerprint``: ssl_emp.data.fingerprint)."""
    diff = data_changes(asdict(checkpoint_config(ckpt, source)), ckpt.get("data_fingerprint"), asdict(cfg), fingerprint)
    if diff:
        raise ConfigError(f"--resume on other data than {source} was trained on: {', '.join(diff)}")


def _nothing_to_resume(run: Run) -> str:
    """Why ``--resume`` finds no last.pt in ``run``, and what will work instead (never advice that
    the next command refuses in turn)."""
    past = run.past_first_checkpoint()
    if past:
        return (f"no {run.last} to resume from, and {run.dir} holds a run that got past its first checkpoint "
                f"({past}), so it cannot be started again there either; choose another --output-dir for a new run")
    if run.layout.marker.is_file():
        return (f"no checkpoint to resume in {run.dir} (the run stopped before its first epoch ended); "
                "rerun the same command without --resume to start it again")
    return f"no checkpoint to resume in {run.dir} (no {run.last})"


def start_run(cfg: Config, run: Run) -> None:
    """A new run's folder: what an interrupted, never-checkpointed start left is cleared, then the
    folder is marked and its config written."""
    run.reset_unstarted()
    if run.is_main:
        save_config(cfg, run.layout.config)


def finish_run(run: Run, cfg: Config, state: TrainState, data: DataSplits, world: int,
               device: torch.device, fingerprint: str) -> dict[str, Any]:
    """The run's summary (what it reached, cost and selected, and the data ``fingerprint``); rank 0
    writes final.pt, the pruning table and summary.json."""
    wall = state.wall_time
    stats = state.pruner.stats()
    summary = {
        **accuracy_fields(state.history),
        "wall_time_s": wall, "eval_time_s": state.timers["eval_time"], "train_time_s": wall - state.timers["eval_time"],
        "pruner_time_s": state.timers["pruner_time"], "images_seen": stats["sample_visits"],
        "optimizer_steps": stats["optimizer_steps"], "pruning_method": cfg.pruning.method,
        "target_rate": cfg.pruning.rate, "achieved_rate": stats["achieved_rate"], **run_diagnostics(state.diagnostics),
        "knn_split": "validation (held out of train)" if data.test_is_validation else "test",
        "num_samples": len(data.train), "epochs": cfg.epochs, "algorithm": cfg.algorithm, "world_size": world,
        "device": str(device), "threads": torch.get_num_threads(), "machine": machine(), "versions": versions(),
        "data_fingerprint": fingerprint,
    }
    labels = data.train.labels
    run.write_final(summary, state.pruner, labels.tolist() if labels is not None else None)
    return summary
