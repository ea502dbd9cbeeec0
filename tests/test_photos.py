"""Photographs as photographs: views cut from each image's own pixels (torchvision's
RandomResizedCrop), the evaluation view keeps the aspect ratio, and runs on them resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from ssl_emp.augment import view_augmentation
from ssl_emp.cli import main
from ssl_emp.data.datasets import IndexedImages, Labelled
from ssl_emp.data.decode import resize_square
from ssl_emp.data.source import SubsetSource
from ssl_emp.data.views import geometric_ops, raw_views
from ssl_emp.run.checkpoint import load_checkpoint
from ssl_emp.settings import AugmentConfig
from tests.helpers import Interrupt, interrupt_after, resume

SIZE = 32
SCALE = (0.08, 1.0)
N = 2000
SHAPES = [(120, 160), (160, 120), (128, 128)]  # (H, W): 4:3, 3:4, 1:1, all larger than SIZE


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """uint8 [3, H, W] whose red is the column and green the row (both < 256): a view tells its box."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)


def boxes_of(views: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) in the original's pixels of each view [M, 3, S, S]: the slope of red across columns and
    of green down rows, fitted on the interior (a crop's edge pixels are filtered against its border)."""
    v = views.double()
    j = torch.arange(SIZE, dtype=torch.float64)[2:-2]
    jc = j - j.mean()

    def slope(profile: torch.Tensor) -> torch.Tensor:
        p = profile[:, 2:-2]
        return ((p - p.mean(1, keepdim=True)) * jc).sum(1) / (jc * jc).sum()

    w = slope(v[:, 0].mean(1)).abs() * SIZE
    h = slope(v[:, 1].mean(2)).abs() * SIZE
    return w.round().numpy(), h.round().numpy()


def reference(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) of torchvision's RandomResizedCrop.get_params on an image of this size."""
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    boxes = [RandomResizedCrop.get_params(image, list(SCALE), [3 / 4, 4 / 3]) for _ in range(N)]
    return np.array([b[3] for b in boxes], float), np.array([b[2] for b in boxes], float)


def same_distribution(w: np.ndarray, h: np.ndarray, height: int, width: int) -> bool:
    ref_w, ref_h = reference(height, width)
    area = ks_2samp(w * h / (width * height), ref_w * ref_h / (width * height)).pvalue
    aspect = ks_2samp(np.log(w / h), np.log(ref_w / ref_h)).pvalue
    return area > 0.01 and aspect > 0.01


@pytest.mark.parametrize("height, width", SHAPES)
def test_views_are_torchvision_crops_of_the_original(height, width):
    image = coordinate_image(height, width)
    source = SubsetSource(IndexedImages(image[None]), torch.zeros(N // 2, dtype=torch.long))  # N/2 images, one picture
    cfg = AugmentConfig(preset="simclr", min_scale=SCALE[0])
    views = raw_views(source, list(range(N // 2)), 2, cfg, SIZE, seed=0)
    assert views.shape == (N // 2, 2, 3, SIZE, SIZE) and views.dtype == torch.uint8
    w, h = boxes_of(views.flatten(0, 1))
    assert same_distribution(w, h, height, width)


@pytest.mark.parametrize("height, width", SHAPES[:2])
def test_the_squashed_path_fails_the_same_check(height, width):
    """What every image got before: squashed to a SIZE square, then cropped there."""
    squashed = resize_square(coordinate_image(height, width)[None], SIZE).expand(N, -1, -1, -1)
    ops = geometric_ops(view_augmentation(AugmentConfig(preset="simclr", min_scale=SCALE[0]), SIZE))
    torch.manual_seed(0)
    views = ops(squashed).mul(255).round().clamp(0, 255).to(torch.uint8)
    w, h = boxes_of(views)
    assert not same_distribution(w, h, height, width)


@pytest.mark.parametrize("height, width", SHAPES)
def test_the_evaluation_view_keeps_the_aspect_ratio(height, width):
    image = coordinate_image(height, width)
    view, label = Labelled(IndexedImages(image[None], torch.tensor([0])), SIZE)[0]
    assert view.shape == (3, SIZE, SIZE) and label == 0
    w, h = boxes_of(view[None])
    short = min(height, width)
    # One scale both ways (to the rounding of the longer side): the shorter side, whole; a squash
    # would read back the whole width and the whole height.
    assert min(w[0], h[0]) == short and abs(w[0] / h[0] - 1) < 0.03
    centre = view[:2, SIZE // 2, SIZE // 2].double()  # the centre crop: the middle of the original
    assert abs(centre[0] - width / 2) <= short / SIZE + 1 and abs(centre[1] - height / 2) <= short / SIZE + 1


# ----------------------------------------------------------------------------- training on photographs


def _photo_tree(root, per_class: int = 12) -> None:
    """train/ and test/ of two classes of random images, 4:3, 3:4 and square, larger than 16 px."""
    g = torch.Generator().manual_seed(0)
    shapes = [(18, 24), (24, 18), (20, 20)]
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 4):
                h, w = shapes[i % 3]
                img = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(img.numpy()).save(folder / f"{i}.png")


def _final_state(out):
    ckpt = load_checkpoint(out / "checkpoints" / "final.pt")
    return ckpt["model"], (out / "steps.csv").read_text()


def _assert_same(a, b) -> None:
    (ma, sa), (mb, sb) = _final_state(a), _final_state(b)
    assert sa == sb
    for key in ma:
        if key != "_extra_state":
            assert torch.equal(ma[key], mb[key]), key


def test_photo_runs_are_the_same_with_workers_and_after_a_resume(tmp_path, tiny_args):
    _photo_tree(tmp_path / "tree")
    common = [*tiny_args, "--set", "data.dataset=imagefolder", "--data-dir", str(tmp_path / "tree"),
              "--set", "data.store_size=18", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--set", "optim.batch_size=8", "--set", "log_every=1", "--set", "eval.eval_every=0", "--epochs", "2"]
    assert main(["pretrain", "--output-dir", str(tmp_path / "w0"), *common]) == 0
    workers = [*common, "--set", "data.num_workers=2"]
    assert main(["pretrain", "--output-dir", str(tmp_path / "w2"), *workers]) == 0
    _assert_same(tmp_path / "w0", tmp_path / "w2")
    with interrupt_after(3), pytest.raises(Interrupt):  # one epoch: 24 images / batch 8
        main(["pretrain", "--output-dir", str(tmp_path / "split"), *workers])
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 0
    assert resume(tmp_path / "split") == 0
    _assert_same(tmp_path / "w0", tmp_path / "split")


def test_store_size_keeps_the_aspect_ratio_of_a_folder(tmp_path):
    from ssl_emp.data import load_data
    from ssl_emp.settings import DataConfig

    _photo_tree(tmp_path / "tree")
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=16, store_size=18,
                                cache_dir=str(tmp_path / "c")))
    sizes = {tuple(data.train.read(i).shape[1:]) for i in range(len(data.train))}
    assert sizes == {(18, 24), (24, 18), (18, 18)}  # 4:3 and 3:4 kept, the 20 px square's side cut to 18


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_jpeg_is_kept_at_full_size_without_store_size(tmp_path, in_memory):
    """Without data.store_size a photograph's views are cut from all its pixels: a JPEG is not
    decoded at a reduced DCT scale (which would keep only about image_size of its shorter side)."""
    from ssl_emp.data import load_data
    from ssl_emp.settings import DataConfig

    for cls in ("a", "b"):
        (tmp_path / "tree" / "train" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 256, (300, 400, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "tree" / "train" / cls / f"{i}.jpg", quality=90)
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=32,
                                in_memory=in_memory, cache_dir=str(tmp_path / "c")))
    assert {tuple(data.train.read(i).shape) for i in range(len(data.train))} == {(3, 300, 400)}
