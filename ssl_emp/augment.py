"""View pipelines on batched uint8 tensors on the training device, with no host synchronisation.

Every augmentation samples its parameters per image, and each call draws anew, so the two views of
one image and two images of one batch differ. Presets follow lightly's ``SimCLRTransform`` (Chen et
al. 2020) and ``MoCoV2Transform`` (Chen et al. 2020, https://arxiv.org/abs/2003.04297); for inputs of
32 px or less the defaults are lightly's CIFAR-10 recipe (colour-jitter strength 0.5, no blur).
``supervised`` is the standard CIFAR classification recipe (random crop after 4-px zero padding,
horizontal flip; He et al. 2016).

The ops are kornia's augmentation modules (``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandomRotation``, ``ColorJitter``, ``RandomGrayscale``, ``RandomGaussianBlur``, ``RandomCrop``,
``Normalize``) with the same parameter distributions and the same image functions, rebuilt so that
no call reads a device value back to the host. kornia 0.9's modules do, on every view on CUDA
(tests/test_augment_sync.py finds them): the crops read their boxes back (``tolist``) to slice and
resize one image at a time, ``ColorJitter`` reads ``bool`` of each step's factors to skip a step
whose factors are all neutral, and ``RandomGaussianBlur`` reads ``bool(sigma > 0)``. Each wait
stalls the launch queue. Here every parameter is drawn with torch's RNG on the input's device, an
op with an apply probability runs on the whole batch and ``torch.where`` keeps it for the images it
applies to (boolean indexing would need ``nonzero``), and a crop is one batched resample or gather.
"""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from kornia.filters import filter2d_separable, get_gaussian_kernel1d
from kornia.geometry.transform import rotate
from torch import Tensor, nn

from ssl_emp.settings import AugmentConfig

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
#: Every ``augment.preset``: the view presets above, ``supervised`` (crop after padding + flip) and
#: ``auto`` (resolved by ``config.finalize``: ``digits`` on digits, else the model class's ``augment_preset``).
PRESET_NAMES: tuple[str, ...] = ("auto", *PRESETS, "supervised")
#: The ``augment.*`` knobs of the view presets; ``supervised`` reads only ``SUPERVISED_KNOBS``.
VIEW_KNOBS: tuple[str, ...] = ("min_scale", "cj_prob", "cj_strength", "gray_prob", "blur_prob", "hflip_prob",
                               "rotate_prob", "rotate_degrees")
SUPERVISED_KNOBS: tuple[str, ...] = ("hflip_prob",)


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
    for key in VIEW_KNOBS:
        if getattr(cfg, key) is not None:
            values[key] = getattr(cfg, key)
    return values


class ToFloat(nn.Module):
    """uint8 [0, 255] -> float [0, 1]; the device copy stays uint8 (4x less traffic)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x


# --------------------------------------------------------------------------- the random ops
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # width / height, kornia's and torchvision's RandomResizedCrop default
CROP_TRIES = 10  # candidate crops per image before the fallback, as torchvision's get_params and kornia
BLUR_SIGMA = (0.1, 2.0)  # SimCLR's Gaussian blur
# One draw's parameters: tensors on the input's device, except ColorJitter's "order" (Python ints).
Params = dict[str, Any]


def _blend(apply: Tensor, augmented: Tensor, x: Tensor) -> Tensor:
    """Per image, ``augmented`` where ``apply`` else ``x``: a select, where indexing the batch by the
    mask would need its ``nonzero`` on the host."""
    return torch.where(apply.view(-1, *([1] * (x.dim() - 1))), augmented, x)


class RandomOp(nn.Module):
    """An augmentation drawn per image on the input's device (``draw``) and then applied (``apply``),
    split so that the draws can be compared with kornia's ``forward_parameters``."""

    def draw(self, x: Tensor) -> Params:
        raise NotImplementedError

    def apply(self, x: Tensor, params: Params) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.apply(x, self.draw(x))


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """(w, h) when no candidate fits, as kornia's generator and torchvision: the whole image when its
    aspect ratio is within ``ratio``, else its full width (too narrow) or full height (too wide)."""
    lo, hi = min(ratio), max(ratio)
    if width / height < lo:
        return float(width), float(round(width / lo))
    if width / height > hi:
        return float(round(height * hi)), float(height)
    return float(width), float(height)


