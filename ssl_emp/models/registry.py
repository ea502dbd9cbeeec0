"""The models by name (``algorithm``), the one table of ``model.*`` keys, and ``build_model``.

Each ``model.*`` key is range-checked here, in one place, for the models that read it (a model
class names its keys in ``config_keys``; every model reads the backbone's). A key that the chosen
model does not read is not checked: switching a config's algorithm with ``--set algorithm=...``
does not ask for the other model's keys to be edited. Used by ``build_model`` and by config
validation, as ``ssl_emp.pruning.registry`` holds the pruning methods'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ssl_emp.errors import ConfigError
from ssl_emp.models.backbone import build_backbone
from ssl_emp.models.contract import ModelClass, PretrainModel
from ssl_emp.models.moco import MoCo
from ssl_emp.models.simclr import SimCLR
from ssl_emp.models.supervised import Supervised
from ssl_emp.settings import ModelConfig, is_int, is_number

#: algorithm name -> model class; the order is the one error messages list them in.
MODELS: dict[str, ModelClass] = {"simclr": SimCLR, "moco": MoCo, "supervised": Supervised}


@dataclass(frozen=True)
class ModelParam:
    """One ``model.*`` key: its valid values (predicate + text, for messages) and what it sets."""

    check: Callable[[Any], bool]
    text: str  # the valid values in words
    help: str


# Upper bounds, so that a typo (1e11 for 1e3) is a message, not a failed allocation of terabytes.
#: Widest projection head: SimCLR and MoCo use 2048 to 8192; a 2^14 x 2^14 layer is 1 GiB of float32.
MAX_WIDTH = 1 << 14
#: Longest MoCo queue: MoCo v2 uses 65536.
MAX_QUEUE = 1 << 20
#: (keys, limit, what): a model that reads all the keys needs their product <= limit.
PRODUCT_LIMITS: tuple[tuple[tuple[str, ...], int, str], ...] = (
    (("queue_size", "proj_out_dim"), 1 << 28, "the MoCo queue's floats, 1 GiB"),
)


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda x: is_int(x) and low <= x <= high


def _unit(x: Any) -> bool:
    return is_number(x) and 0 <= x <= 1


#: Read by every model: ``build_backbone`` builds its encoder from them.
BACKBONE_KEYS: tuple[str, ...] = ("backbone", "backbone_kwargs")
MODEL_PARAMS: dict[str, ModelParam] = {
    "backbone": ModelParam(lambda x: isinstance(x, str) and x != "", "a timm model name", "the encoder"),
    "backbone_kwargs": ModelParam(lambda x: isinstance(x, dict), "a mapping", "timm.create_model's arguments"),
    "proj_hidden_dim": ModelParam(_int_in(1, MAX_WIDTH), f"an integer in [1, {MAX_WIDTH}]",
                                  "hidden width of the projection head"),
    "proj_out_dim": ModelParam(_int_in(1, MAX_WIDTH), f"an integer in [1, {MAX_WIDTH}]",
                               "output width of the projection head"),
    "temperature": ModelParam(lambda x: is_number(x) and x > 0, "> 0", "InfoNCE temperature"),
    "queue_size": ModelParam(_int_in(1, MAX_QUEUE), f"an integer in [1, {MAX_QUEUE}]",
                             "MoCo: negatives in the key queue"),
    "momentum_start": ModelParam(_unit, "in [0, 1]", "MoCo: key-encoder momentum at the start of the run"),
    "momentum_end": ModelParam(_unit, "in [0, 1]", "MoCo: key-encoder momentum at the end (cosine schedule)"),
}
#: (a, b): a model that reads both keys needs a <= b.
ORDERED_PARAMS: tuple[tuple[str, str], ...] = (("momentum_start", "momentum_end"),)


def model_keys(algorithm: str) -> tuple[str, ...]:
    """The ``model.*`` keys that ``algorithm``'s model reads (backbone's first), or a ConfigError."""
    model = MODELS.get(algorithm)
    if model is None:
        raise ConfigError(f"unknown algorithm '{algorithm}' (choose from {', '.join(MODELS)})")
    return (*BACKBONE_KEYS, *model.config_keys)


def validate_model_config(algorithm: str, cfg: ModelConfig, *, section: str = "model") -> None:
    """Check the keys of ``cfg`` that ``algorithm``'s model reads; one-line ConfigErrors naming
    ``section.key``, the value and its valid range. Pure: nothing is built."""
    keys = model_keys(algorithm)
    for name in keys:
        value, param = getattr(cfg, name), MODEL_PARAMS[name]
        if not param.check(value):
            raise ConfigError(f"{section}.{name} must be {param.text}, got {value!r}")
    for low, high in ORDERED_PARAMS:
        if low in keys and high in keys and getattr(cfg, low) > getattr(cfg, high):
            raise ConfigError(f"{section}.{low} must be <= {section}.{high}, got {getattr(cfg, low)!r} > "
                              f"{getattr(cfg, high)!r}")
    for names, limit, what in PRODUCT_LIMITS:
        if set(names) <= set(keys) and math.prod(getattr(cfg, n) for n in names) > limit:
            raise ConfigError(f"{' x '.join(f'{section}.{n}' for n in names)} must be <= {limit} ({what}), got "
                              f"{' x '.join(str(getattr(cfg, n)) for n in names)}")


def build_model(algorithm: str, cfg: ModelConfig, gather_distributed: bool = False,
                num_classes: int | None = None) -> PretrainModel:
    """The model of ``algorithm``; ``num_classes`` only for ``supervised`` (from the data set)."""
    validate_model_config(algorithm, cfg)
    backbone: nn.Module = build_backbone(cfg.backbone, cfg.cifar_stem, **cfg.backbone_kwargs)
    return MODELS[algorithm].from_config(backbone, cfg, gather_distributed=gather_distributed,
                                         num_classes=num_classes)
