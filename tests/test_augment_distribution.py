"""The sync-free view ops draw what kornia's modules draw, and turn the same draws into the same pixels.

Distributions: N = 20,000 draws from each side (CPU, fixed seed); kornia's come from the modules'
own ``forward_parameters``. Continuous or many-valued parameters: the two-sample Kolmogorov-Smirnov
distance stays under its alpha = 0.001 critical value, 1.95 * sqrt(2 / N) = 0.0195 (every quantile
of one sample within 0.0195 in probability of the other's), and the means are within 5 standard
errors of their difference. Rates: each side within 4.5 binomial standard errors of the nominal
probability (0.016 at p = 0.5). Together with the pixel tests (the same parameters give kornia's
image) this is the same augmentation distribution.
"""

from __future__ import annotations

import math
from collections import Counter

import kornia.augmentation as K
import pytest
import torch

from ssl_emp import augment as A
from ssl_emp.config import AugmentConfig

N = 20_000
KS_LIMIT = 1.95 * math.sqrt(2 / N)


def _shape(n: int, height: int, width: int) -> torch.Tensor:
    return torch.empty(1, 3, height, width).expand(n, -1, -1, -1)  # draws read only shape and device


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the two empirical CDFs, evaluated at every value either sample takes (ties
    included, so discrete draws such as whole-pixel crop sizes are compared exactly)."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    at = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, at, right=True) / a.numel()
    fb = torch.searchsorted(b, at, right=True) / b.numel()
    return float((fa - fb).abs().max())


