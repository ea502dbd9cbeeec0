"""Labels that mean the same class everywhere (one class map per data set, checked on resume and
eval), layouts with a stray image or a non-image file, 16-bit images, and data settings that cannot
work (a stratified split that cannot be made, an image size that cannot fit) refused in one line."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ssl_emp.data.decode
import ssl_emp.data.folder
from ssl_emp.cli import main
from ssl_emp.config import DataConfig
from ssl_emp.data import load_data
from ssl_emp.data.decode import decode_image, resize_square
from tests.reliability_helpers import one_line, pretrain
from tests.test_data import _write_tree


def _tar(source: Path, path: Path) -> Path:
    """``source``'s contents as a .tar.gz, members named relative to ``source`` (no wrapping folder)."""
    with tarfile.open(path, "w:gz") as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    return path


def _folder_args(tmp_path: Path, tree: Path) -> list[str]:
    return ["--set", "data.dataset=imagefolder", "--data-dir", str(tree), "--set", "optim.batch_size=4",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "eval.eval_every=0", "--epochs", "1"]


def _image(path: Path, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 256, (12, 12, 3), generator=g, dtype=torch.uint8).numpy()).save(path)


# ----------------------------------------------------------------------------- one class map per data set


def _tree_test_lacks_a_class(root: Path) -> Path:
    """train/{cat,dog,ship}, test/{dog,ship}: the test images are copies of the training ones."""
    _write_tree(root, classes=("cat", "dog", "ship"), per_class=3, splits=("train",))
    for name in ("dog", "ship"):
        shutil.copytree(root / "train" / name, root / "test" / name)
    return root


def test_a_test_split_lacking_a_class_is_numbered_by_the_training_classes(tmp_path):
    tree = _tree_test_lacks_a_class(tmp_path / "tree")
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tree), image_size=8, store_size=8, cache_dir=str(tmp_path / "c")))
    assert data.train.classes == data.test.classes == ["cat", "dog", "ship"]
    assert data.test.labels.tolist() == [1, 1, 1, 2, 2, 2]  # dog and ship, not 0 and 1
    assert torch.equal(data.test.images, data.train.images[3:])


def test_knn_on_copies_of_training_images_is_perfect_when_test_lacks_a_class(tmp_path, tiny_args):
    """The reported case: per-split numbering scored kNN 0.05 on copies of the training images."""
    tree = _tree_test_lacks_a_class(tmp_path / "tree")
    assert pretrain(tmp_path / "run", tiny_args, *_folder_args(tmp_path, tree), "--set", "eval.knn_k=1") == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["knn_top1"] == 1.0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    assert ckpt["classes"] == ["cat", "dog", "ship"]


@pytest.mark.parametrize("archive", [False, True])
def test_a_test_class_missing_from_train_is_one_line_exit_2(tmp_path, tiny_args, capsys, archive):
    tree = tmp_path / "tree"
    _write_tree(tree, classes=("dog", "ship"), per_class=2)
    _write_tree(tree / "extra", classes=("cat",), per_class=2, splits=("test",))
    shutil.move(tree / "extra" / "test" / "cat", tree / "test" / "cat")
    shutil.rmtree(tree / "extra")
    source = _tar(tree, tmp_path / "tree.tar.gz") if archive else tree
    assert pretrain(tmp_path / "run", tiny_args, *_folder_args(tmp_path, source)) == 2
    err = one_line(capsys)
    assert "test split" in err and "1 class folder that the training split lacks: cat" in err, err


def test_a_cache_numbered_per_split_is_not_reused(tmp_path, capsys):
    """What a cache of the old format held: test labels numbered by the test split's own folders."""
    tree = _tree_test_lacks_a_class(tmp_path / "tree")
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tree), image_size=8, cache_dir=str(tmp_path / "c"))
    load_data(cfg)
    for cache in (tmp_path / "c").glob("*.pt"):
        blob = torch.load(cache, weights_only=True)
        if blob["classes"] == ["cat", "dog", "ship"] and len(blob["labels"]) == 6:  # the test split's
            torch.save({**blob, "labels": torch.tensor([0, 0, 0, 1, 1, 1]), "classes": ["dog", "ship"]}, cache)
    capsys.readouterr()
    data = load_data(cfg)
    assert "its labels number other classes than the training split's" in one_line(capsys)
    assert data.test.labels.tolist() == [1, 1, 1, 2, 2, 2] and data.test.classes == ["cat", "dog", "ship"]


