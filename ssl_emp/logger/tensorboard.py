"""TensorBoard event files in ``RUN/tensorboard`` (``logging.tensorboard: true``), written with
torch's ``SummaryWriter``; the ``tensorboard`` package is an optional extra (``ssl-emp[tensorboard]``).

Tags: ``step/lr`` and ``step/loss`` at logging steps; the epoch record's entries at the epoch's last
step (``epoch/loss``, ``epoch/knn_top1``, ... and the ``pruning/...`` diagnostics as named); the
per-sample training counts as the histogram ``pruning/count``. A resumed run opens the writer with
``purge_step`` one past its checkpoint's step: TensorBoard then drops the events an interrupted run
wrote after that checkpoint, so the resumed run continues the same curves without duplicate steps;
the earlier files are renamed, if needed, so that TensorBoard reads them first (``_sort_before_now``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.logger.sink import scalars_of
from ssl_emp.run.layout import RunLayout

EVENTS_PREFIX = RunLayout.events_prefix


def _sort_before_now(folder: Path) -> None:
    """Rename the earlier sessions' event files, if needed, so that they sort before the one a writer
    opens now. TensorBoard reads a run's files in name order and applies a resumed session's purge
    only to the files read before it; the names begin with the wall-clock second, then the process id
    as text. A clock set back, or a resume within the same second from a process whose id sorts
    lower, would put the resumed session first and show every purged step twice. The run folder's
    lock is held and the earlier writers are closed: renaming is safe, and keeps their order."""
    files = sorted(folder.glob(f"{EVENTS_PREFIX}*"))  # the order TensorBoard reads them in
    now = int(time.time())
    if all(f.name[len(EVENTS_PREFIX):].split(".")[0] < f"{now:010d}" for f in files):
        return
    for i, f in enumerate(files):  # one second earlier than now, then their order
        f.rename(folder / f"{EVENTS_PREFIX}{now - 1:010d}.{i:06d}.{f.name[len(EVENTS_PREFIX):]}")


class TensorBoardSink:
    wants_histograms = True

    def __init__(self, layout: RunLayout, purge_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch imports tensorboard lazily, here
            raise ConfigError("logging.tensorboard needs the tensorboard package: "
                              "pip install 'ssl-emp[tensorboard]'") from exc
        if purge_step is not None:
            _sort_before_now(layout.tensorboard)
        self.writer = SummaryWriter(log_dir=str(layout.tensorboard), purge_step=purge_step)

    def step(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"step/{name}", value, step)

    def epoch(self, step: int, record: Mapping[str, Any]) -> None:
        for name, value in scalars_of(record).items():
            if name not in ("epoch", "step"):
                self.writer.add_scalar(name if "/" in name else f"epoch/{name}", value, step)
        self.writer.flush()  # an epoch's events are on disk before its checkpoint

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        self.writer.add_histogram(name, values, step)

    def close(self) -> None:
        self.writer.close()
