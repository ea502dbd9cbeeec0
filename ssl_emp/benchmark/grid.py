"""Benchmark files and their grids: parse and validate the YAML, expand it into one run per cell.

Kept apart from ``ssl_emp.benchmark.sweep``, which runs the sweep, because this half only reads and
checks: it writes no files and trains nothing, so every mistake in a benchmark file is reported
here, before the first run starts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.sources import EmbeddingSource, check_method_source, parse_sources, split_method

# merge_values with update_dicts=True is exactly what `ssl-emp pretrain --set` applies: nested sections
# and dict-valued keys (backbone_kwargs, pruning.params) are updated entry by entry, not replaced.
from ssl_emp.config import (
    Config,
    check_redundancy,
    config_from_dict,
    finalize,
    merge_values,
    parse_override,
    read_config_file,
    read_yaml,
    redundant_size,
    resolve_input_paths,
)
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import FULL_DATA, METHODS, RATELESS
from ssl_emp.run.layout import BenchmarkLayout

TOP_KEYS = ("base", "pretrain", "overrides", "grid", "linear_probe")
GRID_KEYS = ("methods", "rates", "seeds", "method_params", "method_rates", "embeddings")
# The equal-compute baseline (docs/method.md "The references every rule is compared with"): not a pruning rule but a grid method, full
# data for round((1 − r)·E) epochs with the whole schedule compressed into them. Its rates may lie
# outside grid.rates (grid.method_rates.shorter), e.g. the achieved rate of InfoBatch.
SHORTER = "shorter"
# The redundancy probe's oracle (docs/method.md "Redundancy probe"): full data on the U unique images of
# the base config's redundant set (data.redundancy) for the grid's E epochs, which is the compute of
# a pruned run at r* = 1 − U/N. Its rate is r*, never a grid rate; `rstar` in grid.rates (or
# grid.method_rates) places the other methods at the same compute.
DEDUP = "dedup"
RSTAR = "rstar"
GRID_METHODS = (*METHODS, SHORTER, DEDUP)


@dataclass
class Benchmark:
    """A parsed, validated benchmark file."""

    source: Path
    base: Config  # the pretrain config every run starts from (not yet finalized)
    methods: list[str]
    rates: list[float]
    seeds: list[int]
    method_params: dict[str, dict[str, Any]]
    linear_probe: bool
    method_rates: dict[str, list[float]] = field(default_factory=dict)  # method -> its only rates
    rstar: float | None = None  # r* of the base config's redundant set; None without one
    embeddings: dict[str, EmbeddingSource] = field(default_factory=dict)  # grid.embeddings: the curation sources


@dataclass
class RunSpec:
    """One cell of the grid: its id and its complete, validated pretrain config."""

    run_id: str
    method: str
    target_rate: float | None  # None: the method picks its own rate (infobatch)
    seed: int
    config: Config
    budget_epochs: int  # the grid's E: achieved rates are 1 − visits / (N · E), also for `shorter`
    budget_samples: int | None = None  # that N when the run trains on fewer (dedup: the redundant set's)
    embed_source: str | None = None  # where a curation method's embeddings come from (grid.embeddings)


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"benchmark key '{name}' must be a mapping, got {value!r}")
    return value


def _unique_list(value: Any, name: str, check: Callable[[Any], bool], kind: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"benchmark key '{name}' must be a non-empty list of {kind}, got {value!r}")
    for item in value:
        if not check(item):
            raise ConfigError(f"benchmark key '{name}' must hold {kind}, got {item!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"benchmark key '{name}' has duplicates: {value!r}")
    return list(value)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        out[key] = _deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _split_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items -> (benchmark-level values, pretrain-config values), both nested mappings.

    ``grid.*`` and ``linear_probe`` change the benchmark; any other key changes the pretrain
    config exactly as ``ssl-emp pretrain --set`` would.
    """
    bench: dict[str, Any] = {}
    pretrain: dict[str, Any] = {}
    for item in items:
        parts, value = parse_override(item)
        key = ".".join(parts)
        target = bench if parts[0] in ("grid", "linear_probe") else pretrain
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        target[parts[-1]] = value
    return bench, pretrain


