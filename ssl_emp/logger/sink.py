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

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from torch import Tensor

from ssl_emp.errors import ConfigError


class MetricsSink(Protocol):
    def step(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None: ...

    def epoch(self, step: int, record: Mapping[str, Any]) -> None: ...

    def histogram(self, step: int, name: str, values: Tensor) -> None: ...

    def close(self) -> None: ...


#: The methods a sink must have: the protocol's own.
SINK_METHODS: tuple[str, ...] = tuple(name for name in vars(MetricsSink) if not name.startswith("_"))


def check_sinks(sinks: Any) -> list[MetricsSink]:
    """A caller's sinks as a list, each checked to have the ``MetricsSink`` methods; a one-line
    ConfigError otherwise, raised before the run writes anything (not at its first logging step)."""
    if all(callable(getattr(sinks, name, None)) for name in SINK_METHODS):
        raise ConfigError(f"sinks must be a list of metrics sinks, got one {type(sinks).__name__}: pass sinks=[it]")
    if isinstance(sinks, str | bytes | Mapping) or not isinstance(sinks, Iterable):
        raise ConfigError(f"sinks must be a list of metrics sinks, got {type(sinks).__name__}")
    sinks = list(sinks)
    for i, sink in enumerate(sinks):
        missing = [name for name in SINK_METHODS if not callable(getattr(sink, name, None))]
        if missing:
            raise ConfigError(f"sinks[{i}] ({type(sink).__name__}) is not a metrics sink: it lacks "
                              f"{', '.join(missing)} (see ssl_emp.logger.MetricsSink)")
    return sinks


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
