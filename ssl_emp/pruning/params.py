"""The one table of pruning parameters: defaults, valid ranges and which methods take each one.

Used by ``DynamicPruner``, by config validation (``pruning.params``) and by the benchmark grid,
so a parameter is defined, defaulted and range-checked in exactly one place. Defaults are those
of docs/method.md (EMP: Xiao et al., arXiv 2408.16031; ε-greedy/UCB: Raju et al.,
arXiv 2111.12621; InfoBatch: Qin et al., arXiv 2303.04947; SCAN: Guo & Kankanhalli, arXiv 2411.09126,
whose defaults are the official code's).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.methods import METHODS, OWN_RATE

MAX_PRUNING_RATE = 0.95


@dataclass(frozen=True)
class Param:
    """One keyword parameter: its default, its valid range (predicate + text) and its methods."""

    default: float
    check: Callable[[float], bool]
    text: str  # the valid range in words, for error messages
    methods: tuple[str, ...]
    help: str


_UNIT = (lambda x: 0 < x <= 1, "in (0, 1]")
_NONNEG = (lambda x: x >= 0, ">= 0")
_EMP = ("emp", "emp-easy")
# The table's EMAs and the memory diagnostics exist for every method, so their rates are accepted
# everywhere; InfoBatch and SCAN read the latest loss (alpha fixed to 1), so they take no alpha.
_HALF = (lambda x: 0 <= x <= 0.5, "in [0, 0.5]")
PARAMS: dict[str, Param] = {
    "alpha": Param(0.5, *_UNIT, tuple(m for m in METHODS if m not in OWN_RATE), "EMA rate of the loss"),
    "gamma": Param(0.5, *_UNIT, METHODS, "EMA rate of align / entropy"),
    "rho": Param(0.9, *_UNIT, METHODS, "forgetting rate of the memory term (contrastive EMP)"),
    "beta": Param(1.0, *_NONNEG, _EMP, "weight of the memory / entropy term"),
    "epsilon": Param(0.2, lambda x: 0 <= x <= 1, "in [0, 1]", ("eps-greedy", *_EMP), "exploration share of K"),
    "ucb_c": Param(1.0, *_NONNEG, ("ucb",), "UCB: mean + c * std"),
    "infobatch_prune_prob": Param(0.5, lambda x: 0 <= x < 1, "in [0, 1)", ("infobatch",), "InfoBatch p"),
    "infobatch_delta": Param(0.875, lambda x: 0 <= x <= 1, "in [0, 1]", ("infobatch",), "InfoBatch δ"),
    "scan_rho_max": Param(0.35, *_HALF, ("scan",), "SCAN: in-batch share marked ill-matched (highest loss)"),
    "scan_rho_min": Param(0.35, *_HALF, ("scan",), "SCAN: in-batch share marked redundant (lowest loss)"),
    "scan_cycle": Param(3, lambda x: x >= 1 and x == int(x), "an integer >= 1", ("scan",),
                        "SCAN: T, pruning epochs per cycle (after one probe epoch)"),
    "scan_tau": Param(0.3, lambda x: 0 <= x < 1, "in [0, 1)", ("scan",),
                      "SCAN: warm-up ends when the epoch loss improves by less than this fraction"),
}

#: method -> the parameters it takes, in PARAMS order.
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    m: tuple(name for name, p in PARAMS.items() if m in p.methods) for m in METHODS
}


def real(name: str, value: object) -> float:
    """``value`` as a finite float, or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def validate_params(
    method: str, rate: object, params: Mapping[str, object], *, section: str | None = None
) -> dict[str, float]:
    """Check a (method, pruning rate, params) triple; return every parameter of the method resolved.

    Pure: no pruner is built. ``section`` (e.g. ``"pruning"``) makes the messages name config keys
    (``pruning.rate``, ``pruning.params.beta``) instead of the constructor's arguments.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown pruning method {method!r} (choose from {', '.join(METHODS)})")
    rate_key = f"{section}.rate" if section else "pruning_rate"
    value = real(rate_key, rate)
    if not 0 <= value <= MAX_PRUNING_RATE:
        raise ConfigError(f"{rate_key} must be in [0, {MAX_PRUNING_RATE}], got {value}")
    if method == "full" and value != 0:
        raise ConfigError(f"method 'full' trains on all data: {rate_key} must be 0, got {value}")
    where = f"{section}.params: " if section else ""
    allowed = METHOD_PARAMS[method]
    for name in params:
        if name not in allowed:
            raise ConfigError(
                f"{where}unknown parameter {name!r} for method {method!r} (allowed: {', '.join(allowed)})"
            )
    resolved = {name: PARAMS[name].default for name in allowed}
    for name, raw in params.items():
        key = f"{section}.params.{name}" if section else name
        number = real(key, raw)
        if not PARAMS[name].check(number):
            raise ConfigError(f"{key} must be {PARAMS[name].text}, got {number}")
        resolved[name] = number
    return resolved