def load_benchmark(path: str | Path, overrides: list[str] | None = None) -> Benchmark:
    """Read and validate a benchmark file; ``overrides`` are ``--set key=value`` items."""
    path = Path(path)
    doc = read_yaml(path, "benchmark config")
    if not isinstance(doc, dict):
        raise ConfigError(f"benchmark config {path} must be a mapping of {', '.join(TOP_KEYS)}")
    for key in doc:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown benchmark key '{key}' (allowed: {', '.join(TOP_KEYS)})")
    bench_sets, pretrain_sets = _split_overrides(overrides or [])
    grid = _deep_update(_mapping(doc.get("grid"), "grid"), _mapping(bench_sets.get("grid"), "grid"))
    for key in grid:
        if key not in GRID_KEYS:
            raise ConfigError(f"unknown benchmark key 'grid.{key}' (allowed: {', '.join(GRID_KEYS)})")

    if "base" in doc and "pretrain" in doc:
        raise ConfigError("benchmark config has both 'base' and 'pretrain'; give one")
    if "base" in doc:
        if not isinstance(doc["base"], str):
            raise ConfigError(f"benchmark key 'base' must be a file name, got {doc['base']!r}")
        values = read_config_file(path.parent / doc["base"], "base config") or {}
    else:  # input paths relative to the benchmark file's folder, as in a base config
        values = resolve_input_paths(_mapping(doc.get("pretrain"), "pretrain"), path.parent)
    base = config_from_dict(values)
    merge_values(base, resolve_input_paths(_mapping(doc.get("overrides"), "overrides"), path.parent), update_dicts=True)
    merge_values(base, pretrain_sets, update_dicts=True)

    methods = _unique_list(grid.get("methods"), "grid.methods", lambda m: isinstance(m, str), "method names")
    sources = parse_sources(grid.get("embeddings"))
    for m in methods:
        if split_method(m)[0] not in GRID_METHODS:
            raise ConfigError(f"unknown pruning method '{m}' in grid.methods (choose from {', '.join(GRID_METHODS)})")
        check_method_source(m, sources)
    rstar_rate = _rstar_of(base)
    if DEDUP in methods and rstar_rate is None:
        raise ConfigError(f"grid method '{DEDUP}' trains on the unique images of a redundant training set; "
                          "set data.redundancy.unique (and dup_fraction, copies) in the base config")
    if base.data.redundancy.dedup:
        raise ConfigError(f"data.redundancy.dedup is set for every run; list the grid method '{DEDUP}' instead")
    needs_rates = any(split_method(m)[0] not in (*RATELESS, DEDUP) for m in methods)
    rates = _rates(grid.get("rates"), "grid.rates", rstar_rate) if needs_rates or "rates" in grid else []
    seeds = _unique_list(grid.get("seeds", [base.seed]), "grid.seeds", _is_int, "integers")
    method_params = _mapping(grid.get("method_params"), "grid.method_params")
    for m, params in method_params.items():
        if m not in methods:
            raise ConfigError(f"grid.method_params names '{m}', which is not in grid.methods")
        if m in (SHORTER, DEDUP):
            raise ConfigError(f"grid.method_params names '{m}', which trains on full data and takes no pruning params")
        _mapping(params, f"grid.method_params.{m}")
    method_rates = _method_rates(_mapping(grid.get("method_rates"), "grid.method_rates"), methods, rates, rstar_rate)
    if SHORTER in methods and SHORTER not in method_rates:
        _check_shorter_rates(rates, "grid.rates")
    linear = bench_sets.get("linear_probe", doc.get("linear_probe", True))
    if not isinstance(linear, bool):
        raise ConfigError(f"benchmark key 'linear_probe' must be true or false, got {linear!r}")
    params = {m: dict(p or {}) for m, p in method_params.items()}
    return Benchmark(path, base, methods, rates, seeds, params, linear, method_rates, rstar_rate, sources)


