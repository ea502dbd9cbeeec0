"""Run configuration: typed sections, YAML files, ``--set key=value`` overrides, validation.

The sections and the generic helpers (merging, diffs, saving, ``--set`` parsing) live in
``ssl_emp.settings`` and are re-exported here, so ``from ssl_emp.config import Config`` is the one
import users need. This module adds loading and validation. Validation asks the module that
implements each setting which values exist: the models (``ssl_emp.models``, with their own table
of ``model.*`` keys), the data sets (``ssl_emp.data.registry``), the view presets (``ssl_emp.augment``),
the optimizers and devices (``ssl_emp.runtime``) and the pruning methods (``ssl_emp.pruning.params``).
Those modules import their sections from ``ssl_emp.settings``, never from here: no import cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_emp.augment import PRESET_NAMES, SUPERVISED_KNOBS, VIEW_KNOBS
from ssl_emp.curate.params import METHODS as CURATE_METHODS
from ssl_emp.curate.params import check_curate
from ssl_emp.data.dali import BACKENDS, dali_module
from ssl_emp.data.registry import DATASETS, dataset_spec
from ssl_emp.errors import ConfigError
from ssl_emp.models import MODELS, model_keys, validate_model_config
from ssl_emp.pruning.curation import check_embeddings_setting
from ssl_emp.pruning.params import validate_params
from ssl_emp.pruning.registry import METHODS, method_spec
from ssl_emp.runtime import DEVICES, OPTIMIZERS
from ssl_emp.settings import (
    INPUT_PATHS,
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    PruningConfig,
    RedundancyConfig,
    check_types,
    config_diff,
    config_from_dict,
    duplicated_count,
    is_int,
    is_number,
    merge_values,
    parse_override,
    redundant_size,
    resolve_input_paths,
    save_config,
)
from ssl_emp.yaml_io import MAX_YAML_BYTES, parse_yaml, read_yaml

__all__ = [
    "CHOICES", "INPUT_PATHS", "MAX_LR", "MAX_YAML_BYTES", "RANGES", "Range", "AugmentConfig", "Config", "DataConfig", "EvalConfig", "LoggingConfig",
    "ModelConfig", "OptimConfig", "PruningConfig", "RedundancyConfig", "check_redundancy", "check_types",
    "config_diff", "config_from_dict", "duplicated_count", "finalize", "load_config", "merge_values",
    "key_value", "parse_override", "parse_yaml", "read_config_file", "read_yaml", "redundant_size",
    "resolve_input_paths", "save_config", "validate",
]


def read_config_file(path: str | Path, what: str = "config file", relative_to: str | Path | None = None) -> Any:
    """A config file's YAML (``read_yaml``) with its relative ``INPUT_PATHS`` resolved against
    ``relative_to`` (default: the file's own folder)."""
    values = read_yaml(path, what)
    if not isinstance(values, dict):
        return values  # config_from_dict names the problem
    return resolve_input_paths(values, Path(path).parent if relative_to is None else relative_to)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                relative_to: str | Path | None = None) -> Config:
    """Defaults, then the YAML file (``read_config_file``: its input paths relative to its folder, or to
    ``relative_to``), then ``key=value`` overrides (values parsed as YAML, paths relative to the current folder)."""
    values = read_config_file(path, relative_to=relative_to) if path is not None else None
    cfg = config_from_dict(values)
    for item in overrides or []:
        parts, nested = parse_override(item)
        for part in reversed(parts):
            nested = {part: nested}
        merge_values(cfg, nested, update_dicts=True)
    return finalize(cfg)


def finalize(cfg: Config) -> Config:
    """Check the types (a config built in Python, too), resolve ``auto`` values from the rest of the
    config, then validate."""
    check_types(cfg)
    if cfg.augment.preset == "auto":
        auto = "digits" if cfg.data.dataset == "digits" else MODELS[cfg.algorithm].augment_preset if cfg.algorithm in MODELS else "simclr"
        cfg.augment.preset = auto
    validate(cfg)
    return cfg


@dataclass(frozen=True)
class Range:
    """A key's valid values: a predicate and their description, for messages and the reference."""

    check: Callable[[Any], bool]
    text: str


def _int(low: int, high: float = math.inf, text: str | None = None, nullable: bool = False) -> Range:
    words = text or (f"an integer >= {low}" if high == math.inf else f"an integer in [{low}, {high}]")
    return Range(lambda x: (nullable and x is None) or (is_int(x) and low <= x <= high),
                 f"{words} or null" if nullable else words)