def resized_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                       ratio: tuple[float, float] = CROP_RATIO, device: torch.device | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """``(n, 4)`` crop boxes ``(x0, y0, w, h)`` in whole pixels, drawn as kornia's ResizedCropGenerator
    and torchvision's ``RandomResizedCrop.get_params``: area fraction uniform in ``scale``, log aspect
    ratio uniform in ``log(ratio)``, the first of ``CROP_TRIES`` candidates that fits, the fallback when
    none does, and a uniform whole-pixel position. torchvision tries the candidates one after another;
    here all are drawn at once and the first that fits is picked on the device. ``generator``: the
    views cut in DataLoader workers (``ssl_emp.data.views``) draw from their own, seeded per image."""
    u = torch.rand(n, 2 * CROP_TRIES + 2, device=device, generator=generator)  # one launch for the whole draw
    area = (scale[0] + (scale[1] - scale[0]) * u[:, :CROP_TRIES]) * (height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, CROP_TRIES:2 * CROP_TRIES])
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    tries = torch.arange(CROP_TRIES, device=device)
    first = torch.where(fits, tries, CROP_TRIES).amin(dim=1, keepdim=True)  # CROP_TRIES: none fits
    found = first[:, 0] < CROP_TRIES
    pick = first.clamp(max=CROP_TRIES - 1)
    fallback_w, fallback_h = _fallback_size(height, width, ratio)
    w = torch.where(found, w.gather(1, pick)[:, 0], fallback_w).clamp(1, width)
    h = torch.where(found, h.gather(1, pick)[:, 0], fallback_h).clamp(1, height)
    x0 = (u[:, -2] * (width - w + 1)).floor()
    y0 = (u[:, -1] * (height - h + 1)).floor()
    return torch.stack([x0, y0, w, h], dim=1)


def resized_crop(x: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Each image's box ``(x0, y0, w, h)`` resized to ``size``, bilinear with corner alignment: output
    column j samples the box at ``x0 + j (w - 1) / (size - 1)``, as kornia's slice mode (a slice, then
    ``interpolate(align_corners=True)``) does one image at a time.

    kornia's ``crop_and_resize`` does this in one batch too, but copies its corner points from Python
    lists to the device on every call (a blocking copy on CUDA) and fits and inverts a perspective
    transform; the map from output to input is a scale and a shift, so ``affine_grid`` takes it as is.
    """
    height, width = x.shape[-2:]
    x0, y0, w, h = boxes.to(x.dtype).unbind(1)
    zero = torch.zeros_like(x0)
    sx, sy = (w - 1) / max(width - 1, 1), (h - 1) / max(height - 1, 1)
    tx, ty = (2 * x0 + w - 1) / max(width - 1, 1) - 1, (2 * y0 + h - 1) / max(height - 1, 1) - 1
    theta = torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(-1, 2, 3)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=True)
    # "border": the samples lie inside the image; rounding at its last row or column must not
    # blend in zeros.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class RandomResizedCrop(RandomOp):
    """``K.RandomResizedCrop(size, scale)``: a random area and aspect ratio, resized to ``size``."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO):
        super().__init__()
        self.size, self.scale, self.ratio = size, scale, ratio

    def draw(self, x: Tensor) -> Params:
        return {"boxes": resized_crop_boxes(x.shape[0], x.shape[-2], x.shape[-1], self.scale, self.ratio, x.device)}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return resized_crop(x, params["boxes"], self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}"


class RandomCrop(RandomOp):
    """``K.RandomCrop(size, padding)``: zero padding on every side, then a crop at a uniform
    whole-pixel offset; gathered rows and columns, so the pixels are copied, not resampled."""

    def __init__(self, size: tuple[int, int], padding: int):
        super().__init__()
        self.size, self.padding = size, padding

    def draw(self, x: Tensor) -> Params:
        height, width = x.shape[-2] + 2 * self.padding, x.shape[-1] + 2 * self.padding
        if height < self.size[0] or width < self.size[1]:
            raise ValueError(f"RandomCrop: a {tuple(x.shape[-2:])} image padded by {self.padding} is smaller than {self.size}")
        u = torch.rand(x.shape[0], 2, device=x.device)
        return {"x0": (u[:, 0] * (width - self.size[1] + 1)).floor().long(),
                "y0": (u[:, 1] * (height - self.size[0] + 1)).floor().long()}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        p, (out_h, out_w) = self.padding, self.size
        x = F.pad(x, [p, p, p, p])  # zeros, as kornia's default fill
        b, c, _, width = x.shape
        rows = params["y0"][:, None] + torch.arange(out_h, device=x.device)
        cols = params["x0"][:, None] + torch.arange(out_w, device=x.device)
        x = x.gather(2, rows[:, None, :, None].expand(b, c, out_h, width))
        return x.gather(3, cols[:, None, None, :].expand(b, c, out_h, out_w))

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}"


