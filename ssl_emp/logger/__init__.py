"""The metrics seam (``ssl_emp.logger.sink``): the loop's numbers go to every configured sink."""

from __future__ import annotations

from collections.abc import Sequence

from ssl_emp.config import Config
from ssl_emp.logger.files import FileSink
from ssl_emp.logger.sink import MetricsSink, Sinks, check_sinks, scalars_of
from ssl_emp.run.folder import Run

__all__ = ["FileSink", "MetricsSink", "Sinks", "build_sinks", "check_sinks", "scalars_of"]


def build_sinks(cfg: Config, run: Run, resumed_step: int | None, extra: Sequence[MetricsSink] = ()) -> Sinks:
    """The sinks of rank 0 (none elsewhere): the run folder's files, TensorBoard if configured, and
    a caller's own (``extra``, e.g. a W&B writer). ``resumed_step``: the checkpoint's optimizer step
    when resuming, None for a new run (steps after it are what a resumed run logs again)."""
    if not run.is_main:
        return Sinks([])
    sinks: list[MetricsSink] = [FileSink(run.layout, new=resumed_step is None)]
    if cfg.logging.tensorboard:
        from ssl_emp.logger.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(run.layout, None if resumed_step is None else resumed_step + 1))
    return Sinks([*sinks, *extra])
