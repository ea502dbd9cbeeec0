"""Feature extraction from a frozen backbone, plus the input checks shared by the evaluators."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ssl_emp.errors import ConfigError
from ssl_emp.progress import show_progress


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    params = list(model.parameters()) + list(model.buffers())
    model_device = params[0].device if params else None
    if device is None:
        return model_device if model_device is not None else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None
    # Moving the model here would silently change the caller's object (and its optimizer's view of
    # it), so a mismatch is reported instead.
    if model_device is not None and model_device.type != resolved.type:
        raise ConfigError(f"model is on {model_device} but device={resolved}; move the model first")
    return resolved


def _split_batch(batch: object) -> tuple[Tensor, object | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and isinstance(batch[0], Tensor):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise ConfigError(f"loader batches must be an image tensor or an (images, labels) pair, got {type(batch).__name__}")


def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Embed every batch of ``loader`` with ``model`` frozen; return ``(features, labels)``.

    Features are float32 on the CPU, shape ``[N, D]`` (model outputs are flattened); labels are
    int64 ``[N]`` in loader order, or ``None`` when the batches carry no labels. ``device``
    defaults to the model's device; ``transform`` runs on the image batch after the move to
    ``device``, so uint8 images can cross the bus and be normalised on the accelerator. ``progress``: the
    stage's name, shown with a count of images (``ssl_emp.progress``); None: silent.
    """
    dev = _resolve_device(model, device)
    # model.train(flag) would overwrite submodules deliberately kept in eval (e.g. frozen BN),
    # so every module's own flag is saved and restored.
    modes = [(m, m.training) for m in model.modules()]
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    has_labels: bool | None = None
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    )
    dataset = getattr(loader, "dataset", None)
    bar = show_progress(desc=progress or "", total=len(dataset) if hasattr(dataset, "__len__") else None,
                        enabled=progress is not None)
    model.eval()
    try:
        # no_grad rather than inference_mode: inference tensors cannot be used later in autograd
        # (e.g. as linear-probe inputs), which would surprise callers.
        with torch.no_grad(), autocast:
            for batch in loader:
                images, batch_labels = _split_batch(batch)
                if has_labels is None:
                    has_labels = batch_labels is not None
                elif has_labels != (batch_labels is not None):
                    raise ConfigError("loader mixes labelled and unlabelled batches")
                images = images.to(dev, non_blocking=True)
                if transform is not None:
                    images = transform(images)
                out = model(images)
                if not isinstance(out, Tensor):
                    raise ConfigError(f"model must return a tensor, got {type(out).__name__}")
                if out.ndim == 0 or out.shape[0] != images.shape[0]:
                    raise ConfigError(
                        f"model output shape {tuple(out.shape)} does not start with the batch size {images.shape[0]}"
                    )
                feats.append(out.reshape(out.shape[0], -1).float().cpu())
                bar.update(out.shape[0])
                if batch_labels is not None:
                    lab = torch.as_tensor(batch_labels).reshape(-1)
                    if lab.is_floating_point() or lab.is_complex():
                        raise ConfigError(f"labels must be integers, got dtype {lab.dtype}")
                    if lab.numel() != out.shape[0]:
                        raise ConfigError(f"batch has {out.shape[0]} images but {lab.numel()} labels")
                    labels.append(lab.to(device="cpu", dtype=torch.int64))
        bar.close()  # its line says the stage ended: not on an error
    finally:
        for module, mode in modes:
            module.training = mode
    if not feats:
        raise ConfigError("loader yielded no batches")
    return torch.cat(feats), (torch.cat(labels) if has_labels else None)


def check_features(x: object, name: str) -> Tensor:
    """Return ``x`` as a float32 tensor ``[N, D]`` (same device) or raise ``ConfigError``."""
    if not isinstance(x, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ConfigError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ConfigError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.bool or x.is_complex():
        raise ConfigError(f"{name} must be a real-valued tensor, got dtype {x.dtype}")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{name} contains NaN or inf")
    return x


def check_labels(y: object, n: int, name: str) -> Tensor:
    """Return ``y`` as an int64 tensor ``[n]`` of non-negative class ids or raise ``ConfigError``."""
    if y is None:
        raise ConfigError(f"{name} is None; labels are required")
    if not isinstance(y, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ConfigError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ConfigError(f"{name} has {y.shape[0]} entries but the features have {n} rows")
    y = y.long()
    if n and int(y.min()) < 0:
        raise ConfigError(f"{name} contains negative class ids")
    return y
