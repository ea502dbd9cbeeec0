import torch

from ssl_emp.augment import eval_transform, resolve, view_augmentation
from ssl_emp.config import AugmentConfig


def _batch(n: int = 16, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, 3, size, size), generator=g, dtype=torch.uint8).expand(n, -1, -1, -1).contiguous()


def _bounds(cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(cfg.mean)[:, None, None], torch.tensor(cfg.std)[:, None, None]
    return (0 - mean) / std, (1 - mean) / std


def test_views_have_shape_dtype_and_normalised_range():
    cfg = AugmentConfig()
    aug = view_augmentation(cfg, 24)
    views = aug(_batch(size=32))
    assert views.shape == (16, 3, 24, 24) and views.dtype == torch.float32
    low, high = _bounds(cfg)
    assert (views >= low - 1e-4).all() and (views <= high + 1e-4).all()


def test_randomness_is_independent_per_image_and_per_view():
    aug = view_augmentation(AugmentConfig(), 32)
    x = _batch()  # 16 copies of one image
    v1, v2 = aug(x), aug(x)
    distinct_in_batch = {tuple(v.flatten()[:64].tolist()) for v in v1}
    assert len(distinct_in_batch) > 12, "copies of one image must get different augmentations"
    assert not torch.allclose(v1, v2), "two calls must draw new parameters"


def test_presets_follow_lightly_and_small_image_recipe():
    small = resolve(AugmentConfig(preset="simclr"), 32)
    assert small["cj_strength"] == 0.5 and small["blur_prob"] == 0.0 and small["min_scale"] == 0.08
    large = resolve(AugmentConfig(preset="mocov2"), 224)
    assert large["jitter"] == (0.4, 0.4, 0.4, 0.1) and large["min_scale"] == 0.2 and large["blur_prob"] == 0.5
    assert resolve(AugmentConfig(hflip_prob=0.0), 32)["hflip_prob"] == 0.0
    blurred = view_augmentation(AugmentConfig(preset="simclr"), 96)
    assert any("Blur" in type(m).__name__ for m in blurred)


def test_eval_transform_is_deterministic_and_resizes():
    cfg = AugmentConfig()
    tf = eval_transform(cfg, 16)
    x = _batch(4, 32)
    out = tf(x)
    assert out.shape == (4, 3, 16, 16)
    torch.testing.assert_close(out, tf(x))


def test_supervised_preset_is_padded_crop_and_flip_only():
    import pytest

    from ssl_emp.config import load_config
    from ssl_emp.errors import ConfigError

    cfg = AugmentConfig(preset="supervised")
    aug = view_augmentation(cfg, 32)
    names = [type(m).__name__ for m in aug]
    assert names == ["ToFloat", "RandomCrop", "RandomHorizontalFlip", "Normalize"]
    x = _batch(n=64, size=32)
    views = aug(x)
    assert views.shape == (64, 3, 32, 32)
    # a padded crop shifts by at most 4 px: some views differ from the input, none is resized
    base = eval_transform(cfg, 32)(x)
    assert not torch.allclose(views, base)
    assert load_config(None, ["algorithm=supervised", "data.dataset=cifar10"]).augment.preset == "supervised"
    assert load_config(None, ["algorithm=supervised"]).augment.preset == "digits"  # digits keeps its own, no flips
    with pytest.raises(ConfigError, match="takes only hflip_prob"):
        load_config(None, ["algorithm=supervised", "augment.preset=supervised", "augment.min_scale=0.5"])
