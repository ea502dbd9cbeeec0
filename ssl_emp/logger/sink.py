"""The metrics seam: the loop writes numbers to sinks, never formatted text to files.

A sink receives, against the run's global optimizer step (one x-axis for everything, so a resumed
run can drop what an interrupted one wrote past its checkpoint with a single step):
- ``step``: a logging step's scalars (``lr``, ``loss``), every ``log_every`` steps;
- ``epoch``: an epoch's record (``epoch``, ``step``, the loss, throughput, the ``pruning/...``
  diagnostics, the monitors' accuracies when evaluated); epoch -1 is the evaluation before training;
- ``histogram``: the per-sample training counts at the epoch's end.
A sink may set ``wants_histograms = False`` to spare the loop the counts' device-to-host copy when
it would drop them anyway (a sink without the attribute gets them). Only rank 0 has sinks.
``ssl_emp.logger.files`` keeps ``metrics.jsonl`` and ``steps.csv``; ``ssl_emp.logger.tensorboard``
writes TensorBoard event files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import Tensor


class MetricsSink(Protocol):
    def step(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None: ...

    def epoch(self, step: int, record: Mapping[str, Any]) -> None: ...

    def histogram(self, step: int, name: str, values: Tensor) -> None: ...

    def close(self) -> None: ...


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers of a record (no bools, None, strings or nested values)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


class Sinks:
    """Fans every call out to the configured sinks (none on ranks other than 0)."""

    def __init__(self, sinks: list[MetricsSink]):
        self.sinks = sinks

    @property
    def wants_histograms(self) -> bool:
        return any(getattr(s, "wants_histograms", True) for s in self.sinks)

    def step(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.step(step, epoch, scalars)

    def epoch(self, step: int, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.epoch(step, record)

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        for sink in self.sinks:
            sink.histogram(step, name, values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
