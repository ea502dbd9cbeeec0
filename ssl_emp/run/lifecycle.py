"""A run's lifecycle around the loop: open (new, or resumed from a checkpoint whose config must
match), start (a clean, marked folder and its config) and finish (final.pt, the pruning table and
summary.json)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ssl_emp.config import Config, config_diff, config_from_dict, save_config
from ssl_emp.errors import ConfigError
from ssl_emp.run.checkpoint import load_checkpoint
from ssl_emp.run.folder import Run

# Where a run computes and where it writes may change on resume; nothing that changes what it computes.
RESUME_MAY_CHANGE = ("device", "progress", "output_dir", "logging.tensorboard")


def open_run(cfg: Config, run: Run, resume: bool) -> dict[str, Any] | None:
    """The last checkpoint when resuming (its config must match ``cfg``); None for a new run."""
    if not resume:
        if run.has_checkpoint():
            raise ConfigError(f"{run.dir} already holds a run; pass --resume to continue it or choose another --output-dir")
        run.check_new()  # before the data is loaded: a folder that is not ours is refused at once
        return None
    if not run.last.is_file():
        started = run.layout.marker.is_file()
        raise ConfigError(f"no checkpoint to resume in {run.dir}" + (
            " (the run stopped before its first epoch ended); rerun the same command without --resume "
            "to start it again" if started else f" (no {run.last})"))
    ckpt = load_checkpoint(run.last)
    diff = config_diff(asdict(config_from_dict(ckpt["config"])), asdict(cfg), RESUME_MAY_CHANGE)
    if diff:
        raise ConfigError(f"--resume with a config that differs from the checkpoint's: {', '.join(diff)}")
    run.mark()  # a run begun before folders were marked: recognisable from now on
    return ckpt


def start_run(cfg: Config, run: Run) -> None:
    """A new run's folder: what an interrupted, never-checkpointed start left is cleared, then the
    folder is marked and its config written."""
    run.reset_unstarted()
    if run.is_main:
        save_config(cfg, run.layout.config)
