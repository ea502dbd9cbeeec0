"""Run configuration: typed sections, YAML files, ``--set key=value`` overrides, validation.

The sections and the generic helpers (merging, diffs, saving, ``--set`` parsing) live in
``ssl_emp.settings`` and are re-exported here, so ``from ssl_emp.config import Config`` is the one
import users need. This module adds loading and validation. Validation asks the module that
implements each setting which values exist: the models (``ssl_emp.models``, with their own table
of ``model.*`` keys), the data sets (``ssl_emp.data.load``), the view presets (``ssl_emp.augment``),
the optimizers and devices (``ssl_emp.runtime``) and the pruning methods (``ssl_emp.pruning.params``).
Those modules import their sections from ``ssl_emp.settings``, never from here: no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_emp.augment import PRESET_NAMES, SUPERVISED_KNOBS, VIEW_KNOBS
from ssl_emp.curate.params import check_curate
from ssl_emp.data.load import DATASETS, dataset_spec
from ssl_emp.errors import ConfigError
from ssl_emp.models import MODELS, model_keys, validate_model_config
from ssl_emp.pruning.curation import check_embeddings_setting
from ssl_emp.pruning.params import validate_params
from ssl_emp.pruning.registry import method_spec
from ssl_emp.runtime import DEVICES, OPTIMIZERS
from ssl_emp.settings import (
    MAX_YAML_BYTES,
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
    parse_yaml,
    read_yaml,
    redundant_size,
    save_config,
)

__all__ = [
    "MAX_LR", "MAX_YAML_BYTES", "AugmentConfig", "Config", "DataConfig", "EvalConfig", "LoggingConfig",
    "ModelConfig", "OptimConfig", "PruningConfig", "RedundancyConfig", "check_redundancy", "check_types",
    "config_diff", "config_from_dict", "duplicated_count", "finalize", "load_config", "merge_values",
    "parse_override", "parse_yaml", "read_yaml", "redundant_size", "save_config", "validate",
]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides (values parsed as YAML)."""
    values = read_yaml(path) if path is not None else None
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


# optim.lr is per 256 images (SimCLR's LARS uses 0.3, its square-root rule 0.075 x sqrt(B)); a
# rate far above that diverges on the first step, and 1e300 does not even fit torch's float32
# parameter update (a traceback from inside the optimizer).
MAX_LR = 100.0


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
    if not spec.reads_files:
        with_files = "|".join(name for name, s in DATASETS.items() if s.reads_files)
        _require(d.data_dir is None,
                 f"data.data_dir ({d.data_dir}) is set but dataset '{d.dataset}' is embedded and reads no files; "
                 f"choose the data set with --set data.dataset={with_files}")
    if d.train_split not in spec.train_splits:
        others = [f"'{split}' for {name}" for name, other in DATASETS.items() for split in other.train_splits
                  if split != "train"]
        raise ConfigError(f"data.train_split must be 'train' (or {', '.join(others)}), got {d.train_split!r}")
    _require(is_int(d.image_size) and d.image_size >= 8, f"data.image_size must be an integer >= 8, got {d.image_size!r}")
    _require(d.store_size is None or (is_int(d.store_size) and is_int(d.image_size) and d.store_size >= d.image_size),
             f"data.store_size must be null or an integer >= data.image_size ({d.image_size}), got {d.store_size!r}")
    for name in ("train_subset", "test_subset"):
        value = getattr(d, name)
        _require(value is None or (is_int(value) and value > 0), f"data.{name} must be a positive integer, got {value!r}")
    _require(is_int(d.train_subset_offset) and d.train_subset_offset >= 0,
             f"data.train_subset_offset must be an integer >= 0, got {d.train_subset_offset!r}")
    _require(d.train_subset_offset == 0 or d.train_subset is not None,
             "data.train_subset_offset needs data.train_subset (the number of images to keep after it)")
    _require(is_number(d.val_fraction) and 0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction!r}")
    _require(is_number(d.inject_noise) and 0 <= d.inject_noise < 1, f"data.inject_noise must be in [0, 1), got {d.inject_noise!r}")
    _require(is_int(d.num_workers) and d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers!r}")
    check_redundancy(d)