def rstar(unique: int, n: int) -> float:
    """r* = 1 − U/N as the shortest decimal in [1 − U/N, 1 − (U − 1)/N), the rates whose pruning
    budget ⌈(1 − r)·N⌉ is exactly U (the pruner reads the decimal as typed): a fixed-K method at r*
    trains U samples an epoch, dedup's count, and the run ids stay short (``random-dynamic_r0.6_s0``)."""
    low, high = 1 - Fraction(unique, n), 1 - Fraction(unique - 1, n)
    digits = 1
    while (r := Fraction(math.ceil(low * 10**digits), 10**digits)) >= high:
        digits += 1
    return float(r)


def _rstar_of(base: Config) -> float | None:
    """r* of the base config's redundant training set, or None when it has none."""
    r = base.data.redundancy
    if r.unique is None:
        return None
    check_redundancy(base.data)  # before computing with the values
    return rstar(r.unique, redundant_size(r.unique, r.dup_fraction, r.copies))


def _rates(value: Any, key: str, rstar_rate: float | None) -> list[float]:
    """A list of rates, each a number or ``rstar`` (replaced by r*)."""
    listed = _unique_list(value, key, lambda r: _is_num(r) or r == RSTAR, f"numbers (or '{RSTAR}')")
    if RSTAR in listed and rstar_rate is None:
        raise ConfigError(f"benchmark key '{key}' has '{RSTAR}', the rate at dedup's compute; it needs a redundant "
                          "training set: set data.redundancy.unique in the base config")
    rates = [rstar_rate if r == RSTAR else float(r) for r in listed]
    for r in rates:  # NaN and inf reach no method's own check (shorter's epochs, a run name)
        if not math.isfinite(r):
            raise ConfigError(f"benchmark key '{key}' has rate {r}; a rate is a finite number in [0, 1)")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"benchmark key '{key}' lists r* = {rstar_rate:g} twice ('{RSTAR}' and its value)")
    return rates


def _method_rates(value: dict[str, Any], methods: list[str], rates: list[float],
                  rstar_rate: float | None) -> dict[str, list[float]]:
    """``grid.method_rates``: restrict a method to some of ``grid.rates`` (e.g. an ablation)."""
    out = {}
    for m, listed in value.items():
        key = f"grid.method_rates.{m}"
        if m not in methods:
            raise ConfigError(f"grid.method_rates names '{m}', which is not in grid.methods")
        if split_method(m)[0] in RATELESS:
            raise ConfigError(f"grid.method_rates names '{m}', which takes no pruning rate")
        if m == DEDUP:
            raise ConfigError(f"grid.method_rates names '{DEDUP}', whose rate is r* = {rstar_rate:g} (1 − U/N)")
        chosen = _rates(listed, key, rstar_rate)
        if m == SHORTER:
            _check_shorter_rates(chosen, key)
        for r in chosen:
            if r not in rates and m != SHORTER:
                raise ConfigError(f"benchmark key '{key}' has rate {r:g}, which is not in grid.rates {rates}")
        out[m] = chosen
    return out


def _check_shorter_rates(rates: list[float], key: str) -> None:
    """`shorter` trains (1 − r)·E epochs: a rate outside (0, 1) is no shorter run (−1.5: 2.5·E epochs)."""
    for r in rates:
        if not 0.0 < r < 1.0:
            raise ConfigError(f"benchmark key '{key}' has rate {r:g}; a shorter run needs 0 < r < 1")


def run_id(method: str, rate: float | None, seed: int) -> str:
    """Stable folder name of a run: ``emp_r0.7_s0``; rate-less methods: ``full_s0``. The rate is
    written short (``:g``) where that reads back as the same number, else in full, so that no two
    rates share a run (0.5 and 0.5000001: ``r0.5`` and ``r0.5000001``)."""
    if rate is None:
        return f"{method}_s{seed}"
    text = f"{rate:g}"
    return f"{method}_r{text if float(text) == rate else repr(float(rate))}_s{seed}"


