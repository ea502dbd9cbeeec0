"""The encoder: a timm backbone by name (with SimCLR's CIFAR stem if asked), and reloading an exported one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import timm
from torch import Tensor, nn

from ssl_emp.errors import ConfigError


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
