"""Run settings: the typed config sections and the generic helpers that build, merge, compare and save them.

A config file holds only the keys it changes; everything else keeps the defaults below, which are
the embedded default run (digits, SimCLR, CPU). What a value may be is not decided here but by
``ssl_emp.config.validate``, which asks the modules that implement each setting (models, data
sets, presets, optimizers, pruning methods). This module imports none of them, so every one of
them can import its section's dataclass from here without an import cycle; ``ssl_emp.config``
re-exports everything for users.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ssl_emp.errors import ConfigError
from ssl_emp.run.files import atomic_write_text
from ssl_emp.yaml_io import parse_yaml


@dataclass
class RedundancyConfig:
    """Redundancy probe (docs/method.md): train on ``unique`` images of the split, ⌊dup_fraction · unique⌋
    of them present ``copies`` times in all; off while ``unique`` is None."""

    unique: int | None = None  # U, a positive integer: images drawn (fixed, seed 0) from the training split; null: off
    dup_fraction: float = 0.5  # d, in [0, 1]: the share of the U images that is duplicated
    copies: int = 4  # c, an integer >= 2: occurrences of each duplicated image, the original included
    # Extra copies as near-copies (one fixed mild crop + brightness/contrast each, data.py says why
    # how mild) instead of exact ones: redundancy that no byte comparison finds.
    near: bool = False
    # The dedup oracle: train on the U unique images alone (the benchmark's grid method `dedup` sets it).
    dedup: bool = False


@dataclass
class DataConfig:
    dataset: str = "digits"  # the data set, a name of ssl_emp.data.registry.DATASETS
    data_dir: str | None = None  # its folder (or .tar/.tar.gz of an image-folder tree); embedded sets read none
    download: bool = False  # torchvision sets only, and only when asked
    image_size: int = 16  # side in pixels of the training views and of the evaluation view
    # Images larger than image_size keep their aspect ratio, their shorter side cut to this many
    # pixels (FFCV's max_resolution; null: full size); views are cropped from them (ssl_emp.data.views).
    store_size: int | None = None
    train_split: str = "train"  # stl10: "train+unlabeled" trains on the unlabelled images too
    train_subset: int | None = None  # keep a fixed random subset of N training images (null: all)
    # Skip this many images of that fixed order first: offset 10000 with train_subset 10000 gives a
    # subset disjoint from the default one (an encoder trained on images the protocol never sees).
    train_subset_offset: int = 0
    test_subset: int | None = None  # keep a fixed random subset of N test images (null: all)
    # Hold out this fraction of the training images (fixed, stratified) as the split the kNN
    # monitor scores on instead of the test split: for tuning without looking at the test set.
    val_fraction: float = 0.0
    # Junk probe: replace this fixed fraction of the training images by pixel-shuffled copies
    # (marked; the kNN bank stays clean) to see which way a score moves them (benchmarks/README.md).
    inject_noise: float = 0.0
    redundancy: RedundancyConfig = field(default_factory=RedundancyConfig)
    in_memory: bool = True  # hold decoded uint8 images in RAM (small-image sets)
    cache_dir: str | None = None  # decoded-image cache; default ~/.cache/ssl-emp/decoded
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    # The training input of photographs: "torch" (views cut in the DataLoader workers, ssl_emp.data.views)
    # or "dali" (NVIDIA DALI decodes each view's crop, on the GPU with CUDA; an image folder read from
    # disk, data.in_memory=false; the ssl-emp[dali] extra; data.num_workers is then DALI's threads).
    backend: str = "torch"
    # Train on these training images only: a kept.txt of `ssl-emp curate` (its indices, the data's fingerprint).
    keep_file: str | None = None
    # data.dataset: hf (Hugging Face datasets; data_dir: a save_to_disk folder or a hub name):
    hf_image_column: str = "image"  # the column of images
    hf_label_column: str | None = "label"  # the column of class labels (ClassLabel or values); null: none
    hf_train_split: str = "train"  # the split pretraining and the kNN bank read
    hf_test_split: str = "test"  # the split the kNN monitor and eval score on


@dataclass
class AugmentConfig:
    """View pipeline; ``None`` takes the preset's value (lightly's SimCLR / MoCo v2 transforms)."""

    # a name of ssl_emp.augment.PRESET_NAMES; auto: digits for digits, else the algorithm's
    preset: str = "auto"
    min_scale: float | None = None  # smallest random-resized-crop area, as a fraction of the image
    cj_prob: float | None = None  # probability of colour jitter
    cj_strength: float | None = None  # colour-jitter strength s: scales the preset's jitter (simclr: 0.8 s brightness, ...)
    gray_prob: float | None = None  # probability of converting a view to grayscale
    blur_prob: float | None = None  # probability of Gaussian blur
    hflip_prob: float | None = None  # probability of a horizontal flip
    rotate_prob: float | None = None  # probability of a random rotation (lightly's rr_prob)
    rotate_degrees: float | None = None  # its largest angle (lightly's rr_degrees)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # per-channel normalisation mean
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])  # per-channel normalisation std


@dataclass
class ModelConfig:
    """The encoder and its objective. Which model reads which key, and the valid ranges:
    ``ssl_emp.models.registry.MODEL_PARAMS``."""

    backbone: str = "resnet18"
    # A narrow one-block-per-stage ResNet: the CPU-friendly default.
    backbone_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    )
    cifar_stem: bool = True  # 3x3 stride-1 stem without max-pool (small images); false: timm's standard stem
    proj_hidden_dim: int = 512
    proj_out_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 4096  # MoCo negatives
    momentum_start: float = 0.99  # MoCo momentum, cosine schedule to momentum_end
    momentum_end: float = 1.0
    gather_distributed: bool = True  # DDP: SimCLR negatives / MoCo queue keys from all ranks
    channels_last: bool = True  # NHWC encoder and views (faster convolutions)
    compile: bool = False  # torch.compile the model


@dataclass
class OptimConfig:
    name: str = "sgd"  # the optimizer, a name of ssl_emp.runtime.OPTIMIZERS
    lr: float = 0.3  # learning rate for a batch of 256; scaled linearly with batch_size
    weight_decay: float = 5e-4  # L2 weight decay (not on norms and biases)
    momentum: float = 0.9  # SGD / LARS momentum
    warmup_epochs: float = 0.0  # linear warm-up, in [0, epochs] (may be fractional), then cosine decay
    batch_size: int = 64  # images per step (per process under DDP)


@dataclass
class PruningConfig:
    method: str = "full"  # the pruning method, a name of ssl_emp.pruning.METHODS
    rate: float = 0.0  # fraction of the training set left out each epoch, in [0, 0.95] (methods setting their own: ignored)
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters (table below): name -> value
    # Per-sample embeddings (a .npy of the training split, with the .json curate writes beside it) for
    # the methods that read them (ssl_emp.pruning.curation: semdedup, prototypes, ...).
    embeddings: str | None = None


@dataclass
class EvalConfig:
    eval_every: int = 5  # kNN monitor every N epochs (and at epoch 0); 0 = only at the end
    knn_k: int = 200  # kNN neighbours
    knn_temperature: float = 0.1  # kNN vote temperature (weights exp(sim / T))
    batch_size: int = 512  # images per forward pass when embedding for evaluation


@dataclass
class LoggingConfig:
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard (ssl-emp[tensorboard])


@dataclass
class CurateConfig:
    """``ssl-emp curate``: SemDeDup (Abbas et al. 2023) or self-supervised prototypes (Sorscher et al.
    2022) on the encoder's embeddings; ranges: ``ssl_emp.curate.params``."""

    method: str = "semdedup"  # semdedup | prototypes
    # SemDeDup, in (0, 1): a duplicate has cosine > 1 - eps to an earlier member of its cluster; null:
    # the end of the kept-fraction curve's flattest stretch over eps_range (plateau_eps), which removes
    # exact copies whole and little else (benchmarks/README.md, "Curation")
    eps: float | None = None
    k: int = 10  # k-means clusters, an integer >= 1
    iterations: int = 100  # k-means iterations, >= 1 (the official SemDeDup's niter)
    seed: int = 0  # k-means initialisation; keep=random's shuffle; in [0, 2^31)
    keep: str = "hard"  # semdedup: which member of a group survives (hard | easy | random); prototypes: hard | easy
    rate: float = 0.5  # prototypes: the fraction of the training images removed, in [0, 1)
    quota: int = 0  # prototypes: every cluster keeps at least this many images (>= 0)
    # The kept fraction is reported against each of these eps (how to choose eps), each in (0, 1)
    eps_range: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    block_size: int = 4096  # SemDeDup: rows of a cluster's similarity matrix computed at a time (>= 1)


