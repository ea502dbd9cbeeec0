"""What a restart needs, saved in every checkpoint: a generic restart over named stateful objects
(DINO's ``restart_from_checkpoint``), the counters, timers, evaluation history and RNG."""

from __future__ import annotations

import time
from typing import Any

import torch


class TrainState:
    """The stateful objects by name (each with ``state_dict`` / ``load_state_dict``), the last
    finished epoch, the optimizer steps taken (the same on every rank), timers, the evaluation
    history, the per-epoch pruning diagnostics and the RNG state."""

    STATEFUL = ("model", "optimizer", "pruner")

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer, pruner: Any, device: torch.device):
        self.model, self.optimizer, self.pruner, self.device = model, optimizer, pruner, device
        self.epoch = -1  # the last finished epoch
        self.step = 0  # optimizer steps taken
        self.timers = {"eval_time": 0.0, "pruner_time": 0.0}
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.STATEFUL:
            getattr(self, name).load_state_dict(state[name])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]
        self.step = state.get("step", state["pruner"]["optimizer_steps"])  # older checkpoints: no "step"
        self.timers = {name: state[name] for name in self.timers}
        self.history = list(state["knn_history"])
        self.diagnostics = list(state.get("diagnostics", []))  # older checkpoints: none
        self._wall_before, self._t0 = state["wall_time"], time.perf_counter()