def _real(text: str, check: Callable[[float], bool], nullable: bool = False) -> Range:
    return Range(lambda x: (nullable and x is None) or (is_number(x) and check(x)),
                 f"{text} or null" if nullable else text)


def _triple(positive: bool) -> Range:
    return Range(lambda x: isinstance(x, list) and len(x) == 3 and all(is_number(v) and (v > 0 or not positive)
                                                                        for v in x),
                 "3 numbers > 0" if positive else "3 numbers")


# optim.lr is per 256 images (SimCLR's LARS uses 0.3, its square-root rule 0.075 x sqrt(B)); a
# rate far above that diverges on the first step, and 1e300 does not even fit torch's float32
# parameter update (a traceback from inside the optimizer).
MAX_LR = 100.0
_PROBABILITY = _real("in [0, 1]", lambda x: 0 <= x <= 1, nullable=True)

#: The valid values of the keys a range describes, checked by ``validate`` (dotted key -> Range); the
#: keys whose values are names of a registry are in ``CHOICES``, the model's in
#: ``ssl_emp.models.registry.MODEL_PARAMS``, the pruning parameters in ``ssl_emp.pruning.PARAMS``; rules
#: between keys are code below.
RANGES: dict[str, Range] = {
    "epochs": _int(1, text="a positive integer"),
    "seed": _int(0, 2**63 - 1, text="an integer in [0, 2^63)"),
    "threads": _int(1, nullable=True),
    "log_every": _int(1, text="a positive integer"),
    "data.image_size": _int(8),
    "data.train_subset": _int(1, text="a positive integer", nullable=True),
    "data.test_subset": _int(1, text="a positive integer", nullable=True),
    "data.train_subset_offset": _int(0),
    "data.val_fraction": _real("in [0, 1)", lambda x: 0 <= x < 1),
    "data.inject_noise": _real("in [0, 1)", lambda x: 0 <= x < 1),
    "data.num_workers": _int(0),
    **{f"augment.{name}": _PROBABILITY for name in ("cj_prob", "gray_prob", "blur_prob", "hflip_prob", "rotate_prob")},
    "augment.min_scale": _real("in (0, 1]", lambda x: 0 < x <= 1, nullable=True),
    "augment.rotate_degrees": _real("in [0, 180]", lambda x: 0 <= x <= 180, nullable=True),
    "augment.cj_strength": _real(">= 0", lambda x: x >= 0, nullable=True),
    "augment.mean": _triple(positive=False),
    "augment.std": _triple(positive=True),
    "optim.lr": _real(f"in (0, {MAX_LR:g}]", lambda x: 0 < x <= MAX_LR),
    "optim.weight_decay": _real(">= 0", lambda x: x >= 0),
    "optim.momentum": _real("in [0, 1)", lambda x: 0 <= x < 1),
    "optim.batch_size": _int(2),
    "optim.warmup_epochs": _real("in [0, epochs]", lambda x: x >= 0),  # <= epochs: in _check_optim
    "eval.eval_every": _int(0),
    "eval.knn_k": _int(1, text="a positive integer"),
    "eval.knn_temperature": _real("> 0", lambda x: x > 0),
    "eval.batch_size": _int(1, text="a positive integer"),
}

#: Keys whose value is a name from a registry: key -> the names.
CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": tuple(MODELS), "device": DEVICES, "data.dataset": tuple(DATASETS), "augment.preset": PRESET_NAMES,
    "optim.name": OPTIMIZERS, "pruning.method": METHODS, "curate.method": tuple(CURATE_METHODS),
    "data.backend": BACKENDS,
}


