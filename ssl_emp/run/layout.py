"""The names of the files in a run folder and in a benchmark folder, defined once.

Every reader and writer (the trainer, the CLI, the benchmark, its results and report, the scripts
in ``benchmarks/``) asks these objects for a path instead of spelling a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """One pretraining run's folder (``ssl-emp pretrain --output-dir DIR``)."""

    dir: Path

    def __init__(self, folder: str | Path):
        object.__setattr__(self, "dir", Path(folder))

    lock_name = ".lock"  # fcntl lock held by the writing process (ssl_emp.run.lock)
    marker_name = ".ssl-emp-run"  # written first: what marks the folder as this project's run
    # TensorBoard's event file names: this prefix, then the wall-clock second the writer opened the file.
    events_prefix = "events.out.tfevents."

    @property
    def lock(self) -> Path:
        return self.dir / self.lock_name

    @property
    def marker(self) -> Path:
        return self.dir / self.marker_name

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def metrics(self) -> Path:
        """One JSON line per epoch (epoch -1: the evaluation before training)."""
        return self.dir / "metrics.jsonl"

    @property
    def steps(self) -> Path:
        """One CSV row per logging step."""
        return self.dir / "steps.csv"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, with ``logging.tensorboard: true``."""
        return self.dir / "tensorboard"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def pruning_table(self) -> Path:
        return self.dir / "pruning_table.csv"

    @property
    def linear(self) -> Path:
        """The linear probe of the final checkpoint, written by ``ssl-emp benchmark`` with ``linear_probe``."""
        return self.dir / "linear.json"

    @property
    def embeddings(self) -> Path:
        """The ``pruning.embeddings`` a run selected from: path, sha1, their record, what the rule reported."""
        return self.dir / "embeddings.json"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last(self) -> Path:
        """Written at every epoch's end: what ``--resume`` continues from."""
        return self.checkpoints / "last.pt"

    @property
    def final(self) -> Path:
        """A copy of the last checkpoint once the run has finished: what eval and export read."""
        return self.checkpoints / "final.pt"


@dataclass(frozen=True)
class BenchmarkLayout:
    """One ``ssl-emp benchmark --output-dir DIR`` folder: the plan, the result rows, the report and
    a run folder per grid point under ``runs/``."""

    dir: Path

    def __init__(self, folder: str | Path):
        object.__setattr__(self, "dir", Path(folder))

    @property
    def plan(self) -> Path:
        return self.dir / "benchmark.json"

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def results_csv(self) -> Path:
        return self.dir / "results.csv"

    @property
    def report(self) -> Path:
        return self.dir / "report.md"

    @property
    def runs(self) -> Path:
        return self.dir / "runs"

    @property
    def embeddings(self) -> Path:
        """The grid's embeddings, one folder per source (and seed, for a pre-run)."""
        return self.dir / "embeddings"

    def run(self, run_id: str) -> RunLayout:
        return RunLayout(self.runs / run_id)