def shorter_epochs(rate: float, epochs: int) -> int:
    """Epochs of the equal-compute run at rate r: (1 − r)·E rounded half up (Python's round() would
    round 7.5 down to even), at least one."""
    return max(1, math.floor((1.0 - rate) * epochs + 0.5 + 1e-9))


def compress_schedule(cfg: Config, epochs: int) -> None:
    """Shorten ``cfg`` to ``epochs`` with the same schedule *shape*: warm-up keeps its fraction of
    the run; LR and MoCo momentum follow the fraction of the run done, so they reach their end values."""
    cfg.optim.warmup_epochs = cfg.optim.warmup_epochs * epochs / cfg.epochs
    cfg.epochs = epochs


def _cells(bench: Benchmark) -> list[tuple[str, float | None]]:
    rateless = [m for m in bench.methods if split_method(m)[0] in RATELESS]
    cells: list[tuple[str, float | None]] = [(m, None) for m in rateless]
    cells += [(m, r) for r in bench.rates for m in bench.methods
              if m not in (*rateless, DEDUP) and r in bench.method_rates.get(m, bench.rates)]
    extra = [r for r in bench.method_rates.get(SHORTER, []) if r not in bench.rates]
    cells += [(SHORTER, r) for r in extra if SHORTER in bench.methods]
    return cells + ([(DEDUP, bench.rstar)] if DEDUP in bench.methods else [])


def expand_grid(bench: Benchmark, output_dir: str | Path) -> list[RunSpec]:
    """All runs, seed-major so a partial sweep holds whole seeds: per seed the rate-less methods
    (full, infobatch), then each rate in the listed order with every method at that rate, then
    `shorter` at its rates outside grid.rates, then `dedup` at r*.

    A method listed in ``grid.method_rates`` runs at those rates only. Every run's config is
    finalized here, before anything runs, which checks its pruning method, rate and params.
    """
    runs = []
    r = bench.base.data.redundancy
    redundant_n = None if r.unique is None else redundant_size(r.unique, r.dup_fraction, r.copies)
    for seed in bench.seeds:
        for method, rate in _cells(bench):
            rid = run_id(method, rate, seed)
            cfg = copy.deepcopy(bench.base)
            cfg.seed = seed
            if method == SHORTER:
                assert rate is not None  # _cells gives `shorter` a rate
                cfg.pruning.method, cfg.pruning.rate = FULL_DATA, 0.0
                compress_schedule(cfg, shorter_epochs(rate, bench.base.epochs))
            elif method == DEDUP:  # the same E, the same clean bank: only the copies are gone
                cfg.pruning.method, cfg.pruning.rate = FULL_DATA, 0.0
                cfg.data.redundancy.dedup = True
            else:
                cfg.pruning.method, source = split_method(method)
                cfg.pruning.rate = 0.0 if rate is None else rate
                cfg.pruning.params = {**cfg.pruning.params, **bench.method_params.get(method, {})}
                if source is not None:  # computed and cached by the sweep before the run starts
                    cfg.pruning.embeddings = str(bench.embeddings[source].array(output_dir, seed))
            cfg.output_dir = str(BenchmarkLayout(output_dir).run(rid).dir)
            cfg.progress = False  # per-epoch lines only; bars across dozens of runs are noise in a log
            try:
                finalize(cfg)  # checks pruning.method/rate/params: ssl_emp.pruning.validate_params
            except ConfigError as exc:
                raise ConfigError(f"run {rid}: {exc}") from exc
            runs.append(RunSpec(rid, method, 0.0 if method == FULL_DATA else rate, seed, cfg, bench.base.epochs,
                                budget_samples=redundant_n if method == DEDUP else None,
                                embed_source=split_method(method)[1]))
    return runs
