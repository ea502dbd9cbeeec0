"""Run configuration: typed sections, YAML files, ``--set key=value`` overrides, validation.

A config file holds only the keys it changes; everything else keeps the defaults below, which are
the embedded default run (digits, SimCLR, CPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from ssl_emp.errors import ConfigError
from ssl_emp.fileio import atomic_write_text
from ssl_emp.pruning.params import validate_params


@dataclass
class RedundancyConfig:
    """Redundancy probe (docs/method.md): train on ``unique`` images of the split, ⌊dup_fraction · unique⌋
    of them present ``copies`` times in all; off while ``unique`` is None."""

    unique: int | None = None  # U: images drawn (fixed, seed 0) from the training split
    dup_fraction: float = 0.5  # d: the share of the U images that is duplicated
    copies: int = 4  # c: occurrences of each duplicated image, the original included
    # Extra copies as near-copies (one fixed mild crop + brightness/contrast each, data.py says why
    # how mild) instead of exact ones: redundancy that no byte comparison finds.
    near: bool = False
    # The dedup oracle: train on the U unique images alone (the benchmark's grid method `dedup` sets it).
    dedup: bool = False


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | cifar10 | cifar100 | stl10 | imagefolder
    data_dir: str | None = None  # folder (or .tar/.tar.gz of an image-folder tree)
    download: bool = False  # torchvision sets only, and only when asked
    image_size: int = 16
    train_split: str = "train"  # stl10: "train+unlabeled" trains on the unlabelled images too
    train_subset: int | None = None  # keep a fixed random subset of N training images
    test_subset: int | None = None
    # Hold out this fraction of the training images (fixed, stratified) as the split the kNN
    # monitor scores on instead of the test split: for tuning without looking at the test set.
    val_fraction: float = 0.0
    # Junk probe: replace this fixed fraction of the training images by pixel-shuffled copies
    # (marked; the kNN bank stays clean) to see which way a score moves them (benchmarks/README.md).
    inject_noise: float = 0.0
    redundancy: RedundancyConfig = field(default_factory=RedundancyConfig)
    in_memory: bool = True  # hold decoded uint8 images in RAM (small-image sets)
    cache_dir: str | None = None  # decoded-image cache; default ~/.cache/ssl-emp/decoded
    num_workers: int = 0


@dataclass
class AugmentConfig:
    """View pipeline; ``None`` takes the preset's value (lightly's SimCLR / MoCo v2 transforms)."""

    # auto | simclr | mocov2 | digits | supervised; auto: digits for digits, else the algorithm's
    preset: str = "auto"
    min_scale: float | None = None
    cj_prob: float | None = None
    cj_strength: float | None = None
    gray_prob: float | None = None
    blur_prob: float | None = None
    hflip_prob: float | None = None
    rotate_prob: float | None = None  # lightly's rr_prob / rr_degrees
    rotate_degrees: float | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] = field(
        # A narrow one-block-per-stage ResNet: the CPU-friendly default.
        default_factory=lambda: {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    )
    cifar_stem: bool = True
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
    name: str = "sgd"  # sgd | lars | adamw
    lr: float = 0.3  # for a batch of 256; scaled linearly with batch_size
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    batch_size: int = 64


@dataclass
class PruningConfig:
    method: str = "full"
    rate: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    eval_every: int = 5  # kNN monitor every N epochs (and at epoch 0); 0 = only at the end
    knn_k: int = 200
    knn_temperature: float = 0.1
    batch_size: int = 512


@dataclass
class Config:
    algorithm: str = "simclr"  # simclr | moco | supervised (the positive control: labels, cross-entropy)
    epochs: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    output_dir: str = "runs/pretrain"
    progress: bool = True
    log_every: int = 10  # steps between progress-bar / CSV updates (each one syncs the device)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


ALGORITHMS = ("simclr", "moco", "supervised")
DATASETS = ("digits", "cifar10", "cifar100", "stl10", "imagefolder")
OPTIMIZERS = ("sgd", "lars", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRESETS = ("auto", "simclr", "mocov2", "digits", "supervised")
# The supervised preset is crop-after-padding + flip only; the view knobs of the others do not apply.
_CONTRASTIVE_ONLY = ("min_scale", "cj_prob", "cj_strength", "gray_prob", "blur_prob", "rotate_prob", "rotate_degrees")
_AUTO_PRESET = {"simclr": "simclr", "moco": "mocov2", "supervised": "supervised"}


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
    wanted)``, sorted; keys in ``ignore`` (dotted) aside. The one config diff: resume checks and
    benchmark folders both use it."""
    # A key a config lacks was added to Config after it was written; its default keeps the
    # earlier behaviour, so a run or sweep started before the field existed can still be resumed.
    defaults = _flat(dataclasses.asdict(Config()))
    a, b = {**defaults, **_flat(saved)}, {**defaults, **_flat(wanted)}
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)]


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
            raise ConfigError(f"unknown config key '{prefix}{key}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge_values(current, value, f"{prefix}{key}.", update_dicts)
        elif update_dicts and isinstance(current, dict) and isinstance(value, dict):
            setattr(obj, key, {**current, **value})  # --set a.b.c=1 changes one entry of dict a.b
        else:
            value = _coerce(value, str(fields[key].type))
            _check_type(value, str(fields[key].type), f"{prefix}{key}")
            setattr(obj, key, value)


_TYPE_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "None": "null", "list[float]": "a list of numbers", "dict[str, Any]": "a mapping"}