def test_resume_and_eval_refuse_data_with_other_classes(tmp_path, tiny_args, capsys):
    tree = tmp_path / "tree"
    _write_tree(tree, classes=("a", "b"), per_class=3)
    args = _folder_args(tmp_path, tree)
    assert pretrain(tmp_path / "run", tiny_args, *args) == 0
    final = tmp_path / "run" / "checkpoints" / "final.pt"
    assert main(["eval", "knn", "--checkpoint", str(final)]) == 0
    capsys.readouterr()
    _write_tree(tree / "more", classes=("c",), per_class=3, splits=("train",))
    shutil.move(tree / "more" / "train" / "c", tree / "train" / "c")
    assert pretrain(tmp_path / "run", tiny_args, *args, "--resume") == 2
    err = one_line(capsys)
    assert "was trained on 2 classes and the data adds 'c': its labels would mean other classes" in err, err
    assert main(["eval", "knn", "--checkpoint", str(final)]) == 2
    err = one_line(capsys)
    assert "the data adds 'c'" in err and "pass --dataset to evaluate it on another data set" in err, err
    # Another data set is the user's explicit choice: scored on its own classes.
    assert main(["eval", "knn", "--checkpoint", str(final), "--dataset", "imagefolder", "--data-dir", str(tree)]) == 0


# ----------------------------------------------------------------------------- stray files in the layout


def _split_layout_with_preview(root: Path) -> None:
    """data/train/{a,b}, data/test/{a,b} and a preview.jpg beside data/."""
    _write_tree(root / "data", per_class=3)
    Image.new("RGB", (30, 20), (9, 9, 9)).save(root / "preview.jpg")


def _class_tree_with_cover(root: Path) -> None:
    """{a,b}/ class folders and a cover.jpg beside them."""
    _write_tree(root, per_class=3, splits=("train",))
    for name in ("a", "b"):
        shutil.move(root / "train" / name, root / name)
    (root / "train").rmdir()
    Image.new("RGB", (30, 20), (9, 9, 9)).save(root / "cover.jpg")


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize("layout, stray", [(_split_layout_with_preview, "preview.jpg"), (_class_tree_with_cover, "cover.jpg")])
def test_a_stray_image_is_skipped_in_one_line_and_labels_survive(tmp_path, capsys, archive, layout, stray):
    layout(tmp_path / "tree")
    source = _tar(tmp_path / "tree", tmp_path / "tree.tar.gz") if archive else tmp_path / "tree"
    cfg = DataConfig(dataset="imagefolder", data_dir=str(source), image_size=8, cache_dir=str(tmp_path / "c"))
    for _ in range(2):  # read, then from the decoded-image cache: the same data, the same line
        data = load_data(cfg)
        assert one_line(capsys) == f"ssl-emp: skipping 1 image file outside the class folders: {stray}"
        assert data.train.classes == ["a", "b"] and data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
        if layout is _split_layout_with_preview:
            assert data.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
        else:
            assert data.test is None


def test_loose_images_beside_a_folder_of_loose_images_stay_one_unlabelled_set(tmp_path, capsys):
    (tmp_path / "tree" / "thumbs").mkdir(parents=True)
    for i in range(3):
        _image(tmp_path / "tree" / f"{i}.png", i)
    _image(tmp_path / "tree" / "thumbs" / "0.png", 9)
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8,
                                cache_dir=str(tmp_path / "c")))
    assert len(data.train) == 4 and data.train.labels is None and capsys.readouterr().err == ""


def test_a_stray_image_inside_a_split_is_skipped_too(tmp_path, capsys):
    _write_tree(tmp_path / "tree", per_class=2)
    _image(tmp_path / "tree" / "train" / "cover.png", 1)
    _image(tmp_path / "tree" / "test" / "cover.png", 2)
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8,
                                cache_dir=str(tmp_path / "c")))
    assert one_line(capsys).endswith("skipping 2 image files outside the class folders: test/cover.png, train/cover.png")
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.labels.tolist() == [0, 0, 1, 1]


