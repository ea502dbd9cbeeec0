"""Validation of a (method, pruning rate, params) triple against the method's record.

Used by ``DynamicPruner``, by config validation (``pruning.params``) and by the benchmark grid.
Each parameter is defined, defaulted and range-checked in one place, its method's ``MethodSpec``
(``ssl_emp.pruning.registry``: the table ``PARAMS`` and who takes what). Defaults are those
of docs/method.md (EMP: Xiao et al., arXiv 2408.16031; ε-greedy/UCB: Raju et al.,
arXiv 2111.12621; InfoBatch: Qin et al., arXiv 2303.04947; SCAN: Guo & Kankanhalli, arXiv 2411.09126,
whose defaults are the official code's).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.registry import method_spec

MAX_PRUNING_RATE = 0.95


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
    spec = method_spec(method)
    rate_key = f"{section}.rate" if section else "pruning_rate"
    value = real(rate_key, rate)
    if not 0 <= value <= MAX_PRUNING_RATE:
        raise ConfigError(f"{rate_key} must be in [0, {MAX_PRUNING_RATE}], got {value}")
    if spec.full_data and value != 0:
        raise ConfigError(f"method {method!r} trains on all data: {rate_key} must be 0, got {value}")
    where = f"{section}.params: " if section else ""
    table = spec.all_params()
    allowed = tuple(table)
    for name in params:
        if name not in allowed:
            raise ConfigError(
                f"{where}unknown parameter {name!r} for method {method!r} (allowed: {', '.join(allowed)})"
            )
    resolved = {name: param.default for name, param in table.items()}
    for name, raw in params.items():
        key = f"{section}.params.{name}" if section else name
        number = real(key, raw)
        if not table[name].check(number):
            raise ConfigError(f"{key} must be {table[name].text}, got {number}")
        resolved[name] = number
    return resolved
