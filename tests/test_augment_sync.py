"""The view pipeline makes no call that would synchronise the host with the GPU.

Counted with tests/sync_calls.py on the CPU (every call, host ones too) and on the ``meta`` device
(only calls on would-be device tensors; a data-dependent op these wrappers miss raises there).
"""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from ssl_emp.augment import eval_transform, view_augmentation
from ssl_emp.config import AugmentConfig
from tests.sync_calls import summary, sync_calls

PRESETS = [
    pytest.param("simclr", 32, id="simclr-32px"),
    pytest.param("simclr", 64, id="simclr-64px-blur"),
    pytest.param("mocov2", 32, id="mocov2-32px"),
    pytest.param("digits", 32, id="digits-rotation"),
    pytest.param("supervised", 32, id="supervised"),
]


def _uint8(n: int, size: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).to(device)


@pytest.mark.parametrize(("preset", "size"), PRESETS)
def test_view_makes_no_device_sync(preset: str, size: int) -> None:
    aug = view_augmentation(AugmentConfig(preset=preset), size).to("meta")
    x = _uint8(32, size, "meta")
    with sync_calls({"meta"}) as calls:
        views = aug(x)
    assert views.shape == (32, 3, size, size) and views.dtype == torch.float32
    assert calls == [], "\n".join(summary(calls))


@pytest.mark.parametrize(("preset", "size"), PRESETS)
def test_view_reads_nothing_back_on_the_cpu(preset: str, size: int) -> None:
    """On the CPU every tensor counts: the one call left is the colour-jitter order, drawn on the
    host generator as kornia draws it (a CPU randperm read with tolist; no device involved)."""
    aug = view_augmentation(AugmentConfig(preset=preset), size)
    x = _uint8(32, size)
    aug(x)
    with sync_calls() as calls:
        aug(x)
    host_order = [c for c in calls if c.function == "step_order"]
    assert [c for c in calls if c not in host_order] == [], "\n".join(summary(calls))
    assert len(host_order) == (0 if preset == "supervised" else 1)


def test_the_counter_sees_kornias_syncs() -> None:
    """The instrumentation can fail: kornia's modules, on would-be device tensors, are caught."""
    x = torch.rand(8, 3, 32, 32)
    with sync_calls() as calls:
        K.RandomResizedCrop((32, 32))(x)  # crop boxes read back to slice each image
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(x)  # bool() of each step's factors
        K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=1.0)(x)  # bool(sigma > 0)
    names = [c.name for c in calls]
    assert names.count("tolist") >= 2 and names.count("__bool__") >= 5, summary(calls)
    with sync_calls({"meta"}) as calls:
        m = torch.zeros(4, 3, device="meta")
        with pytest.raises(NotImplementedError):
            m[m > 0]  # boolean mask: counted, and meta refuses its data-dependent shape
        torch.tensor([1.0, 2.0], device="meta")  # a host-to-device copy of Python data
        torch.ones(3).to("meta")
    names = [c.name for c in calls]
    assert names[0] == "__getitem__[bool]" and {"h2d:torch.tensor", "h2d:Tensor.to"} <= set(names), names


def test_eval_transform_makes_no_blocking_device_call() -> None:
    """eval_transform is kornia's Resize + Normalize, unchanged: its one host read (the antialias
    sigma check when downscaling) is of a tensor built from Python floats on the host, and Normalize
    copies mean and std with kornia's ``_to_device_nonblocking`` (non-blocking on CUDA)."""
    cfg = AugmentConfig()
    tf, x = eval_transform(cfg, 32).to("meta"), _uint8(4, 64, "meta")
    with sync_calls({"meta"}) as calls:
        tf(x)
    assert [c for c in calls if c.function != "_to_device_nonblocking"] == [], "\n".join(summary(calls))
    tf, x = eval_transform(cfg, 32), _uint8(4, 32)
    with sync_calls() as calls:
        tf(x)  # the trainer's case: data held at the model's size
    assert calls == [], "\n".join(summary(calls))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("preset", "size"), PRESETS)
def test_view_runs_under_cuda_sync_error_mode(preset: str, size: int) -> None:
    """The CPU counts above, checked by CUDA itself: any synchronising call raises in "error" mode."""
    aug = view_augmentation(AugmentConfig(preset=preset), size).to("cuda")
    x = _uint8(64, size).cuda()
    first = aug(x)  # loads the kernels, which may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = aug(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views.shape == first.shape == (64, 3, size, size) and views.device.type == "cuda"
    assert bool(torch.isfinite(views).all()) and not torch.equal(views, first)