def test_gif_is_read_as_its_first_frame_and_other_files_are_counted(tmp_path, capsys):
    _write_tree(tmp_path / "tree", per_class=2, splits=("train",))
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "tree" / "train" / "a" / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "tree" / "train" / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "tree" / "train" / ".DS_Store").write_bytes(b"\0")  # hidden: not worth a word
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, store_size=8,
                                cache_dir=str(tmp_path / "c")))
    line = one_line(capsys)
    assert line.startswith("ssl-emp: skipping 1 file without an image suffix (") and line.endswith(": train/b/notes.txt")
    assert len(data.train) == 5 and data.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.train.images[2, :, 4, 4].tolist() == [250, 0, 0]  # a/0.png, a/1.png, a/anim.gif: its red frame


# ----------------------------------------------------------------------------- high bit depth


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I", "PPM"), ("F", "TIFF")])
def test_high_bit_depth_gray_spans_0_to_255_monotonically(mode, fmt):
    ramp = np.linspace(0, 1, 256)
    values = {"I;16": (ramp * 65535).astype(np.uint16), "I": (ramp * 65535).astype(np.uint16),
              "F": ramp.astype(np.float32)}[mode]
    img = Image.fromarray(np.repeat(values[None], 4, axis=0))
    if mode == "I":
        img = img.convert("I")  # a 16-bit PPM decodes to Pillow's 32-bit "I"
    data = _encoded(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    row = decode_image(data, "ramp")[0, 0].int()
    assert row[0] == 0 and row[-1] == 255 and bool((row.diff() >= 0).all()) and len(row.unique()) > 200


def test_resizing_in_chunks_changes_no_pixel(monkeypatch):
    images = torch.randint(0, 256, (7, 3, 12, 10), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    whole = resize_square(images, 16)
    monkeypatch.setattr(ssl_emp.data.decode, "_RESIZE_CHUNK_BYTES", 1)  # one image per chunk
    assert torch.equal(resize_square(images, 16), whole)


# ----------------------------------------------------------------------------- data settings that cannot work


@pytest.mark.slow
@pytest.mark.parametrize("fraction, message", [
    ("0.001", "leaves a held-out part of 2 of the 1437 training images, fewer than the 10 classes"),
    ("0.999", "leaves a training part of 1 of the 1437 training images, fewer than the 10 classes"),
])
def test_a_stratified_split_that_cannot_be_made_is_one_line_exit_2(tmp_path, tiny_args, capsys, fraction, message):
    assert pretrain(tmp_path / "run", tiny_args, "--set", f"data.val_fraction={fraction}", "--epochs", "1") == 2
    err = one_line(capsys)
    assert message in err and "choose a value in [0.007, 0.993]" in err, err


def test_val_fraction_with_a_one_image_class_is_one_line_exit_2(tmp_path, tiny_args, capsys):
    tree = tmp_path / "tree"
    _write_tree(tree, classes=("a", "b"), per_class=5, splits=("train",))
    _write_tree(tree / "x", classes=("lonely",), per_class=1, splits=("train",))
    shutil.move(tree / "x" / "train" / "lonely", tree / "train" / "lonely")
    shutil.rmtree(tree / "x")
    assert pretrain(tmp_path / "run", tiny_args, *_folder_args(tmp_path, tree), "--set", "data.val_fraction=0.1") == 2
    assert "class 'lonely' has 1" in one_line(capsys)


def test_an_image_size_that_cannot_fit_is_refused_before_allocating(tmp_path, tiny_args, capsys, monkeypatch):
    monkeypatch.setattr(ssl_emp.data.folder, "available_memory", lambda: 16 * 2**30)
    assert pretrain(tmp_path / "run", tiny_args, "--set", "data.image_size=4096", "--epochs", "1") == 2
    err = one_line(capsys)
    assert "the train split of digits at data.image_size=4096 (1437 images decoded: 67.36 GiB, 16.00 GiB available)" in err, err
    assert "does not fit in memory: choose a smaller data.image_size" in err


def test_a_folder_without_images_names_what_it_skipped_in_its_one_line(tmp_path, tiny_args, capsys):
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "frame.gif.txt").write_text("a gif's description, not a gif")
    assert pretrain(tmp_path / "run", tiny_args, *_folder_args(tmp_path, tmp_path / "tree")) == 2
    err = one_line(capsys)
    assert "no images found in" in err and "; skipping 1 file without an image suffix" in err, err