class CoinOp(RandomOp):
    """An op applied to each image with probability p; the apply mask is its only parameter."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def draw(self, x: Tensor) -> Params:
        return {"apply": torch.rand(x.shape[0], device=x.device) < self.p}

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomHorizontalFlip(CoinOp):
    """``K.RandomHorizontalFlip(p)``."""

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return _blend(params["apply"], x.flip(-1), x)


class RandomRotation(RandomOp):
    """``K.RandomRotation(degrees, p)``: an angle uniform in +-degrees about the image centre,
    bilinear, zeros outside, corner-aligned; kornia's functional ``rotate`` is the module's own warp."""

    def __init__(self, degrees: float, p: float):
        super().__init__()
        self.degrees, self.p = degrees, p

    def draw(self, x: Tensor) -> Params:
        u = torch.rand(x.shape[0], 2, device=x.device)
        return {"apply": u[:, 0] < self.p, "degrees": self.degrees * (2 * u[:, 1] - 1)}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        rotated = rotate(x, params["degrees"].to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        return _blend(params["apply"], rotated, x)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, p={self.p}"


def _adjust_hue_turns(x: Tensor, factor: Tensor) -> Tensor:
    return adjust_hue(x, factor * (2 * math.pi))  # the factor is in turns, as torchvision's


# kornia's ColorJitter steps, in its order indices 0..3: torchvision's formulas (brightness scales,
# contrast blends with the grayscale mean, saturation with the grayscale, hue shifts).
COLOR_STEPS = {
    "brightness": adjust_brightness_accumulative,
    "contrast": adjust_contrast_with_mean_subtraction,
    "saturation": adjust_saturation_with_gray_subtraction,
    "hue": _adjust_hue_turns,
}


def jitter_ranges(brightness: float, contrast: float, saturation: float, hue: float) -> dict[str, tuple[float, float]]:
    """Factor ranges as kornia's ColorJitter (and torchvision's): ``[max(0, 1 - s), 1 + s]``, hue
    ``[-h, h]``; a step whose range is one neutral point is left out, as kornia skips it."""
    ranges = {name: (max(0.0, 1.0 - s), 1.0 + s) for name, s in
              (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))}
    ranges["hue"] = (-hue, hue)
    return {name: r for name, r in ranges.items() if r[1] > r[0]}


def step_order(steps: list[str]) -> tuple[str, ...]:
    """A random order of ``steps``: kornia's ColorJitter order, one per call (``torch.randperm(4)`` on
    the host's generator, filtered to the steps that run). A host draw: nothing waits on the device."""
    names = tuple(COLOR_STEPS)
    return tuple(names[i] for i in torch.randperm(4).tolist() if names[i] in steps)


