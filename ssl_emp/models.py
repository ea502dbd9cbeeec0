"""Encoders: a timm backbone by name, a lightly projection head or a classifier, and the objective.

The training loop knows a model only through this contract (solo-learn style: the method owns
its per-step extras), so that another objective plugs into the same loop:

- ``num_views``: how many augmented views of each image ``forward`` takes;
- ``needs_labels``: whether ``forward`` needs the images' class labels;
- ``objective``: ``"contrastive"`` or ``"supervised"``, the pruner's objective (which signals it scores);
- ``forward(*views, labels=None) -> dict``: ``"loss"``, the per-sample loss [B] (float32, with
  grad), plus the detached per-sample pruner signals named as ``DynamicPruner.update``'s keywords
  (``"align"`` and the two directions' losses ``"loss_12"``, ``"loss_21"`` for the contrastive models,
  ``"entropy"`` for ``Supervised``). Returning the per-sample loss from ``forward`` lets a DDP
  wrapper's gradient hooks run through the ordinary call;
- ``on_train_step(progress)``: called before each step with the fraction of the run done.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils import dist as lightly_dist
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_emp.config import ModelConfig
from ssl_emp.errors import ConfigError
from ssl_emp.losses import cross_entropy_per_sample, info_nce_per_sample, moco_info_nce_per_sample


def _direction_signals(result: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """The per-direction losses a contrastive loss function carried (``PerSampleLoss``), as signals.

    A function returning a plain ``(loss, align)`` pair (a test's stand-in) gives none; the pruner
    then reads the symmetrised loss for both directions.
    """
    directions = {name: getattr(result, name, None) for name in ("loss_12", "loss_21")}
    return {} if any(v is None for v in directions.values()) else directions


def build_backbone(name: str, cifar_stem: bool = False, **kwargs: object) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): images -> pooled features.

    ``cifar_stem`` swaps the 7×7 stride-2 convolution and max-pool of a ResNet for a 3×3 stride-1
    convolution (SimCLR's CIFAR variant): at 32 px the original stem would discard 15/16 of the
    pixels before the first block. timm has no such option, hence the swap.
    """
    return _build_backbone(name, cifar_stem, kwargs, "model.backbone_kwargs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_resnet_stages(kwargs: dict[str, object], key: str) -> None:
    # timm's ResNet zips layers with channels (a short list silently drops stages) but its forward
    # calls layer1..layer4 by name, so anything but four stages fails only at the first batch.
    for arg in ("layers", "channels"):
        value = kwargs.get(arg)
        if value is None:
            continue
        ok = isinstance(value, (list, tuple)) and len(value) == 4 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        if not ok:
            raise ConfigError(f"{key}.{arg} must be 4 positive integers (one per ResNet stage), got {value!r}")


def _is_timm_resnet(name: object) -> bool:
    if not isinstance(name, str):
        return False
    base = timm.models.split_model_name_tag(name)[0]
    return timm.models.is_model(base) and timm.models.model_entrypoint(base).__module__ == "timm.models.resnet"


def _build_backbone(name: str, cifar_stem: bool, kwargs: dict[str, object], key: str) -> nn.Module:
    """``build_backbone`` with ``key`` naming where ``kwargs`` came from in its errors."""
    if _is_timm_resnet(name):  # before building: a zero-width stage builds, with warnings, then fails
        _check_resnet_stages(kwargs, key)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except Exception as exc:  # timm's builders check little: a bad argument fails anywhere inside them
        if isinstance(exc, RuntimeError) and "Unknown model" in str(exc):
            raise ConfigError(f"unknown backbone '{name}' (any timm model name, see timm.list_models())") from exc
        raise ConfigError(f"backbone '{name}' rejects {key} {kwargs}: {_first_line(exc)}") from exc
    if isinstance(model, timm.models.ResNet):  # one not found by name (e.g. from the Hugging Face hub)
        _check_resnet_stages(kwargs, key)
    if cifar_stem:
        if not isinstance(getattr(model, "conv1", None), nn.Conv2d) or not hasattr(model, "maxpool"):
            raise ConfigError(f"model.cifar_stem needs a timm ResNet with a single-conv stem; '{name}' has none")
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


class SimCLR(nn.Module):
    """SimCLR: backbone + ``SimCLRProjectionHead``, NT-Xent over the 2B views (of all ranks, if gathered)."""

    num_views = 2
    needs_labels = False
    objective = "contrastive"

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.temperature = cfg.temperature
        self.gather_distributed = gather_distributed

    def on_train_step(self, progress: float) -> None:
        """Nothing to schedule."""

    def forward(self, view1: Tensor, view2: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        # One pass over both views: batch-norm statistics span all 2B views, as in SimCLR.
        z = self.head(self.backbone(torch.cat([view1, view2])))
        z1, z2 = z.chunk(2)
        result = info_nce_per_sample(z1, z2, self.temperature, self.gather_distributed)
        loss, align = result
        return {"loss": loss, "align": align, **_direction_signals(result)}


class KeyQueue(nn.Module):
    """FIFO of MoCo negatives, lightly's ``MemoryBankModule`` semantics (random unit rows at start;
    a batch that reaches the end fills it and the rest is dropped; keys of all ranks when gathered).

    lightly keeps the write position in a device tensor and reads it with ``int()`` every step, a
    host sync; here it is a Python int (checkpointed by ``MoCo``'s extra state).
    """

    def __init__(self, size: int, dim: int, gather_distributed: bool = False):
        super().__init__()
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1), persistent=False)
        self.ptr = 0
        self.gather_distributed = gather_distributed

    @torch.no_grad()
    def forward(self, keys: Tensor, update: bool) -> Tensor:
        """The queue before ``keys`` are enqueued (a copy), then enqueue them if ``update``."""
        queue = self.bank.clone()
        if update:
            if self.gather_distributed and lightly_dist.world_size() > 1:
                keys = torch.cat(lightly_dist.gather(keys.contiguous()))
            n = min(keys.shape[0], self.bank.shape[0] - self.ptr)
            self.bank[self.ptr:self.ptr + n] = keys[:n]
            self.ptr = 0 if self.ptr + n >= self.bank.shape[0] else self.ptr + n
        return queue


class MoCo(nn.Module):
    """MoCo v2: query encoder, momentum key encoder, a queue of negatives.

    The queue is training state, so it enters ``state_dict()`` (and every checkpoint) through
    torch's extra-state hook.
    """

    num_views = 2
    needs_labels = False
    objective = "contrastive"

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.queue = KeyQueue(cfg.queue_size, cfg.proj_out_dim, gather_distributed)
        self.temperature = cfg.temperature
        self.momentum_start, self.momentum_end = cfg.momentum_start, cfg.momentum_end

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"queue": self.queue.bank.clone(), "queue_ptr": torch.tensor([self.queue.ptr])}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.queue.bank.copy_(state["queue"])
        self.queue.ptr = int(state["queue_ptr"])

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.head, self.head_momentum, m)

    def on_train_step(self, progress: float) -> None:
        """Momentum encoder update, momentum on a cosine from ``momentum_start`` to ``momentum_end``."""
        m = self.momentum_end - (self.momentum_end - self.momentum_start) * (math.cos(math.pi * progress) + 1) / 2
        self.momentum_update(m)

    def forward(self, view1: Tensor, view2: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        q1, q2 = self.head(self.backbone(view1)), self.head(self.backbone(view2))
        with torch.no_grad():
            k1 = self.head_momentum(self.backbone_momentum(view1))
            k2 = self.head_momentum(self.backbone_momentum(view2))
        # The bank returns its contents before this batch's keys are enqueued.
        queue = self.queue(torch.cat([k1, k2]).float(), update=self.training)
        result = moco_info_nce_per_sample(q1, q2, k1, k2, queue, self.temperature)
        loss, align = result
        return {"loss": loss, "align": align, **_direction_signals(result)}


class Supervised(nn.Module):
    """Backbone + linear classifier trained with cross-entropy on one augmented view.

    The EMP paper's image-classification setting (Xiao et al., arXiv 2408.16031) and Raju et al.'s
    (arXiv 2111.12621): the positive control in which loss-based selection is expected to matter.
    Returns the per-sample loss and the prediction entropy, the supervised EMP memory signal.
    """

    num_views = 1
    needs_labels = True
    objective = "supervised"

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.num_features, num_classes)

    def forward(self, view: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        if labels is None:
            raise ConfigError("the supervised objective needs labels")
        loss, entropy = cross_entropy_per_sample(self.classifier(self.backbone(view)), labels)
        return {"loss": loss, "entropy": entropy}

    def on_train_step(self, progress: float) -> None:
        """Nothing per step (the contract's hook; MoCo uses it for its momentum encoder)."""


def build_model(algorithm: str, cfg: ModelConfig, gather_distributed: bool = False,
                num_classes: int | None = None) -> SimCLR | MoCo | Supervised:
    """The model of ``algorithm``; ``num_classes`` only for ``supervised`` (from the data set)."""
    backbone = build_backbone(cfg.backbone, cfg.cifar_stem, **cfg.backbone_kwargs)
    if algorithm == "simclr":
        return SimCLR(backbone, cfg, gather_distributed)
    if algorithm == "moco":
        return MoCo(backbone, cfg, gather_distributed)
    if algorithm == "supervised":
        if not num_classes or num_classes < 2:
            raise ConfigError("algorithm 'supervised' needs a labelled training set with at least 2 classes")
        return Supervised(backbone, num_classes)
    raise ConfigError(f"unknown algorithm '{algorithm}' (choose from simclr, moco, supervised)")


def state_dict_mismatch(model: nn.Module, state: Mapping[str, object]) -> str | None:
    """How ``state`` fails to fit ``model.state_dict()``, naming the first missing key, unexpected
    key or mismatched shape; None when it fits. (torch's own message starts with a header line that
    names none of them, and a one-line error keeps only that line.)"""
    expected = model.state_dict()

    def first(keys: list[str], what: str) -> str:
        return f"{what} '{keys[0]}'" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        return "; ".join(first(keys, what) for keys, what in ((missing, "missing key"), (unexpected, "unexpected key"))
                         if keys)
    for key, value in state.items():
        if not isinstance(value, Tensor):
            return f"'{key}' is a {type(value).__name__}, not a tensor"
        if value.shape != expected[key].shape:
            return f"'{key}' has shape {list(value.shape)} but the model's is {list(expected[key].shape)}"
    return None


def _export_config(config_file: Path) -> tuple[str, dict[str, object], bool]:
    """``(architecture, model_args, cifar_stem)`` of an export's config.json, its types checked:
    ``bool("false")`` is True, so a hand-edited string would silently rebuild the wrong stem."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config_file} is not a timm model config: {exc!r}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file} is not a timm model config: it holds a {type(config).__name__}, not a mapping")

    def bad(key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{config_file} is not a timm model config: '{key}' must be {expected}, got {value!r}")

    name, kwargs, extra = config.get("architecture"), config.get("model_args"), config.get("ssl_emp")
    if not isinstance(name, str) or not name:
        raise bad("architecture", "a timm model name", name)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise bad("model_args", "a mapping", kwargs)
    if extra is not None and not isinstance(extra, dict):
        raise bad("ssl_emp", "a mapping", extra)
    cifar_stem = (extra or {}).get("cifar_stem", False)
    if not isinstance(cifar_stem, bool):
        raise bad("ssl_emp.cifar_stem", "true or false", cifar_stem)
    kwargs = dict(kwargs or {})
    num_classes = kwargs.pop("num_classes", config.get("num_classes", 0))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise bad("num_classes", "a non-negative integer", num_classes)
    if num_classes != 0:
        folder = config_file.parent
        raise ConfigError(f"{folder} holds a model with a classifier; load it with timm.create_model('local-dir:{folder}')")
    return name, kwargs, cifar_stem


def load_backbone(path: str | Path) -> nn.Module:
    """A backbone folder written by ``ssl-emp export`` (``config.json`` + ``model.safetensors``), in eval mode.

    Rebuilds ``config.json``'s architecture with its ``model_args`` through :func:`build_backbone`,
    so it also restores the CIFAR stem (``ssl_emp.cifar_stem``) that ``timm.create_model`` cannot.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.is_file():
        raise ConfigError(f"{folder} is a file, not a folder: pass the folder ssl-emp export wrote")
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise ConfigError(f"{file} not found (an exported backbone folder holds config.json and model.safetensors)")
    name, kwargs, cifar_stem = _export_config(config_file)
    model = _build_backbone(name, cifar_stem, kwargs, f"{config_file} model_args")
    try:
        state = load_file(weights_file)
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{weights_file} does not hold the weights of {config_file}: {_first_line(exc)}") from exc
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ConfigError(f"{weights_file} does not hold the weights of {config_file}: {problem}")
    model.load_state_dict(state)
    return model.eval()
