"""``ssl-emp views``: the grid users look at when they choose augmentations, and the raw views
(after crop and flip, before the colours) that show what training cuts from a photograph."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssl_emp.cli import main
from ssl_emp.data.preview import MIN_CELL, PAD
from tests.test_photos import SIZE, boxes_of, coordinate_image, same_distribution


def _grid_size(images: int, views: int, size: int) -> tuple[int, int]:
    """(width, height) of the PNG: an evaluation view and ``views`` views per row."""
    cell = size * -(-MIN_CELL // size)
    return PAD + (1 + views) * (cell + PAD), PAD + images * (cell + PAD)


def test_views_of_in_memory_squares_write_the_grid_and_the_raw_views(tmp_path, capsys):
    """digits: image_size squares, cropped on the device as in training."""
    png, raw = tmp_path / "out" / "views.png", tmp_path / "out" / "raw.npy"
    assert main(["views", "--set", "data.image_size=16", "--images", "3", "--views", "2",
                 "--output", str(png), "--raw", str(raw)]) == 0
    assert Image.open(png).size == _grid_size(3, 2, 16)
    views = np.load(raw)
    assert views.shape == (3, 2, 3, 16, 16) and views.dtype == np.uint8
    assert str(png) in capsys.readouterr().out
    # Rerunning over its own outputs is allowed (and seeded: the same views).
    assert main(["views", "--set", "data.image_size=16", "--images", "3", "--views", "2", "--raw", str(raw)]) == 0
    assert np.array_equal(np.load(raw), views)


def test_raw_views_of_a_photograph_are_torchvision_crops_of_the_original(tmp_path):
    height, width = 120, 160  # 4:3, larger than SIZE
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(coordinate_image(height, width).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    raw = tmp_path / "raw.npy"
    assert main(["views", "--set", "data.dataset=imagefolder", "--data-dir", str(folder),
                 "--set", f"data.image_size={SIZE}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--set", "augment.preset=simclr", "--images", "4", "--views", "500", "--raw", str(raw)]) == 0
    views = np.load(raw)
    assert views.shape == (4, 500, 3, SIZE, SIZE) and views.dtype == np.uint8
    import torch

    w, h = boxes_of(torch.from_numpy(views).flatten(0, 1))
    assert w.max() <= width and h.max() <= height
    assert same_distribution(w, h, height, width)


@pytest.mark.parametrize("case, message", [
    ("folder", "is a folder"),
    ("not_png", "is not a PNG file"),
    ("suffix", "must end in .png"),
    ("too_many", "more than the"),
    ("nothing", "needs --output"),
])
def test_bad_views_arguments_are_one_line_and_keep_files(tmp_path, capsys, case, message):
    other = tmp_path / "notes.png"
    other.write_text("my notes")
    output = {"folder": tmp_path, "not_png": other, "suffix": tmp_path / "v.jpg"}.get(case, tmp_path / "v.png")
    args = ["views", "--set", "data.image_size=16", "--images", "100000" if case == "too_many" else "2"]
    args += [] if case == "nothing" else ["--output", str(output)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert other.read_text() == "my notes" and not (tmp_path / "v.png").exists()
