"""What the steps share: the repository's paths and configs, the data spec, a step's ``Context``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = Path("shared") / "data" / "cifar10-jpeg.tar.gz"
SYNC_CONFIG = ROOT / "configs" / "cifar10_simclr_cpu.yaml"  # the CPU config, on the GPU: quick to build
GPU_CONFIG = ROOT / "configs" / "cifar10_simclr_resnet18.yaml"
BATCH = 512  # lightly's CIFAR-10 recipe and GPU_CONFIG
DEVICE = "cuda"  # one name, read as context.DEVICE by the steps, so that their code can be exercised on the CPU


@dataclass
class Context:
    """What a step process gets: its deadline, the data to use, where to write its result."""

    deadline: float
    data: str | None  # a CIFAR archive, "synthetic:<folder>", or None (dry run)
    result: Path

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self, result: dict[str, Any]) -> None:
        """Written as the step goes, so that a step killed at its limit still reports what it had."""
        write_json(self.result, result)


def write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def data_overrides(data: str) -> list[str]:
    """Config overrides that point the loader at ``data`` (an archive, a folder or "synthetic:<folder>")."""
    if data.startswith("synthetic:"):
        return ["data.dataset=imagefolder", f"data.data_dir={data.split(':', 1)[1]}", "data.train_subset=null"]
    return ["data.dataset=imagefolder", f"data.data_dir={data}"]


def find_archive(explicit: str | None) -> Path | None:
    for path in ([Path(explicit)] if explicit else [ROOT / ARCHIVE, ROOT.parent / ARCHIVE]):
        if path.exists():
            return path.resolve()
    return None


def synthetic_folder(root: Path, classes: int = 10, train: int = 160, test: int = 20, size: int = 32) -> Path:
    """An image-folder tree of random PNGs (train/ and test/), ``classes`` x ``train`` training
    images: enough for batches of 512 through the same loader as CIFAR's."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def trainer(config: Path, overrides: list[str], tmp: str):
    """``ssl_emp.train.build`` for ``config`` with ``overrides``, its output in ``tmp``, not the main process."""
    from ssl_emp.config import load_config
    from ssl_emp.run.folder import Run
    from ssl_emp.train import build

    return build(load_config(config, [*overrides, f"output_dir={tmp}"]), Run(tmp, is_main=False))