def _type_ok(value: Any, option: str) -> bool:
    checks = {
        "None": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "int": _is_int,
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "list[float]": lambda v: isinstance(v, list) and all(_is_num(x) for x in v),
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


def config_from_dict(values: dict[str, Any] | None) -> Config:
    cfg = Config()
    merge_values(cfg, values or {})
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides (values parsed as YAML)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder, not a file (pass a .yaml file)")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    cfg = config_from_dict(values)
    for item in overrides or []:
        parts, nested = parse_override(item)
        for part in reversed(parts):
            nested = {part: nested}
        merge_values(cfg, nested, update_dicts=True)
    return finalize(cfg)


def parse_override(item: str) -> tuple[list[str], Any]:
    """One ``--set key.sub=value`` item: (the dotted key's parts, the value parsed as YAML). The one
    parser of ``--set``, for ``pretrain`` and ``benchmark`` alike."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: the value is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return key.split("."), value


def finalize(cfg: Config) -> Config:
    """Resolve ``auto`` values from the rest of the config, then validate."""
    if cfg.augment.preset == "auto":
        auto = "digits" if cfg.data.dataset == "digits" else _AUTO_PRESET.get(cfg.algorithm, "simclr")
        cfg.augment.preset = auto
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically (a killed run never leaves half a config)."""
    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


# optim.lr is per 256 images (SimCLR's LARS uses 0.3, its square-root rule 0.075 x sqrt(B)); a
# rate far above that diverges on the first step, and 1e300 does not even fit torch's float32
# parameter update (a traceback from inside the optimizer).
MAX_LR = 100.0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def duplicated_count(unique: int, dup_fraction: float) -> int:
    """⌊d · U⌋ of the decimal the user typed: 0.29 · 100 is 28.999… in floating point, 29 here."""
    return math.floor(Fraction(repr(float(dup_fraction))) * unique)


def redundant_size(unique: int, dup_fraction: float, copies: int) -> int:
    """N = U(1 − d) + U·d·c of a redundant training set, with U·d rounded down (``duplicated_count``)."""
    k = duplicated_count(unique, dup_fraction)
    return unique - k + k * copies


def check_redundancy(d: DataConfig) -> None:
    """Refuse a redundancy design that cannot be built; the split's size is checked when it is loaded."""
    r = d.redundancy
    _require(isinstance(r.near, bool) and isinstance(r.dedup, bool),
             "data.redundancy.near and data.redundancy.dedup must be true or false")
    if r.unique is None:
        _require(not r.dedup, "data.redundancy.dedup needs a redundant training set: set data.redundancy.unique")
        return
    _require(_is_int(r.unique) and r.unique > 0, f"data.redundancy.unique must be a positive integer, got {r.unique!r}")
    _require(_is_num(r.dup_fraction) and 0 <= r.dup_fraction <= 1,
             f"data.redundancy.dup_fraction must be in [0, 1], got {r.dup_fraction!r}")
    _require(_is_int(r.copies) and r.copies >= 2, f"data.redundancy.copies must be an integer >= 2, got {r.copies!r}")
    _require(duplicated_count(r.unique, r.dup_fraction) > 0,
             f"data.redundancy.dup_fraction={r.dup_fraction} of unique={r.unique} duplicates no image "
             "(⌊d·U⌋ = 0); raise either, or unset data.redundancy.unique")
    _require(d.in_memory, "data.redundancy needs the training images held in memory (data.in_memory=true)")
    _require(d.train_split == "train", "data.redundancy needs data.train_split=train: the kNN bank is its unique "
             "labelled images")
    # Junk among copies would be junk repeated or junk unlike its own copies: either confounds both probes.
    _require(d.inject_noise == 0, "data.redundancy and data.inject_noise are two probes; use one at a time")


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the key and the value."""
    _require(cfg.algorithm in ALGORITHMS, f"unknown algorithm '{cfg.algorithm}' (choose from {', '.join(ALGORITHMS)})")
    _require(_is_int(cfg.epochs) and cfg.epochs > 0, f"epochs must be a positive integer, got {cfg.epochs!r}")
    _require(_is_int(cfg.seed) and 0 <= cfg.seed < 2**63, f"seed must be an integer in [0, 2^63), got {cfg.seed!r}")
    _require(cfg.device in DEVICES, f"unknown device '{cfg.device}' (choose from {', '.join(DEVICES)})")
    _require(_is_int(cfg.log_every) and cfg.log_every > 0, f"log_every must be > 0, got {cfg.log_every!r}")
    d = cfg.data
    _require(d.dataset in DATASETS, f"unknown dataset '{d.dataset}' (choose from {', '.join(DATASETS)})")
    _require(d.dataset != "digits" or d.data_dir is None,
             f"data.data_dir ({d.data_dir}) is set but dataset 'digits' is embedded and reads no files; "
             "choose the data set with --set data.dataset=imagefolder|cifar10|cifar100|stl10")
    _require(d.train_split == "train" or (d.train_split == "train+unlabeled" and d.dataset == "stl10"),
             f"data.train_split must be 'train' (or 'train+unlabeled' for stl10), got {d.train_split!r}")
    _require(_is_int(d.image_size) and d.image_size >= 8, f"data.image_size must be an integer >= 8, got {d.image_size!r}")
    for name in ("train_subset", "test_subset"):
        value = getattr(d, name)
        _require(value is None or (_is_int(value) and value > 0), f"data.{name} must be a positive integer, got {value!r}")
    _require(_is_num(d.val_fraction) and 0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction!r}")
    _require(_is_num(d.inject_noise) and 0 <= d.inject_noise < 1, f"data.inject_noise must be in [0, 1), got {d.inject_noise!r}")
    _require(_is_int(d.num_workers) and d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers!r}")
    check_redundancy(d)
    a = cfg.augment
    _require(a.preset in PRESETS, f"unknown augment.preset '{a.preset}' (choose from {', '.join(PRESETS)})")
    if a.preset == "supervised":
        extra = [f"augment.{k}" for k in _CONTRASTIVE_ONLY if getattr(a, k) is not None]
        _require(not extra, f"augment.preset 'supervised' takes only hflip_prob; unset {', '.join(extra)}")
    for name in ("cj_prob", "gray_prob", "blur_prob", "hflip_prob", "rotate_prob"):
        value = getattr(a, name)
        _require(value is None or (_is_num(value) and 0 <= value <= 1), f"augment.{name} must be in [0, 1], got {value!r}")
    _require(a.min_scale is None or (_is_num(a.min_scale) and 0 < a.min_scale <= 1), f"augment.min_scale must be in (0, 1], got {a.min_scale!r}")
    _require(a.rotate_degrees is None or (_is_num(a.rotate_degrees) and 0 <= a.rotate_degrees <= 180), f"augment.rotate_degrees must be in [0, 180], got {a.rotate_degrees!r}")
    _require(a.cj_strength is None or (_is_num(a.cj_strength) and a.cj_strength >= 0), f"augment.cj_strength must be >= 0, got {a.cj_strength!r}")
    _require(isinstance(a.mean, list) and len(a.mean) == 3 and all(_is_num(x) for x in a.mean),
             f"augment.mean must be 3 numbers, got {a.mean!r}")
    _require(isinstance(a.std, list) and len(a.std) == 3 and all(_is_num(x) and x > 0 for x in a.std),
             f"augment.std must be 3 numbers > 0, got {a.std!r}")
    m = cfg.model
    _require(_is_num(m.temperature) and m.temperature > 0, f"model.temperature must be > 0, got {m.temperature!r}")
    _require(_is_int(m.queue_size) and m.queue_size > 0, f"model.queue_size must be a positive integer, got {m.queue_size!r}")
    _require(_is_num(m.momentum_start) and 0 <= m.momentum_start <= m.momentum_end <= 1, "model.momentum_start <= model.momentum_end must lie in [0, 1]")
    _require(isinstance(m.backbone_kwargs, dict), "model.backbone_kwargs must be a mapping")
    _require(isinstance(m.backbone, str) and m.backbone != "", f"model.backbone must be a name, got {m.backbone!r}")
    for name in ("proj_hidden_dim", "proj_out_dim"):
        value = getattr(m, name)
        _require(_is_int(value) and value > 0, f"model.{name} must be a positive integer, got {value!r}")
    o = cfg.optim
    _require(o.name in OPTIMIZERS, f"unknown optimizer '{o.name}' (choose from {', '.join(OPTIMIZERS)})")
    _require(_is_num(o.lr) and 0 < o.lr <= MAX_LR, f"optim.lr must be in (0, {MAX_LR:g}], got {o.lr!r}")
    _require(_is_num(o.weight_decay) and o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay!r}")
    _require(_is_num(o.momentum) and 0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum!r}")
    _require(_is_int(o.batch_size) and o.batch_size >= 2, f"optim.batch_size must be an integer >= 2, got {o.batch_size!r}")
    _require(_is_num(o.warmup_epochs) and 0 <= o.warmup_epochs <= cfg.epochs, f"optim.warmup_epochs must be in [0, epochs], got {o.warmup_epochs!r}")
    p = cfg.pruning
    _require(isinstance(p.params, dict), "pruning.params must be a mapping")
    validate_params(p.method, p.rate, p.params, section="pruning")  # the pruner's own table of params
    e = cfg.eval
    _require(_is_int(e.eval_every) and e.eval_every >= 0, f"eval.eval_every must be >= 0, got {e.eval_every!r}")
    _require(_is_int(e.knn_k) and e.knn_k > 0, f"eval.knn_k must be a positive integer, got {e.knn_k!r}")
    _require(_is_num(e.knn_temperature) and e.knn_temperature > 0, f"eval.knn_temperature must be > 0, got {e.knn_temperature!r}")
    _require(_is_int(e.batch_size) and e.batch_size > 0, f"eval.batch_size must be a positive integer, got {e.batch_size!r}")
