"""View pipelines with kornia, on batched uint8 tensors on the training device.

Every augmentation samples its parameters per image (kornia's ``same_on_batch=False``), and
each call draws anew, so the two views of one image and two images of one batch differ.
Presets follow lightly's ``SimCLRTransform`` (Chen et al. 2020) and ``MoCoV2Transform``
(Chen et al. 2020, https://arxiv.org/abs/2003.04297); for inputs of 32 px or less the defaults are
lightly's CIFAR-10 recipe (colour-jitter strength 0.5, no blur). ``supervised`` is the standard
CIFAR classification recipe (random crop after 4-px zero padding, horizontal flip; He et al. 2016).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from ssl_emp.config import AugmentConfig

# (cj_bright, cj_contrast, cj_sat, cj_hue) and the rest, as in lightly's transforms.
PRESETS: dict[str, dict[str, object]] = {
    "simclr": dict(jitter=(0.8, 0.8, 0.8, 0.2), min_scale=0.08, cj_prob=0.8, cj_strength=1.0, gray_prob=0.2, blur_prob=0.5, hflip_prob=0.5, rotate_prob=0.0, rotate_degrees=0.0),
    "mocov2": dict(jitter=(0.4, 0.4, 0.4, 0.1), min_scale=0.2, cj_prob=0.8, cj_strength=1.0, gray_prob=0.2, blur_prob=0.5, hflip_prob=0.5, rotate_prob=0.0, rotate_degrees=0.0),
    # Grayscale handwritten digits: no flips (2 and 5 are mirror images), small rotations and
    # milder crops instead; measured on the digits validation runs in benchmarks/README.md.
    "digits": dict(jitter=(0.8, 0.8, 0.0, 0.0), min_scale=0.5, cj_prob=0.8, cj_strength=0.5, gray_prob=0.0, blur_prob=0.0, hflip_prob=0.0, rotate_prob=0.5, rotate_degrees=15.0),
}
SMALL_IMAGE_OVERRIDES = dict(cj_strength=0.5, blur_prob=0.0)  # lightly's CIFAR-10 benchmark
SUPERVISED_PADDING = 4  # px of zero padding before the random crop (the CIFAR classification recipe)


def resolve(cfg: AugmentConfig, image_size: int) -> dict[str, object]:
    """Preset values, the small-image recipe at <= 32 px, then whatever the config sets."""
    # "auto" is resolved from the data set by config.finalize; without that context, SimCLR's.
    if cfg.preset == "supervised":
        values: dict[str, object] = {"hflip_prob": 0.5}
        if cfg.hflip_prob is not None:
            values["hflip_prob"] = cfg.hflip_prob
        return values
    values = dict(PRESETS["simclr" if cfg.preset == "auto" else cfg.preset])
    if image_size <= 32 and cfg.preset != "digits":
        values.update(SMALL_IMAGE_OVERRIDES)
    for key in ("min_scale", "cj_prob", "cj_strength", "gray_prob", "blur_prob", "hflip_prob", "rotate_prob", "rotate_degrees"):
        if getattr(cfg, key) is not None:
            values[key] = getattr(cfg, key)
    return values


class ToFloat(nn.Module):
    """uint8 [0, 255] -> float [0, 1]; the device copy stays uint8 (4x less traffic)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def view_augmentation(cfg: AugmentConfig, image_size: int) -> nn.Sequential:
    """One random view per call: crop, flip, rotation, colour jitter, grayscale, blur, normalise."""
    v = resolve(cfg, image_size)
    if cfg.preset == "supervised":
        return nn.Sequential(
            ToFloat(),
            K.RandomCrop((image_size, image_size), padding=SUPERVISED_PADDING),
            K.RandomHorizontalFlip(p=float(v["hflip_prob"])),
            K.Normalize(mean=torch.tensor(cfg.mean), std=torch.tensor(cfg.std)),
        )
    s = float(v["cj_strength"])
    b, c, sat, h = (s * j for j in v["jitter"])
    ops: list[nn.Module] = [
        ToFloat(),
        K.RandomResizedCrop((image_size, image_size), scale=(float(v["min_scale"]), 1.0)),
        K.RandomHorizontalFlip(p=float(v["hflip_prob"])),
        K.RandomRotation(float(v["rotate_degrees"]), p=float(v["rotate_prob"])),
        K.ColorJitter(b, c, sat, min(h, 0.5), p=float(v["cj_prob"])),
        K.RandomGrayscale(p=float(v["gray_prob"])),
    ]
    if float(v["blur_prob"]) > 0:
        kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # ~10% of the side, odd (SimCLR)
        ops.append(K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), p=float(v["blur_prob"])))
    ops.append(K.Normalize(mean=torch.tensor(cfg.mean), std=torch.tensor(cfg.std)))
    return nn.Sequential(*ops)


def eval_transform(cfg: AugmentConfig, image_size: int) -> nn.Sequential:
    """Deterministic preprocessing for feature extraction: to float, resize, normalise."""
    return nn.Sequential(
        ToFloat(),
        K.Resize((image_size, image_size), antialias=True),
        K.Normalize(mean=torch.tensor(cfg.mean), std=torch.tensor(cfg.std)),
    )
