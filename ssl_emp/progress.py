"""Progress of the stages a user waits on (decoding a folder, extracting features, an epoch).

On a terminal: a tqdm bar. Otherwise (stderr redirected to a log, a batch job): one line per stage
when it ends, with its count and time, and a line every ``EVERY_S`` seconds while a long one runs;
never a carriage return, which makes a log unreadable. ``progress_enabled(False)`` (a run's
``progress: false``, ``--no-progress``) silences both for the stages run within it; the commands
turn it on (``progress_enabled(cfg.progress)``) around the stages they run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tqdm import tqdm

EVERY_S = 30.0  # seconds between the lines of a stage still running, in a log
# Off outside a command (a library call of load_data stays quiet); pretrain, eval and curate turn it on.
_ENABLED: ContextVar[bool] = ContextVar("ssl_emp_progress", default=False)


@contextmanager
def progress_enabled(enabled: bool) -> Generator[None, None, None]:
    """Show (or not) the progress of the stages run within the block: a run's ``progress`` setting."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


class LogProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``) as plain lines on stderr."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, unit: str, lines: bool):
        self.iterable, self.desc, self.total, self.unit, self.lines = iterable, desc, total, unit, lines
        self.n, self.start = 0, time.perf_counter()
        self.last, self.closed = self.start, False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.lines and now - self.last >= EVERY_S:
            self.last = now
            self._say(f"{self._count()}, {now - self.start:.0f} s so far")

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass  # the epoch's line says the loss and speed once, when it ends

    def close(self) -> None:
        if not self.closed and self.lines:
            self._say(f"{self._count()} in {time.perf_counter() - self.start:.1f} s")
        self.closed = True

    def _count(self) -> str:
        of = f"/{self.total:,}" if self.total is not None and self.n != self.total else ""
        return f"{self.n:,}{of} {self.unit}"

    def _say(self, text: str) -> None:
        print(f"ssl-emp: {self.desc}: {text}", file=sys.stderr, flush=True)


def show_progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, unit: str = "images",
             enabled: bool | None = None, lines: bool = True, leave: bool = False) -> tqdm | LogProgress:
    """A progress display of a stage: a tqdm bar on a terminal, else ``LogProgress`` (``lines=False``:
    nothing, where the caller logs the stage's end itself, as an epoch does); silent when not
    ``enabled``. ``enabled=None``: as set by the innermost ``progress_enabled`` (off outside one)."""
    show = _ENABLED.get() if enabled is None else enabled
    if show and sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=f" {unit}", leave=leave, file=sys.stderr)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return LogProgress(iterable, desc, total, unit, lines=show and lines)
