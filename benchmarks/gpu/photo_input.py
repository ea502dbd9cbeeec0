"""The ``photo_input`` step: the photograph input path of configs/imagefolder_simclr_resnet50_gpu.yaml
on this machine. A temporary folder of JPEGs at 300-600 px (benchmarks/photo_input.py's, from
scikit-image's sample photographs, or smooth random images where scikit-image is missing) is decoded
once into memory (timed), then the loader alone (its workers cut two 224-px views per photo) and the
training step (views finished and ResNet-50 SimCLR stepped on the GPU) are timed in images/s; then
the same loader with ``data.backend=dali`` (NVIDIA DALI decoding each view's crop on the GPU), where
DALI is installed."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import context
from .context import ROOT, Context, trainer

PHOTO_CONFIG = ROOT / "configs" / "imagefolder_simclr_resnet50_gpu.yaml"
PHOTOS = 1536  # six batches of 256
STEPS = 5  # timed training steps, after one to warm up


def photo_folder(root: Path, n_train: int, n_test: int = 32) -> tuple[Path, str]:
    """A folder of 300-600 px JPEGs (train/ and test/) and what it was made from."""
    try:
        import skimage  # noqa: F401

        from benchmarks.photo_input import build_photos

        return build_photos(root, n_train, n_test), "scikit-image sample photographs"
    except ImportError:
        from PIL import Image

        rng = np.random.default_rng(0)
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                h, w = rng.integers(300, 601, 2)
                coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth: JPEG-like content, not noise
                folder = root / split / f"class{i % 4}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(coarse).resize((int(w), int(h)), Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
        return root, "smooth random images (scikit-image not installed)"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def photo_overrides(folder: Path, cache: Path) -> list[str]:
    return [f"device={context.DEVICE}", "data.dataset=imagefolder", f"data.data_dir={folder}", f"data.cache_dir={cache}",
            "progress=false", "log_every=1000000"]


def _dali_loader(folder: Path, tmp: Path) -> float | str:
    """images/s of the DALI loader alone on the same folder (its first epoch, the pipeline built in it)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return "skipped: NVIDIA DALI not installed (pip install -e '.[dali]')"
    overrides = [*photo_overrides(folder, tmp / "cache"), "data.backend=dali", "data.in_memory=false"]
    t = trainer(PHOTO_CONFIG, overrides, str(tmp / "run_dali"))
    t.state.pruner.set_epoch(0)
    seen, t0 = 0, time.perf_counter()
    for _, images in t.loader:
        seen += len(images)
    _synchronize(t.device)
    return round(seen / (time.perf_counter() - t0), 1)


def step_photo_input(ctx: Context) -> dict[str, Any]:
    from ssl_emp.train import train_step

    with tempfile.TemporaryDirectory() as tmp:
        folder, made_from = photo_folder(Path(tmp) / "photos", PHOTOS)
        t0 = time.perf_counter()
        t = trainer(PHOTO_CONFIG, photo_overrides(folder, Path(tmp) / "cache"), tmp + "/run")
        result: dict[str, Any] = {"status": "ok", "photos": PHOTOS, "made_from": made_from,
                                  "build_and_decode_s": round(time.perf_counter() - t0, 1),
                                  "workers": t.cfg.data.num_workers, "batch": t.cfg.optim.batch_size}
        ctx.save(result)
        t.state.model.train()
        t.state.pruner.set_epoch(0)
        seen, t0 = 0, time.perf_counter()
        for _, images in t.loader:  # the loader alone: what the workers deliver
            seen += len(images)
        result["loader_images_per_s"] = round(seen / (time.perf_counter() - t0), 1)
        result["dali_loader_images_per_s"] = _dali_loader(folder, Path(tmp))
        stored = t.data.train.stacked() if t.data.train.stacked() is not None else t.data.train.data
        result["stored_mib_per_1000_photos"] = round(stored.numel() / len(t.data.train) / 2**20 * 1000, 1)
        ctx.save(result)
        diverged = torch.zeros((), dtype=torch.bool, device=t.device)
        batches = iter(t.loader)
        idx, images = next(batches)
        train_step(t, idx, images, 0.0, diverged)  # warm-up: cuDNN's choice of kernels
        _synchronize(t.device)
        t0 = time.perf_counter()
        for _ in range(STEPS):
            try:
                idx, images = next(batches)
            except StopIteration:
                batches = iter(t.loader)
                idx, images = next(batches)
            train_step(t, idx, images, 0.0, diverged)
        _synchronize(t.device)
        result["train_images_per_s"] = round(STEPS * t.cfg.optim.batch_size / (time.perf_counter() - t0), 1)
        if t.device.type == "cuda":
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result