def _check_augment(a: AugmentConfig) -> None:
    _choice(a.preset, PRESET_NAMES, "augment.preset")
    if a.preset == "supervised":
        extra = [f"augment.{k}" for k in VIEW_KNOBS if k not in SUPERVISED_KNOBS and getattr(a, k) is not None]
        _require(not extra, f"augment.preset 'supervised' takes only {', '.join(SUPERVISED_KNOBS)}; "
                 f"unset {', '.join(extra)}")
    for name in ("cj_prob", "gray_prob", "blur_prob", "hflip_prob", "rotate_prob"):
        value = getattr(a, name)
        _require(value is None or (is_number(value) and 0 <= value <= 1), f"augment.{name} must be in [0, 1], got {value!r}")
    _require(a.min_scale is None or (is_number(a.min_scale) and 0 < a.min_scale <= 1), f"augment.min_scale must be in (0, 1], got {a.min_scale!r}")
    _require(a.rotate_degrees is None or (is_number(a.rotate_degrees) and 0 <= a.rotate_degrees <= 180), f"augment.rotate_degrees must be in [0, 180], got {a.rotate_degrees!r}")
    _require(a.cj_strength is None or (is_number(a.cj_strength) and a.cj_strength >= 0), f"augment.cj_strength must be >= 0, got {a.cj_strength!r}")
    _require(isinstance(a.mean, list) and len(a.mean) == 3 and all(is_number(x) for x in a.mean),
             f"augment.mean must be 3 numbers, got {a.mean!r}")
    _require(isinstance(a.std, list) and len(a.std) == 3 and all(is_number(x) and x > 0 for x in a.std),
             f"augment.std must be 3 numbers > 0, got {a.std!r}")


def _check_optim(o: OptimConfig, epochs: int) -> None:
    _choice(o.name, OPTIMIZERS, "optimizer")
    _require(is_number(o.lr) and 0 < o.lr <= MAX_LR, f"optim.lr must be in (0, {MAX_LR:g}], got {o.lr!r}")
    _require(is_number(o.weight_decay) and o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay!r}")
    _require(is_number(o.momentum) and 0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum!r}")
    _require(is_int(o.batch_size) and o.batch_size >= 2, f"optim.batch_size must be an integer >= 2, got {o.batch_size!r}")
    _require(is_number(o.warmup_epochs) and 0 <= o.warmup_epochs <= epochs, f"optim.warmup_epochs must be in [0, epochs], got {o.warmup_epochs!r}")


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the key and the value."""
    model_keys(cfg.algorithm)  # an unknown algorithm first: its model's keys are checked below
    _require(is_int(cfg.epochs) and cfg.epochs > 0, f"epochs must be a positive integer, got {cfg.epochs!r}")
    _require(is_int(cfg.seed) and 0 <= cfg.seed < 2**63, f"seed must be an integer in [0, 2^63), got {cfg.seed!r}")
    _choice(cfg.device, DEVICES, "device")
    _require(is_int(cfg.log_every) and cfg.log_every > 0, f"log_every must be > 0, got {cfg.log_every!r}")
    _check_data(cfg.data)
    _check_augment(cfg.augment)
    validate_model_config(cfg.algorithm, cfg.model)  # the models' own table of model.* keys
    _check_optim(cfg.optim, cfg.epochs)
    p = cfg.pruning
    _require(isinstance(p.params, dict), "pruning.params must be a mapping")
    validate_params(p.method, p.rate, p.params, section="pruning")  # the pruner's own table of params
    check_embeddings_setting(p.method, p.embeddings, method_spec(p.method).inputs)
    e = cfg.eval
    _require(is_int(e.eval_every) and e.eval_every >= 0, f"eval.eval_every must be >= 0, got {e.eval_every!r}")
    _require(is_int(e.knn_k) and e.knn_k > 0, f"eval.knn_k must be a positive integer, got {e.knn_k!r}")
    _require(is_number(e.knn_temperature) and e.knn_temperature > 0, f"eval.knn_temperature must be > 0, got {e.knn_temperature!r}")
    _require(is_int(e.batch_size) and e.batch_size > 0, f"eval.batch_size must be a positive integer, got {e.batch_size!r}")
    check_curate(cfg.curate)