def key_value(cfg: Config, key: str) -> Any:
    """The value of dotted ``key`` in ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(cfg: Config) -> None:
    for key, valid in RANGES.items():
        value = key_value(cfg, key)
        _require(valid.check(value), f"{key} must be {valid.text}, got {value!r}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(value: object, names: tuple[str, ...] | dict[str, Any], what: str) -> None:
    _require(value in names, f"unknown {what} '{value}' (choose from {', '.join(names)})")


def check_redundancy(d: DataConfig) -> None:
    """Refuse a redundancy design that cannot be built; the split's size is checked when it is loaded."""
    r = d.redundancy
    _require(isinstance(r.near, bool) and isinstance(r.dedup, bool),
             "data.redundancy.near and data.redundancy.dedup must be true or false")
    if r.unique is None:
        _require(not r.dedup, "data.redundancy.dedup needs a redundant training set: set data.redundancy.unique")
        return
    _require(is_int(r.unique) and r.unique > 0, f"data.redundancy.unique must be a positive integer, got {r.unique!r}")
    _require(is_number(r.dup_fraction) and 0 <= r.dup_fraction <= 1,
             f"data.redundancy.dup_fraction must be in [0, 1], got {r.dup_fraction!r}")
    _require(is_int(r.copies) and r.copies >= 2, f"data.redundancy.copies must be an integer >= 2, got {r.copies!r}")
    _require(duplicated_count(r.unique, r.dup_fraction) > 0,
             f"data.redundancy.dup_fraction={r.dup_fraction} of unique={r.unique} duplicates no image "
             "(⌊d·U⌋ = 0); raise either, or unset data.redundancy.unique")
    _require(d.in_memory, "data.redundancy needs the training images held in memory (data.in_memory=true)")
    _require(d.train_split == "train", "data.redundancy needs data.train_split=train: the kNN bank is its unique "
             "labelled images")
    # Junk among copies would be junk repeated or junk unlike its own copies: either confounds both probes.
    _require(d.inject_noise == 0, "data.redundancy and data.inject_noise are two probes; use one at a time")


def _check_data(d: DataConfig) -> None:
    spec = dataset_spec(d.dataset)
    _choice(d.backend, CHOICES["data.backend"], "data.backend")
    if not spec.reads_files:
        with_files = "|".join(name for name, s in DATASETS.items() if s.reads_files)
        _require(d.data_dir is None,
                 f"data.data_dir ({d.data_dir}) is set but dataset '{d.dataset}' is embedded and reads no files; "
                 f"choose the data set with --set data.dataset={with_files}")
    if d.train_split not in spec.train_splits:
        others = [f"'{split}' for {name}" for name, other in DATASETS.items() for split in other.train_splits
                  if split != "train"]
        raise ConfigError(f"data.train_split must be 'train' (or {', '.join(others)}), got {d.train_split!r}")
    _require(d.store_size is None or (is_int(d.store_size) and is_int(d.image_size) and d.store_size >= d.image_size),
             f"data.store_size must be null or an integer >= data.image_size ({d.image_size}), got {d.store_size!r}")
    _require(d.backend != "dali" or (d.dataset == "imagefolder" and not d.in_memory),
             f"data.backend=dali reads an image folder's files from disk: set data.dataset=imagefolder and "
             f"data.in_memory=false (got dataset {d.dataset!r}, in_memory {d.in_memory})")
    if d.backend == "dali":
        dali_module()  # installed: said before any data is read
    _require(d.train_subset_offset == 0 or d.train_subset is not None,
             "data.train_subset_offset needs data.train_subset (the number of images to keep after it)")
    check_redundancy(d)


def _check_augment(a: AugmentConfig) -> None:
    _choice(a.preset, CHOICES["augment.preset"], "augment.preset")
    if a.preset == "supervised":
        extra = [f"augment.{k}" for k in VIEW_KNOBS if k not in SUPERVISED_KNOBS and getattr(a, k) is not None]
        _require(not extra, f"augment.preset 'supervised' takes only {', '.join(SUPERVISED_KNOBS)}; "
                 f"unset {', '.join(extra)}")


def _check_optim(o: OptimConfig, epochs: int) -> None:
    _choice(o.name, CHOICES["optim.name"], "optimizer")
    _require(o.warmup_epochs <= epochs, f"optim.warmup_epochs must be in [0, epochs], got {o.warmup_epochs!r}")


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the key and the value."""
    model_keys(cfg.algorithm)  # an unknown algorithm first: its model's keys are checked below
    _check_ranges(cfg)
    _choice(cfg.device, CHOICES["device"], "device")
    _check_data(cfg.data)
    _check_augment(cfg.augment)
    validate_model_config(cfg.algorithm, cfg.model)  # the models' own table of model.* keys
    _check_optim(cfg.optim, cfg.epochs)
    p = cfg.pruning
    _require(isinstance(p.params, dict), "pruning.params must be a mapping")
    validate_params(p.method, p.rate, p.params, section="pruning")  # the pruner's own table of params
    check_embeddings_setting(p.method, p.embeddings, method_spec(p.method).inputs)
    check_curate(cfg.curate)
