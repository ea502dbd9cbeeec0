"""A run's side on disk: the folder and its file names (``layout``), its lock, atomic files,
checkpoints, the state a restart needs, the lifecycle around the loop and the summary."""

from ssl_emp.run.folder import Run
from ssl_emp.run.layout import BenchmarkLayout, RunLayout

__all__ = ["BenchmarkLayout", "Run", "RunLayout"]