def assert_same_distribution(mine: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    d = ks_distance(mine, ref)
    assert d <= KS_LIMIT, f"{what}: KS distance {d:.4f} > {KS_LIMIT:.4f}"
    mine, ref = mine.double(), ref.double()
    se = math.sqrt(float(mine.var()) / mine.numel() + float(ref.var()) / ref.numel())
    gap = abs(float(mine.mean() - ref.mean()))
    assert gap <= 5 * se + 1e-12, f"{what}: means {float(mine.mean()):.4f} vs {float(ref.mean()):.4f} (5 SE = {5 * se:.4f})"


def assert_rate(mine: torch.Tensor, ref: torch.Tensor, p: float, what: str) -> None:
    tol = 4.5 * math.sqrt(p * (1 - p) / N)
    for name, sample in (("ours", mine), ("kornia", ref)):
        rate = float(sample.double().mean())
        assert abs(rate - p) <= tol, f"{what} ({name}): rate {rate:.4f}, expected {p} +- {tol:.4f}"


def _kornia_boxes(src: torch.Tensor) -> torch.Tensor:
    """kornia's (B, 4, 2) corner boxes as (x0, y0, w, h)."""
    return torch.stack([src[:, 0, 0], src[:, 0, 1], src[:, 1, 0] - src[:, 0, 0] + 1, src[:, 2, 1] - src[:, 0, 1] + 1], 1)


# --------------------------------------------------------------------------- distributions
@pytest.mark.parametrize(("min_scale", "height", "width"), [
    pytest.param(0.08, 32, 32, id="simclr-32px"), pytest.param(0.2, 64, 64, id="mocov2-64px"),
    pytest.param(0.5, 32, 32, id="digits"), pytest.param(0.7, 24, 40, id="wide-image-fallbacks"),
])
def test_resized_crop_boxes_follow_kornia(min_scale: float, height: int, width: int) -> None:
    torch.manual_seed(0)
    ours = A.RandomResizedCrop((32, 32), (min_scale, 1.0)).draw(_shape(N, height, width))["boxes"]
    ref = _kornia_boxes(K.RandomResizedCrop((32, 32), scale=(min_scale, 1.0)).forward_parameters((N, 3, height, width))["src"])
    for name, boxes in (("ours", ours), ("kornia", ref)):
        x0, y0, w, h = boxes.unbind(1)
        assert bool((w >= 1).all() & (h >= 1).all() & (x0 >= 0).all() & (y0 >= 0).all()), name
        assert bool((x0 + w <= width).all() & (y0 + h <= height).all()), name
    (ox, oy, ow, oh), (rx, ry, rw, rh) = ours.unbind(1), ref.unbind(1)
    assert_same_distribution(ow * oh / (height * width), rw * rh / (height * width), "area fraction")
    assert_same_distribution((ow / oh).log(), (rw / rh).log(), "log aspect ratio")
    assert_same_distribution(ow, rw, "crop width")
    assert_same_distribution(ox / (width - ow + 1), rx / (width - rw + 1), "x position in its range")
    assert_same_distribution(oy / (height - oh + 1), ry / (height - rh + 1), "y position in its range")
    if width > height:  # 40x24 is wider than 4/3: about half the draws take kornia's fallback, 32x24
        fallback = (ow == 32) & (oh == 24)
        assert 0.05 < float(fallback.double().mean()) < 0.95
        assert_rate(fallback, (rw == 32) & (rh == 24), float(fallback.double().mean()), "fallback")


def test_flip_grayscale_rates_follow_kornia() -> None:
    torch.manual_seed(0)
    x = _shape(N, 32, 32)
    assert_rate(A.RandomHorizontalFlip(0.5).draw(x)["apply"], K.RandomHorizontalFlip(p=0.5).forward_parameters(x.shape)["batch_prob"], 0.5, "flip")
    assert_rate(A.RandomGrayscale(0.2).draw(x)["apply"], K.RandomGrayscale(p=0.2).forward_parameters(x.shape)["batch_prob"], 0.2, "grayscale")


def test_rotation_follows_kornia() -> None:
    torch.manual_seed(0)
    x = _shape(N, 32, 32)
    ours, ref = A.RandomRotation(15.0, 0.5).draw(x), K.RandomRotation(15.0, p=0.5).forward_parameters(x.shape)
    assert_rate(ours["apply"], ref["batch_prob"], 0.5, "rotation")
    assert_same_distribution(ours["degrees"], ref["degrees"], "angle")
    assert float(ours["degrees"].abs().max()) <= 15.0


@pytest.mark.parametrize("strength", [pytest.param((0.4, 0.4, 0.4, 0.1), id="32px"), pytest.param((0.8, 0.8, 0.8, 0.2), id="large"),
                                      pytest.param((0.4, 0.4, 0.0, 0.0), id="digits")])
def test_colour_jitter_follows_kornia(strength: tuple[float, float, float, float]) -> None:
    torch.manual_seed(0)
    x = _shape(N, 32, 32)
    ours, ref = A.ColorJitter(*strength, 0.8).draw(x), K.ColorJitter(*strength, p=0.8).forward_parameters(x.shape)
    assert_rate(ours["apply"], ref["batch_prob"], 0.8, "jitter")
    for name, s in zip(A.COLOR_STEPS, strength, strict=True):
        if s == 0:  # kornia draws the neutral factor and skips the step; ours leaves it out
            assert name not in ours and bool((ref[f"{name}_factor"] == (0.0 if name == "hue" else 1.0)).all())
        else:
            assert_same_distribution(ours[name], ref[f"{name}_factor"], f"{name} factor")


def test_colour_jitter_order_is_uniform_per_call() -> None:
    torch.manual_seed(0)
    calls = 2400
    orders = Counter(A.step_order(list(A.COLOR_STEPS)) for _ in range(calls))
    assert len(orders) == 24  # every permutation of the four steps occurs
    first = Counter(order[0] for order in orders.elements())
    tol = 4.5 * math.sqrt(calls * 0.25 * 0.75)
    assert all(abs(first[name] - calls / 4) <= tol for name in A.COLOR_STEPS), first
    two = Counter(A.step_order(["brightness", "contrast"]) for _ in range(calls))
    assert set(two) == {("brightness", "contrast"), ("contrast", "brightness")}
    assert abs(two["brightness", "contrast"] - calls / 2) <= 4.5 * math.sqrt(calls / 4)


def test_blur_follows_kornia() -> None:
    torch.manual_seed(0)
    x = _shape(N, 64, 64)
    ours, ref = A.RandomGaussianBlur(7, (0.1, 2.0), 0.5).draw(x), K.RandomGaussianBlur((7, 7), (0.1, 2.0), p=0.5).forward_parameters(x.shape)
    assert_rate(ours["apply"], ref["batch_prob"], 0.5, "blur")
    assert_same_distribution(ours["sigma"], ref["sigma"], "sigma")


def test_padded_crop_offsets_follow_kornia() -> None:
    torch.manual_seed(0)
    x = _shape(N, 32, 32)
    ours = A.RandomCrop((32, 32), 4).draw(x)
    ref = K.RandomCrop((32, 32), padding=4).forward_parameters(x.shape)["src"][:, 0]  # top-left corner (x, y)
    for axis, name in enumerate(("x0", "y0")):
        assert set(ours[name].tolist()) == set(range(9)) == set(ref[:, axis].long().tolist())
        assert_same_distribution(ours[name], ref[:, axis], f"padded-crop {name}")


def test_pipelines_keep_the_kornia_order_of_ops() -> None:
    def names(preset: str, size: int) -> list[str]:
        return [type(m).__name__ for m in A.view_augmentation(AugmentConfig(preset=preset), size)]

    base = ["ToFloat", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale"]
    assert names("simclr", 32) == [*base, "Normalize"]
    assert names("simclr", 64) == names("mocov2", 224) == [*base, "RandomGaussianBlur", "Normalize"]
    assert names("digits", 32) == ["ToFloat", "RandomResizedCrop", "RandomRotation", "ColorJitter", "Normalize"]


# --------------------------------------------------------------------------- same draws, same pixels
def _x(n: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(1))


def test_resized_crop_matches_kornia_pixels() -> None:
    torch.manual_seed(0)
    x = _x(64, 40, 48)
    k = K.RandomResizedCrop((32, 32), scale=(0.08, 1.0))
    params = k.forward_parameters(x.shape)
    torch.testing.assert_close(A.resized_crop(x, _kornia_boxes(params["src"]), (32, 32)), k(x, params=params), atol=2e-5, rtol=0)


def test_padded_crop_matches_kornia_pixels() -> None:
    torch.manual_seed(0)
    x = _x(64, 32, 32)
    k = K.RandomCrop((32, 32), padding=4)
    params = k.forward_parameters(x.shape)
    ours = A.RandomCrop((32, 32), 4).apply(x, {"x0": params["src"][:, 0, 0].long(), "y0": params["src"][:, 0, 1].long()})
    torch.testing.assert_close(ours, k(x, params=params), atol=0, rtol=0)


def test_per_image_ops_match_kornia_pixels() -> None:
    torch.manual_seed(0)
    x = _x(64, 32, 32)
    cases = [
        (K.RandomHorizontalFlip(p=0.5), A.RandomHorizontalFlip(0.5), {}),
        (K.RandomRotation(15.0, p=0.5), A.RandomRotation(15.0, 0.5), {"degrees": "degrees"}),
        (K.RandomGrayscale(p=0.2), A.RandomGrayscale(0.2), {}),
        (K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5), A.RandomGaussianBlur(5, (0.1, 2.0), 0.5), {"sigma": "sigma"}),
        (K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), A.ColorJitter(0.4, 0.4, 0.4, 0.1, 0.8),
         {name: f"{name}_factor" for name in A.COLOR_STEPS}),
    ]
    for kornia_op, ours, names in cases:
        params = kornia_op.forward_parameters(x.shape)
        mine = {"apply": params["batch_prob"] > 0.5, **{ours_name: params[k_name] for ours_name, k_name in names.items()}}
        if "order" in params:
            mine["order"] = tuple(list(A.COLOR_STEPS)[i] for i in params["order"].tolist())
        applied = mine["apply"]
        assert 0 < int(applied.sum()) < len(applied), "the case must mix applied and skipped images"
        name = type(ours).__name__
        torch.testing.assert_close(ours.apply(x, mine), kornia_op(x, params=params), atol=1e-6, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_normalize_matches_kornia() -> None:
    x = _x(4, 8, 8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    torch.testing.assert_close(A.Normalize(mean, std)(x), K.Normalize(torch.tensor(mean), torch.tensor(std))(x))
