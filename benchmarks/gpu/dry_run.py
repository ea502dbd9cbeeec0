"""``--dry-run``: everything on the CPU up to the first CUDA call (configs, models, view pipelines,
lightly's recipe, synthetic data), so that a machine without a GPU finds what would break on one."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .context import GPU_CONFIG, ROOT, SYNC_CONFIG, data_overrides, synthetic_folder
from .photo_input import PHOTO_CONFIG, photo_folder, photo_overrides
from .syncs import ALGORITHMS
from .throughput import lightly_recipe
from .two_epochs import two_epoch_overrides


def _check_marker() -> None:
    if '"cuda:' not in (ROOT / "pyproject.toml").read_text():
        raise SystemExit("gpu_check --dry-run: the 'cuda' pytest marker is not registered in pyproject.toml")


def _sync_configs(spec: str, x: torch.Tensor) -> None:
    """The sync step's three configs: each one's model and view pipeline."""
    from ssl_emp.augment import view_augmentation
    from ssl_emp.config import load_config
    from ssl_emp.models import build_model

    for algorithm, preset in ALGORITHMS:
        cfg = load_config(SYNC_CONFIG, ["device=cuda", f"algorithm={algorithm}", f"augment.preset={preset}",
                                        "pruning.method=emp", "pruning.rate=0.3", *data_overrides(spec)])
        build_model(cfg.algorithm, cfg.model, num_classes=10)
        assert view_augmentation(cfg.augment, 32)(x).shape == (4, 3, 32, 32)


def _gpu_config(spec: str, x: torch.Tensor) -> None:
    """The two-epoch config: its model and evaluation transform."""
    from ssl_emp.augment import eval_transform
    from ssl_emp.config import load_config
    from ssl_emp.models import build_model

    gpu_cfg = load_config(GPU_CONFIG, two_epoch_overrides(spec))
    build_model(gpu_cfg.algorithm, gpu_cfg.model)
    eval_transform(gpu_cfg.augment, 32)(x)


def _lightly_step(folder: Path, cache: str) -> None:
    """One backward pass of lightly's recipe on the synthetic folder, loaded by the project's loader."""
    from ssl_emp.config import load_config
    from ssl_emp.data import load_data

    tiny = load_data(load_config(None, ["data.image_size=32", "data.cache_dir=" + cache,
                                        *data_overrides(f"synthetic:{folder}")]).data)
    loader, make = lightly_recipe(tiny.train.images, workers=0)
    x0, x1 = next(iter(loader))
    model, criterion, _ = make()
    criterion(model(x0), model(x1)).backward()


def _photo_step(tmp: Path) -> None:
    """The photo step's config, model and views: two views of a 300-600 px photo cut by the loader's dataset."""
    from ssl_emp.augment import crop_scale
    from ssl_emp.config import finalize, load_config
    from ssl_emp.data import load_data
    from ssl_emp.data.views import CroppedViews
    from ssl_emp.models import build_model

    folder, _ = photo_folder(tmp / "photos", 4, 2)
    cfg = finalize(load_config(PHOTO_CONFIG, [*photo_overrides(folder, tmp / "photo-cache"), "device=cpu"]))
    model = build_model(cfg.algorithm, cfg.model)
    size = cfg.data.image_size
    _, views = CroppedViews(load_data(cfg.data).train, model.num_views, size, crop_scale(cfg.augment, size), 0)[(0, 0)]
    assert views.shape == (2, 3, size, size)


def build_cpu_part(data: str | None) -> str:
    """Builds it all on the CPU (``data``: the CIFAR archive, or None for a synthetic folder); returns
    what the faiss step would find."""
    import faiss
    from PIL import Image

    _check_marker()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_folder(Path(tmp) / "images", classes=2, train=4, test=2)
        spec = data or f"synthetic:{folder}"
        _sync_configs(spec, x)
        _gpu_config(spec, x)
        _lightly_step(folder, tmp + "/cache")
        _photo_step(Path(tmp))
        Image.fromarray(x[0].permute(1, 2, 0).numpy())  # PIL, as lightly's workers use
    return "faiss-gpu" if hasattr(faiss, "StandardGpuResources") else "faiss-gpu not installed: recorded as such"
