"""The run folder's own logs as a sink: ``metrics.jsonl`` (one JSON line per epoch) and
``steps.csv`` (one row per logging step). On resume ``Run.truncate_logs`` has already dropped the
lines past the checkpoint, so appending continues them without duplicates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ssl_emp.run.files import append_line
from ssl_emp.run.folder import STEPS_HEADER
from ssl_emp.run.layout import RunLayout


class FileSink:
    wants_histograms = False  # the final counts are in pruning_table.csv

    def __init__(self, layout: RunLayout, new: bool):
        self.layout = layout
        if new:
            append_line(layout.steps, STEPS_HEADER)

    def step(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None:
        append_line(self.layout.steps, f"{step},{epoch},{scalars['lr']:.6g},{scalars['loss']:.6f}")

    def epoch(self, step: int, record: Mapping[str, Any]) -> None:
        append_line(self.layout.metrics, json.dumps(dict(record)))

    def histogram(self, step: int, name: str, values: Tensor) -> None:
        pass

    def close(self) -> None:
        pass