@dataclass
class Config:
    algorithm: str = "simclr"  # a name of ssl_emp.models.MODELS (supervised: the positive control)
    epochs: int = 20  # training epochs
    seed: int = 0  # seed of the weights, views, data order and pruning
    device: str = "auto"  # a name of ssl_emp.runtime.DEVICES
    # CPU threads (torch and faiss); null: OMP_NUM_THREADS if set, else one per core this process may
    # use (os.sched_getaffinity). Several jobs on one machine: 1 each (docs/guide/performance.md).
    threads: int | None = None
    output_dir: str = "runs/pretrain"  # the run folder; relative paths are relative to the current folder
    progress: bool = True  # show a progress bar
    log_every: int = 10  # steps between progress-bar / CSV updates (each one syncs the device)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)


#: Keys naming files a run reads. In a config file a relative one is relative to the file's folder,
#: so a config works from any folder; output_dir and data.cache_dir, which a run writes, and every
#: path given on the command line stay relative to the current folder.
INPUT_PATHS: tuple[str, ...] = ("data.data_dir", "data.keep_file", "pruning.embeddings")


def resolve_input_paths(values: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """A config file's mapping with its relative ``INPUT_PATHS`` joined to ``folder`` (made absolute);
    ``~`` paths, absolute ones and values of other types are left as they are."""
    out = dict(values)
    for key in INPUT_PATHS:
        *sections, name = key.split(".")
        node = out
        for section in sections:
            if not isinstance(node.get(section), dict):
                break
            node[section] = node = dict(node[section])  # a copy: the caller's mapping stays as read
        else:
            value = node.get(name)
            if isinstance(value, str) and value and not value.startswith("~") and not os.path.isabs(value):
                node[name] = os.path.normpath(os.path.join(os.path.abspath(folder), value))
    return out


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("backbone_kwargs", "params"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(saved: dict[str, Any], wanted: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys in which two config dicts (``asdict(Config)``) differ, as ``section.key (saved ->
    wanted)``, sorted; keys in ``ignore`` (dotted; a section's name: all its keys) aside. The one config
    diff: resume checks and benchmark folders both use it."""
    # A key a config lacks was added to Config after it was written; its default keeps the
    # earlier behaviour, so a run or sweep started before the field existed can still be resumed.
    defaults = _flat(dataclasses.asdict(Config()))
    a, b = {**defaults, **_flat(saved)}, {**defaults, **_flat(wanted)}
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if k not in ignore and k.split(".")[0] not in ignore and a.get(k) != b.get(k)]


def merge_values(obj: Any, values: dict[str, Any], prefix: str = "", update_dicts: bool = False) -> None:
    """Set a config dataclass's fields from a nested mapping, in place, checking keys and types.

    ``prefix`` names the section in messages; with ``update_dicts`` a dict-valued field is updated
    entry by entry (what ``--set`` does) instead of replaced.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown_key(obj, prefix, key))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge_values(current, value, f"{prefix}{key}.", update_dicts)
        elif update_dicts and isinstance(current, dict) and isinstance(value, dict):
            setattr(obj, key, {**current, **value})  # --set a.b.c=1 changes one entry of dict a.b
        else:
            value = _coerce(value, str(fields[key].type))
            _check_type(value, str(fields[key].type), f"{prefix}{key}")
            setattr(obj, key, value)


def _unknown_key(obj: Any, prefix: str, key: str) -> str:
    """``unknown config key 'optim.lrr'; did you mean optim.lr? (optim keys: ...)``: the section's close
    matches (difflib) or, at the top level, the sections that have the key."""
    names = [f.name for f in dataclasses.fields(obj)]
    close = [f"{prefix}{n}" for n in difflib.get_close_matches(str(key), names, n=3)]
    if not prefix:
        close += [k for k in _flat(dataclasses.asdict(Config())) if k.rsplit(".", 1)[-1] == key]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key '{prefix}{key}'{hint} ({prefix.rstrip('.') or 'top-level'} keys: {', '.join(names)})"


_TYPE_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "None": "null", "list[float]": "a list of numbers", "dict[str, Any]": "a mapping"}


def _type_ok(value: Any, option: str) -> bool:
    checks = {
        "None": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "int": is_int,
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "list[float]": lambda v: isinstance(v, list) and all(is_number(x) for x in v),
        "dict[str, Any]": lambda v: isinstance(v, dict),
    }
    return checks[option](value) if option in checks else True


def _check_type(value: Any, annotation: str, key: str) -> None:
    """Reject a value of the wrong type here, naming the key, before anything computes with it."""
    options = [a.strip() for a in annotation.split("|")]
    if not any(_type_ok(value, opt) for opt in options):
        expected = " or ".join(_TYPE_NAMES.get(opt, opt) for opt in options)
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _coerce(value: Any, annotation: str) -> Any:
    # YAML 1.1 reads "1e-4" (no dot) as a string; accept it wherever a float is expected.
    if isinstance(value, str) and "float" in annotation:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _plain(value: Any) -> Any:
    """What a Python caller obviously means, in the types YAML saves: a path as its string, a numpy
    scalar as the Python number, a tuple or array as a list (recursively inside lists and mappings)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_types(cfg: Config) -> None:
    """Check, in place, a ``Config`` built or edited in Python (``pretrain(cfg)``), before anything is
    written: every section is its dataclass, every value of its declared type after ``_plain``
    (``pathlib.Path``, numpy scalars); one-line ConfigErrors naming the key. Files and ``--set`` get
    the same checks from ``merge_values``."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected an ssl_emp.config.Config, got {type(cfg).__name__}")
    _check_section(cfg, "")


def _check_section(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        section = f.default_factory
        if isinstance(section, type) and dataclasses.is_dataclass(section):
            if not isinstance(value, section):
                raise ConfigError(f"cfg.{key} must be an ssl_emp.config.{section.__name__}, got {type(value).__name__}: "
                                  f"set its fields (cfg.{key}.<name> = ...) or build the config with config_from_dict")
            _check_section(value, f"{key}.")
            continue
        value = _plain(value)
        _check_type(value, str(f.type), key)
        setattr(obj, f.name, value)


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """A ``Config`` from a nested mapping (defaults for what it lacks), keys and types checked, not validated."""
    cfg = Config()
    merge_values(cfg, values or {})
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """One ``--set key.sub=value`` item: (the dotted key's parts, the value parsed as YAML). The one
    parser of ``--set``, for ``pretrain`` and ``benchmark`` alike."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    return key.split("."), parse_yaml(raw, f"--set {key}: the value") if raw else None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically (a killed run never leaves half a config)."""
    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def is_int(x: Any) -> bool:
    """An integer that is not a bool (YAML's ``true`` is an int to Python)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def duplicated_count(unique: int, dup_fraction: float) -> int:
    """⌊d · U⌋ of the decimal the user typed: 0.29 · 100 is 28.999… in floating point, 29 here."""
    return math.floor(Fraction(repr(float(dup_fraction))) * unique)


def redundant_size(unique: int, dup_fraction: float, copies: int) -> int:
    """N = U(1 − d) + U·d·c of a redundant training set, with U·d rounded down (``duplicated_count``)."""
    k = duplicated_count(unique, dup_fraction)
    return unique - k + k * copies
