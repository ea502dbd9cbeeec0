"""The output folder of one run: an exclusive lock, log files, checkpoints, the final outputs.

One process writes a folder at a time: ``FolderLock`` holds ``fcntl.flock`` on ``DIR/.lock`` for
the whole run (non-blocking; the kernel drops it when the process dies, so a lock file left by a
killed run is no obstacle). Under ``torch.distributed`` only rank 0 writes and locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.fileio import append_line, atomic_copy, atomic_write_text, os_error_message, sweep_temp_files

LOCK_NAME = ".lock"
# What a run writes before its first checkpoint; removed when such a run is started again.
_UNSTARTED_FILES = ("config.yaml", "metrics.jsonl", "steps.csv", "summary.json", "pruning_table.csv")


class FolderLock:
    """Exclusive, non-blocking lock on ``folder/.lock``; a held lock is a one-line ``ConfigError``.

    A folder this lock created and that holds nothing but the lock file when released (the run
    failed before writing anything) is removed again.
    """

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        self._created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(os_error_message(exc, self.folder, "create")) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another ssl-emp process is writing to {self.folder} (it holds "
                              f"{self.folder / LOCK_NAME}); wait for it or choose another --output-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person wondering who holds it
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            self.folder.rmdir()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Run:
    """Output folder of one pretraining run: config, metrics, checkpoints, summary."""

    def __init__(self, output_dir: str | Path, is_main: bool):
        self.dir = Path(output_dir)
        self.ckpt_dir = self.dir / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.final = self.ckpt_dir / "final.pt"
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

    def has_checkpoint(self) -> bool:
        return self.last.is_file() or self.final.is_file()

    def reset_unstarted(self) -> None:
        """Remove what a run stopped before its first checkpoint wrote, so that starting it again
        gives a clean folder (one epoch -1 line, one steps.csv header). Never touches checkpoints."""
        if not self.is_main or self.has_checkpoint():
            return
        found = [name for name in _UNSTARTED_FILES if (self.dir / name).is_file()]
        if found:
            print(f"ssl-emp: {self.dir} holds a run stopped before its first checkpoint; starting it again",
                  file=sys.stderr)
        for name in found:
            (self.dir / name).unlink()

    def log(self, name: str, line: str) -> None:
        if self.is_main:
            append_line(self.dir / name, line)

    def truncate_logs(self, epoch: int) -> None:
        """On resume, drop log lines of epochs after the checkpoint (they will be redone)."""
        if not self.is_main:
            return
        for name, epoch_of in (("metrics.jsonl", lambda ln: json.loads(ln)["epoch"]),
                               ("steps.csv", lambda ln: int(ln.split(",")[1]) if ln[0].isdigit() else -1)):
            path = self.dir / name
            if path.is_file():
                kept = [ln for ln in path.read_text().splitlines() if ln and epoch_of(ln) <= epoch]
                atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def write_final(self, summary: dict[str, Any], pruner: Any, labels: list[Any] | None) -> None:
        """final.pt (a copy of last.pt), pruning_table.csv and summary.json, each atomically."""
        if not self.is_main:
            return
        atomic_copy(self.last, self.final)
        table = self.dir / "pruning_table.csv"
        try:
            pruner.export_table(table, labels=labels)
        except OSError as exc:
            raise RunFailed(os_error_message(exc, table)) from exc
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2))
