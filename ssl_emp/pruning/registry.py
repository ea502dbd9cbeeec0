"""The registry of pruning methods: one ``MethodSpec`` each, and every list of names derived from them.

A new method is one module defining its rule and its record (and, if it keeps state between
epochs, its ``MethodState`` class) plus one entry in ``BUILTIN`` below. Nothing else names it:
config validation, the pruner, the signal checks, the CLI help and the benchmark read the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.curation import PROTOTYPES, PROTOTYPES_EASY, SEMDEDUP, SEMDEDUP_AT_EPS, SEMDEDUP_RANDOM
from ssl_emp.pruning.methods import (
    EMP,
    EMP_EASY,
    EPS_GREEDY,
    FULL,
    INFOBATCH,
    RANDOM_DYNAMIC,
    RANDOM_STATIC,
    UCB,
)
from ssl_emp.pruning.scan import SCAN
from ssl_emp.pruning.spec import MethodSpec, Param

#: The built-in methods, in the order the CLI, the reports and the plots list them.
BUILTIN: tuple[MethodSpec, ...] = (FULL, RANDOM_STATIC, RANDOM_DYNAMIC, EPS_GREEDY, UCB, INFOBATCH, EMP, EMP_EASY, SCAN,
                                   SEMDEDUP, SEMDEDUP_AT_EPS, SEMDEDUP_RANDOM, PROTOTYPES, PROTOTYPES_EASY)

_REGISTRY: dict[str, MethodSpec] = {}


def _param_table(specs: Iterable[MethodSpec]) -> dict[str, Param]:
    """Every parameter of ``specs`` by name, in first-use order; one name must mean one parameter."""
    table: dict[str, Param] = {}
    for spec in specs:
        for name, param in spec.all_params().items():
            if table.setdefault(name, param) != param:
                raise ValueError(f"method {spec.name!r} defines parameter {name!r} differently from another method")
    return table


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (a name may be registered once); returns it."""
    if spec.name in _REGISTRY:
        raise ValueError(f"pruning method {spec.name!r} is already registered")
    if sum(s.full_data for s in (*_REGISTRY.values(), spec)) > 1:
        raise ValueError(f"method {spec.name!r}: only one method can be the full-data reference")
    _param_table((*_REGISTRY.values(), spec))  # before adding: a clash leaves the registry as it was
    _REGISTRY[spec.name] = spec
    return spec


@contextmanager
def registered(spec: MethodSpec) -> Iterator[MethodSpec]:
    """``spec`` registered for the block only (a method defined in a test)."""
    register(spec)
    try:
        yield spec
    finally:
        del _REGISTRY[spec.name]


def method_spec(name: object) -> MethodSpec:
    """The record of a registered method, or a ConfigError listing them."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown pruning method {name!r} (choose from {', '.join(_REGISTRY)})")
    return spec


def registered_specs() -> tuple[MethodSpec, ...]:
    """Every registered record, built-ins first."""
    return tuple(_REGISTRY.values())


for _spec in BUILTIN:
    register(_spec)

# The built-in lists, derived once (a method registered later is found through ``method_spec``).
METHODS: tuple[str, ...] = tuple(s.name for s in BUILTIN)
#: Methods whose achieved rate follows from their own parameters: ``pruning_rate`` is ignored.
OWN_RATE: tuple[str, ...] = tuple(s.name for s in BUILTIN if s.own_rate)
#: Methods that take no pruning rate: the full-data reference and those that set their own.
RATELESS: tuple[str, ...] = tuple(s.name for s in BUILTIN if not s.takes_rate)
#: The full-data method: the reference every pruned run is compared with.
FULL_DATA: str = next(s.name for s in BUILTIN if s.full_data)
#: The one table of pruning parameters: name -> default, valid range, help.
PARAMS: dict[str, Param] = _param_table(BUILTIN)
#: method -> the parameters it takes (the table's, then its own).
METHOD_PARAMS: dict[str, tuple[str, ...]] = {s.name: tuple(s.all_params()) for s in BUILTIN}
#: parameter -> the methods that take it ("applies to").
PARAM_METHODS: dict[str, tuple[str, ...]] = {
    name: tuple(m for m, taken in METHOD_PARAMS.items() if name in taken) for name in PARAMS
}