class ColorJitter(RandomOp):
    """``K.ColorJitter(brightness, contrast, saturation, hue, p)``: per-image factors, one random
    order of the steps per call. kornia draws the order per call as well; torchvision and lightly
    draw one per image (the same order distribution for each image, correlated within a batch)."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float):
        super().__init__()
        self.ranges = jitter_ranges(brightness, contrast, saturation, hue)
        self.p = p

    def draw(self, x: Tensor) -> Params:
        u = torch.rand(x.shape[0], 1 + len(self.ranges), device=x.device)
        params: Params = {"apply": u[:, 0] < self.p}
        for i, (name, (lo, hi)) in enumerate(self.ranges.items(), start=1):
            params[name] = lo + (hi - lo) * u[:, i]
        params["order"] = step_order(list(self.ranges))
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        jittered = x.clamp(0.0, 1.0)
        for name in params["order"]:
            jittered = COLOR_STEPS[name](jittered, params[name].to(x.dtype))
        return _blend(params["apply"], jittered.clamp(0.0, 1.0), x)

    def extra_repr(self) -> str:
        return f"ranges={self.ranges}, p={self.p}"


class RandomGrayscale(CoinOp):
    """``K.RandomGrayscale(p)``: ITU-R 601 luma copied to every channel."""

    def apply(self, x: Tensor, params: Params) -> Tensor:
        gray = rgb_to_grayscale(x) if x.shape[1] == 3 else x.mean(1, keepdim=True)
        return _blend(params["apply"], gray.expand_as(x), x)


class RandomGaussianBlur(RandomOp):
    """``K.RandomGaussianBlur((k, k), sigma, p)``: one sigma per image for both axes, reflected border."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = BLUR_SIGMA, p: float = 0.5):
        super().__init__()
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def draw(self, x: Tensor) -> Params:
        u = torch.rand(x.shape[0], 2, device=x.device)
        return {"apply": u[:, 0] < self.p, "sigma": self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[:, 1]}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        # kornia's gaussian_blur2d checks ``bool(sigma > 0)`` on the device tensor; sigma is drawn
        # from a positive range, so its two steps (per-image kernels, separable filter) run directly.
        kernel = get_gaussian_kernel1d(self.kernel_size, params["sigma"].to(x.dtype)[:, None])
        return _blend(params["apply"], filter2d_separable(x, kernel, kernel, "reflect"), x)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p}"


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel. The statistics are buffers, moved once with the module;
    ``K.Normalize`` keeps them on the host and copies them to the device on every call."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.mean, self.std
        if mean.device != x.device:  # a pipeline never moved with .to(device): copy, as K.Normalize does
            mean, std = mean.to(x.device), std.to(x.device)
        return (x - mean) / std


# --------------------------------------------------------------------------- pipelines
def crop_scale(cfg: AugmentConfig, image_size: int) -> tuple[float, float]:
    """The area fraction range of the random resized crop: the preset's ``min_scale`` to 1; the
    ``supervised`` preset on photographs crops as torchvision's ImageNet recipe (0.08 to 1)."""
    if cfg.preset == "supervised":
        return (0.08, 1.0)
    return (float(resolve(cfg, image_size)["min_scale"]), 1.0)


def view_augmentation(cfg: AugmentConfig, image_size: int, crop: bool = True) -> nn.Sequential:
    """One random view per call: crop, flip, rotation, colour jitter, grayscale, blur, normalise.

    uint8 or float ``(B, C, H, W)`` in, normalised float ``(B, C, image_size, image_size)`` out. An op
    that can never change an image (probability or strength 0) is left out. ``crop=False``: the
    input is a batch of views already cut (``ssl_emp.data.views``), so the crop is left out.
    """
    v = resolve(cfg, image_size)
    size = (image_size, image_size)
    if cfg.preset == "supervised":
        ops: list[nn.Module] = [ToFloat(), *([RandomCrop(size, SUPERVISED_PADDING)] if crop else [])]
        if float(v["hflip_prob"]) > 0:
            ops.append(RandomHorizontalFlip(float(v["hflip_prob"])))
        return nn.Sequential(*ops, Normalize(cfg.mean, cfg.std))
    s = float(v["cj_strength"])
    b, c, sat, h = (s * j for j in v["jitter"])
    ops = [ToFloat(), *([RandomResizedCrop(size, scale=crop_scale(cfg, image_size))] if crop else [])]
    if float(v["hflip_prob"]) > 0:
        ops.append(RandomHorizontalFlip(float(v["hflip_prob"])))
    if float(v["rotate_prob"]) > 0 and float(v["rotate_degrees"]) > 0:
        ops.append(RandomRotation(float(v["rotate_degrees"]), float(v["rotate_prob"])))
    if float(v["cj_prob"]) > 0 and jitter_ranges(b, c, sat, min(h, 0.5)):
        ops.append(ColorJitter(b, c, sat, min(h, 0.5), float(v["cj_prob"])))
    if float(v["gray_prob"]) > 0:
        ops.append(RandomGrayscale(float(v["gray_prob"])))
    if float(v["blur_prob"]) > 0:
        kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # ~10% of the side, odd (SimCLR)
        ops.append(RandomGaussianBlur(kernel, BLUR_SIGMA, float(v["blur_prob"])))
    return nn.Sequential(*ops, Normalize(cfg.mean, cfg.std))


def eval_transform(cfg: AugmentConfig, image_size: int) -> nn.Sequential:
    """Deterministic preprocessing for feature extraction: to float, resize, normalise."""
    return nn.Sequential(
        ToFloat(),
        K.Resize((image_size, image_size), antialias=True),
        K.Normalize(mean=torch.tensor(cfg.mean), std=torch.tensor(cfg.std)),
    )
