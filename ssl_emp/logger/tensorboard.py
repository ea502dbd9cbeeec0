"""TensorBoard event files in ``RUN/tensorboard`` (``logging.tensorboard: true``), written with
torch's ``SummaryWriter``; the ``tensorboard`` package is an optional extra (``ssl-emp[tensorboard]``).

Tags: ``step/lr`` and ``step/loss`` at logging steps; the epoch record's entries at the epoch's last
step (``epoch/loss``, ``epoch/knn_top1``, ... and the ``pruning/...`` diagnostics as named); the
per-sample training counts as the histogram ``pruning/count``. A resumed run opens the writer with
``purge_step`` one past its checkpoint's step: TensorBoard then drops the events an interrupted run
wrote after that checkpoint, so the resumed run continues the same curves without duplicate steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.logger.sink import scalars_of
from ssl_emp.run.layout import RunLayout


class TensorBoardSink:
    wants_histograms = True

    def __init__(self, layout: RunLayout, purge_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch imports tensorboard lazily, here
            raise ConfigError("logging.tensorboard needs the tensorboard package: "
                              "pip install 'ssl-emp[tensorboard]'") from exc
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
