"""What a restart needs, saved in every checkpoint: a generic restart over named stateful objects
(DINO's ``restart_from_checkpoint``), the counters, timers, evaluation history and RNG."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ssl_emp.errors import ConfigError
from ssl_emp.run.checkpoint import dtype_mismatch
from ssl_emp.settings import is_int, is_number


class TrainState:
    """The stateful objects by name (each with ``state_dict`` / ``load_state_dict``), the last
    finished epoch, the optimizer steps taken (the same on every rank), timers, the evaluation
    history, the per-epoch pruning diagnostics and the RNG state."""

    STATEFUL = ("model", "optimizer", "pruner")
    _TIMERS = ("eval_time", "pruner_time")
    # What every checkpoint holds ("step" and "diagnostics" came later: older ones lack them).
    _REQUIRED = (*STATEFUL, "rng", "epoch", "wall_time", "knn_history", *_TIMERS)

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer, pruner: Any, device: torch.device):
        self.model, self.optimizer, self.pruner, self.device = model, optimizer, pruner, device
        self.epoch = -1  # the last finished epoch
        self.step = 0  # optimizer steps taken
        self.timers = dict.fromkeys(self._TIMERS, 0.0)
        self.history: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, Any]] = []  # per epoch: the pruning diagnostics the summary reports
        self._wall_before, self._t0 = 0.0, time.perf_counter()

    @property
    def wall_time(self) -> float:
        return self._wall_before + time.perf_counter() - self._t0

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            **{name: getattr(self, name).state_dict() for name in self.STATEFUL},
            "epoch": self.epoch, "step": self.step, "wall_time": self.wall_time, **self.timers,
            "knn_history": self.history, "diagnostics": self.diagnostics,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None},
        }

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "the checkpoint") -> None:
        """Restore a ``state_dict``. One that does not fit this run (an entry missing or of the wrong
        type, weights of another kind, a kept index out of range, ...) is a one-line ``ConfigError``
        naming ``source``; the entries' types are checked before anything changes."""
        self._check(state, source)
        parts = [*((name, getattr(self, name).load_state_dict) for name in self.STATEFUL), ("rng", self._load_rng)]
        for name, load in parts:
            try:
                load(state[name])
            except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:  # ConfigError among them
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__  # torch's are several lines
                raise ConfigError(f"cannot resume from {source}: its '{name}' entry does not fit this run "
                                  f"({reason})") from exc
        self.epoch = state["epoch"]
        self.step = state.get("step", state["pruner"]["optimizer_steps"])  # older checkpoints: no "step"
        self.timers = {name: state[name] for name in self.timers}
        self.history = list(state["knn_history"])
        self.diagnostics = list(state.get("diagnostics", []))  # older checkpoints: none
        self._wall_before, self._t0 = state["wall_time"], time.perf_counter()

    def _check(self, state: dict[str, Any], source: str | Path) -> None:
        """The entries a restart reads, present and of their types; the model's weights fit the model."""
        missing = [name for name in self._REQUIRED if name not in state]
        wrong = [(name, "an integer >= 0") for name in ("epoch", "step") if name in state
                 and not (is_int(state[name]) and state[name] >= 0)]
        wrong += [(name, "a number") for name in ("wall_time", *self._TIMERS) if not is_number(state.get(name, 0))]
        wrong += [(name, "a list") for name in ("knn_history", "diagnostics") if not isinstance(state.get(name, []), list)]
        wrong += [(name, "a mapping") for name in ("model", "pruner", "rng") if not isinstance(state.get(name, {}), dict)]
        if missing:
            raise ConfigError(f"cannot resume from {source}: it has no '{missing[0]}' entry (not a complete "
                              "ssl-emp checkpoint)")
        if wrong:
            name, expected = wrong[0]
            raise ConfigError(f"cannot resume from {source}: its '{name}' entry must be {expected}, "
                              f"got {state[name]!r:.60}")
        problem = dtype_mismatch(self.model, state["model"])
        if problem:
            raise ConfigError(f"cannot resume from {source}: its weights do not fit the model: {problem}")

    def _load_rng(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
