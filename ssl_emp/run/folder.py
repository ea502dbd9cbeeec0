"""The output folder of one run: its lock, log files, checkpoints and final outputs, and the rules
for starting, resuming and finishing it without losing what is already there.

File names come from ``RunLayout``; the lock from ``ssl_emp.run.lock``. Under ``torch.distributed``
only rank 0 writes and locks.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.run.files import append_line, atomic_copy, atomic_write_text, os_error_message, sweep_temp_files
from ssl_emp.run.layout import RunLayout
from ssl_emp.run.lock import LOCK_NAME, FolderLock

# Written at a run's first start before anything else: what lets a later start tell the project's
# own run (which it may reset) from a user's files (which it must never touch).
MARKER_NAME = RunLayout.marker_name
MARKER_TEXT = "ssl-emp run folder, format 1\n"
STEPS_HEADER = "step,epoch,lr,loss"
# What a run writes before its first checkpoint; removed when such a run is started again.
_UNSTARTED = ("config", "metrics", "steps", "embeddings")  # RunLayout's names
# Written only after the last checkpoint: their presence without checkpoints means a finished run
# whose checkpoints/ were removed (to free disk), not one to start again.
_FINISHED = ("summary", "pruning_table")


def _metrics_epoch(line: str) -> int | None:
    """The epoch of a metrics.jsonl line; None if it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _steps_epoch(line: str) -> int | None:
    """The epoch of a steps.csv row (-1 for the header); None if it is neither."""
    if line == STEPS_HEADER:
        return -1
    fields = line.split(",")
    if len(fields) != 4:
        return None
    try:
        _, epoch, _, _ = int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3])
    except ValueError:
        return None
    return epoch


def _read_log(path: Path, epoch_of: Callable[[str], int | None]) -> tuple[list[tuple[str, int]], bool]:
    """A log's lines with their epochs, and whether a torn last line was left out of them."""
    # Not read_text: a torn write may end inside a multi-byte character, or be garbage.
    body, _, tail = path.read_bytes().decode(errors="replace").rpartition("\n")
    numbered = [(number, line) for number, line in enumerate(body.split("\n") if body else [], 1) if line.strip()]
    epochs = [epoch_of(line) for _, line in numbered]
    torn = bool(tail.strip())  # no trailing newline: the last append did not finish
    if not torn and epochs and epochs[-1] is None:  # complete, but not what was being written
        numbered.pop()
        epochs.pop()
        torn = True
    lines = []
    for (number, line), line_epoch in zip(numbered, epochs, strict=True):
        if line_epoch is None:
            raise ConfigError(f"{path} line {number} is not a log line of ssl-emp ({line[:40]!r}); "
                              "repair or remove that line, then --resume again")
        lines.append((line, line_epoch))
    return lines, torn


