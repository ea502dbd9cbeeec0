"""Shared fixtures: tiny, fast runs on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"

# A 4-channel-wide ResNet on 16 px digits: fast enough for many short runs in the suite.
TINY = [
    "--no-progress",
    "--set", "data.image_size=16",
    "--set", "model.backbone_kwargs.channels=[8,16,32,64]",
    "--set", "model.proj_hidden_dim=64",
    "--set", "model.proj_out_dim=32",
    "--set", "optim.batch_size=64",
]


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)


@pytest.fixture
def shared_cifar() -> Path:
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"shared CIFAR-10 archive not found at {SHARED_CIFAR} (only present beside the project checkout)")
    return SHARED_CIFAR
