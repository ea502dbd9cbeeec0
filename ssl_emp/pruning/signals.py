"""Which signals a pruner takes: a method's own signal, the declared set, and each ``update``'s;
and the per-sample inputs a method reads (``checked_inputs``).

A model declares the per-sample signals it returns (``PretrainModel.signals``); ``DynamicPruner``
checks the declaration once (``declared_signals``) and every ``update`` against it
(``check_given``). Each name must be one the pruning state knows (``state.SIGNAL_SPECS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.registry import method_spec
from ssl_emp.pruning.state import signal_spec


def required_signal(method: str, objective: str) -> str | None:
    """The signal besides the loss that ``method``'s score needs (None: the loss alone)."""
    return method_spec(method).needs.get(objective)


def _together(method: str) -> str:
    return " and ".join(method_spec(method).reads)


def _partly(method: str, names: Iterable[str]) -> bool:
    """Whether ``names`` hold some but not all of the untracked signals ``method`` reads."""
    reads = method_spec(method).reads
    return 0 < sum(name in names for name in reads) < len(reads)


def declared_signals(signals: Iterable[str] | None, method: str, objective: str) -> tuple[str, ...] | None:
    """``signals`` checked against the pruning state and the method's needs, as a tuple."""
    if signals is None:
        return None
    if isinstance(signals, str) or not isinstance(signals, Iterable):
        raise ConfigError(f"signals must be a sequence of signal names, got {signals!r}")
    names = tuple(signals)
    for name in names:
        if name == "loss":
            raise ConfigError("signals name the signals besides the loss, which update() always takes: "
                              "remove 'loss'")
        if not isinstance(name, str):
            raise ConfigError(f"signals must be signal names, got {name!r}")
        signal_spec(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"signal {repeated[0]!r} is declared twice")
    need = required_signal(method, objective)
    if need is not None and need not in names:
        raise ConfigError(f"method {method!r} with objective {objective!r} needs the per-sample {need} "
                          f"signal; the declared signals are: {', '.join(names) or 'none'}")
    if _partly(method, names):
        raise ConfigError(f"{_together(method)} go together: declare all of them or none")
    return names


def check_given(given: Mapping[str, Tensor], declared: tuple[str, ...] | None, method: str, objective: str) -> None:
    """One ``update``'s signals: exactly the declared ones; without a declaration, known ones with
    the method's own among them and the untracked ones it reads (SCAN's two directions) together."""
    if declared is not None:
        for name in given:
            if name not in declared:
                raise ConfigError(f"update() got the signal {name!r}, which was not declared "
                                  f"(declared: {', '.join(declared) or 'none'})")
        for name in declared:
            if name not in given:
                raise ConfigError(f"update() is missing the declared signal {name!r}, got {name}=None")
        return
    for name in given:
        signal_spec(name)
    need = required_signal(method, objective)
    if need is not None and need not in given:
        raise ConfigError(f"method {method!r} with objective {objective!r} needs the per-sample {need} tensor, "
                          f"got {need}=None")
    if _partly(method, given):
        alone = ", ".join(name for name in method_spec(method).reads if name in given)
        raise ConfigError(f"{_together(method)} go together: pass all of them or none, got {alone} alone")


def checked_inputs(method: str, inputs: Mapping[str, object] | None, num_samples: int) -> dict[str, Tensor]:
    """The per-sample arrays ``method`` reads (``MethodSpec.inputs``) as CPU tensors of N rows, or a
    ConfigError naming the first missing, unexpected or mis-sized one."""
    wanted = method_spec(method).inputs
    given = dict(inputs or {})
    for name in given:
        if name not in wanted:
            raise ConfigError(f"method {method!r} reads no input {name!r} (it reads: {', '.join(wanted) or 'none'})")
    out = {}
    for name in wanted:
        if name not in given:
            raise ConfigError(f"method {method!r} needs the per-sample input {name!r}: pass inputs={{{name!r}: ...}}")
        value = torch.as_tensor(given[name]).cpu()
        if value.dim() == 0 or value.shape[0] != num_samples:
            raise ConfigError(f"input {name!r} must have one row per sample ({num_samples}), "
                              f"got shape {tuple(value.shape)}")
        out[name] = value
    return out
