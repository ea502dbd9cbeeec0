"""Which signals a pruner takes: a method's own signal, the declared set, and each ``update``'s.

A model declares the per-sample signals it returns (``PretrainModel.signals``); ``DynamicPruner``
checks the declaration once (``declared_signals``) and every ``update`` against it
(``check_given``). Each name must be one the pruning state knows (``state.SIGNAL_SPECS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.state import DIRECTIONS, signal_spec


def required_signal(method: str, objective: str) -> str | None:
    """The signal besides the loss that ``method``'s score needs (None: the loss alone)."""
    if method not in ("emp", "emp-easy"):
        return None
    return "entropy" if objective == "supervised" else "align"


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
    if method == "scan" and sum(d in names for d in DIRECTIONS) == 1:
        raise ConfigError(f"{' and '.join(DIRECTIONS)} go together: declare both directions' losses or neither")
    return names


def check_given(given: Mapping[str, Tensor], declared: tuple[str, ...] | None, method: str, objective: str) -> None:
    """One ``update``'s signals: exactly the declared ones; without a declaration, known ones with
    the method's own among them and SCAN's two directions together."""
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
    if method == "scan" and (DIRECTIONS[0] in given) != (DIRECTIONS[1] in given):
        alone = DIRECTIONS[0] if DIRECTIONS[0] in given else DIRECTIONS[1]
        raise ConfigError(f"{' and '.join(DIRECTIONS)} go together: pass both directions' losses or neither, "
                          f"got {alone} alone")