class Run:
    """Output folder of one pretraining run: config, metrics, checkpoints, summary."""

    def __init__(self, output_dir: str | Path, is_main: bool):
        self.layout = RunLayout(output_dir)
        self.dir, self.ckpt_dir = self.layout.dir, self.layout.checkpoints
        self.last, self.final = self.layout.last, self.layout.final
        self.is_main = is_main
        self._lock = FolderLock(self.dir)

    def __enter__(self) -> Run:
        """Lock the folder (rank 0) and sweep temp files of interrupted writes."""
        if self.is_main:
            self._lock.acquire()
            for folder in (self.dir, self.ckpt_dir):
                sweep_temp_files(folder)
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.is_main:
            self._lock.release()

    def _files(self, names: tuple[str, ...]) -> list[Path]:
        return [getattr(self.layout, name) for name in names]

    def has_checkpoint(self) -> bool:
        return self.last.is_file() or self.final.is_file()

    def check_new(self) -> None:
        """Refuse, in one line, to start a new run in a folder that holds anything but the lock or
        a run of this project stopped before its first checkpoint (which ``reset_unstarted`` clears):
        a user's files, or a finished run whose checkpoints/ were removed, are never deleted."""
        if not self.is_main or not self.dir.is_dir():
            return
        entries = [p for p in self.dir.iterdir() if p.name != LOCK_NAME]
        if not entries:
            return
        if not self.layout.marker.is_file():
            raise ConfigError(f"{self.dir} is not empty and is not an ssl-emp run folder (no {MARKER_NAME}); "
                              "choose another --output-dir")
        past = self.past_first_checkpoint()
        if past:
            raise ConfigError(f"{self.dir} holds a run that got past its first checkpoint ({past}) but has no "
                              f"checkpoint left in {self.ckpt_dir}; choose another --output-dir")
        ours = {MARKER_NAME, *(path.name for path in self._files(_UNSTARTED))}
        foreign = sorted(p.name for p in entries
                         if not (p.name in ours and p.is_file() or self._empty_ckpt_dir(p) or self._events_only(p)))
        if foreign:
            raise ConfigError(f"{self.dir} holds files no ssl-emp run wrote ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose another --output-dir")

    def past_first_checkpoint(self) -> str | None:
        """What shows that the run in this folder got past its first checkpoint (final.pt, a file
        written only at the end, or logged epochs after the first); None if nothing does."""
        finished = [path.name for path in [self.final, *self._files(_FINISHED)] if path.exists()]
        if finished:
            return finished[0]
        return "metrics.jsonl has epochs after the first checkpoint" if self._logged_past_first_checkpoint() else None

    def _empty_ckpt_dir(self, path: Path) -> bool:
        # What a run killed while writing its first checkpoint leaves once its temp file is swept.
        return path == self.ckpt_dir and path.is_dir() and not path.is_symlink() and not any(path.iterdir())

    def _events_only(self, path: Path) -> bool:
        # The TensorBoard folder of a run stopped before its first checkpoint: event files only.
        return (path == self.layout.tensorboard and path.is_dir() and not path.is_symlink()
                and all(p.is_file() and p.name.startswith(RunLayout.events_prefix) for p in path.iterdir()))

    def _logged_past_first_checkpoint(self) -> bool:
        # Epoch e's metrics line is written just before epoch e's checkpoint: a line of epoch 1 or
        # later means epoch 0's checkpoint existed.
        path = self.layout.metrics
        if not path.is_file():
            return False
        return any((_metrics_epoch(ln) or 0) >= 1 for ln in path.read_bytes().decode(errors="replace").splitlines())

    def mark(self) -> None:
        """Write the marker that makes the folder recognisably this project's run (if it is missing)."""
        if self.is_main and not self.layout.marker.is_file():
            atomic_write_text(self.layout.marker, MARKER_TEXT)

    def reset_unstarted(self) -> None:
        """Mark the folder as a run's, before anything else is written, and remove what a run stopped
        before its first checkpoint wrote, so that starting it again gives a clean folder (one epoch
        -1 line, one steps.csv header). Refuses any other folder, as ``check_new`` does."""
        if not self.is_main:
            return
        self.check_new()  # again, right before deleting: the folder may have changed since open_run looked
        found = [path for path in self._files(_UNSTARTED) if path.is_file()]
        if found:
            print(f"ssl-emp: {self.dir} holds a run stopped before its first checkpoint; starting it again",
                  file=sys.stderr)
        self.mark()
        for path in found:
            path.unlink()
        if self._events_only(self.layout.tensorboard):  # its curves would show the stopped attempt's steps
            shutil.rmtree(self.layout.tensorboard)

    def log(self, name: str, line: str) -> None:
        if self.is_main:
            append_line(self.dir / name, line)

    def truncate_logs(self, epoch: int) -> None:
        """On resume, drop log lines of epochs after the checkpoint (they will be redone) and a torn
        last line (the process died while appending it; said in one line on stderr). Any other line
        that does not parse is a one-line ``ConfigError``, raised before either log is rewritten."""
        if not self.is_main:
            return
        logs = [(self.layout.metrics, _metrics_epoch), (self.layout.steps, _steps_epoch)]
        read = [(path, *_read_log(path, epoch_of)) for path, epoch_of in logs if path.is_file()]
        for path, lines, torn in read:
            if torn:
                print(f"ssl-emp: {path}: dropped a torn last line (the run was killed while writing it)",
                      file=sys.stderr)
            atomic_write_text(path, "".join(line + "\n" for line, line_epoch in lines if line_epoch <= epoch))

    def write_final(self, summary: dict[str, Any], pruner: Any, labels: list[Any] | None) -> None:
        """final.pt (a copy of last.pt), pruning_table.csv and summary.json, each atomically."""
        if not self.is_main:
            return
        atomic_copy(self.last, self.final)
        table = self.layout.pruning_table
        try:
            pruner.export_table(table, labels=labels)
        except OSError as exc:
            raise RunFailed(os_error_message(exc, table)) from exc
        atomic_write_text(self.layout.summary, json.dumps(summary, indent=2))
