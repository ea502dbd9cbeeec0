"""Image data that is never silently wrong: the decoded-image cache follows the files, a set too large
for memory is streamed or refused in one line, corrupt archives and images are named exactly."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import ssl_emp.data.folder
from ssl_emp.config import DataConfig
from ssl_emp.data import IndexedImageFiles, IndexedImages, load_data
from ssl_emp.errors import ConfigError
from tests.reliability_helpers import FAST, one_line, pretrain
from tests.test_data import _write_tree


def _add_images(folder: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        img = torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"new{seed}_{i}.png")


def _archive(tmp_path: Path) -> Path:
    _write_tree(tmp_path / "tree" / "mini", per_class=20, size=32)
    path = tmp_path / "mini.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "mini", arcname="mini")
    return path


# ----------------------------------------------------------------------------- decoded-image cache


def test_cache_follows_files_changed_inside_class_folders(tmp_path, tiny_args):
    """The reported case: a tree trained once, 4 images added to train/a, trained again."""
    tree = tmp_path / "tree"
    _write_tree(tree, per_class=4)
    args = [*tiny_args, "--set", "data.dataset=imagefolder", "--data-dir", str(tree), "--set", "optim.batch_size=4",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "eval.eval_every=0", "--epochs", "1"]
    assert pretrain(tmp_path / "first", args) == 0
    assert json.loads((tmp_path / "first" / "summary.json").read_text())["num_samples"] == 8
    _add_images(tree / "train" / "a", 4, seed=5)
    assert pretrain(tmp_path / "second", args) == 0
    assert json.loads((tmp_path / "second" / "summary.json").read_text())["num_samples"] == 12


def test_cache_follows_a_file_rewritten_in_place(tmp_path):
    _write_tree(tmp_path / "tree", per_class=2)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, store_size=8, cache_dir=str(tmp_path / "c"))
    before = load_data(cfg).train.images.clone()
    target = tmp_path / "tree" / "train" / "b" / "1.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(target)  # same name, new content
    os.utime(target, ns=(1, 1))  # even an mtime moved into the past is a change
    after = load_data(cfg).train.images
    assert not torch.equal(before[3], after[3]) and torch.equal(before[:3], after[:3])
    assert torch.equal(after[3], torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].expand(3, 8, 8))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "wrong_labels"])
def test_corrupt_cache_is_rebuilt_with_one_line(tmp_path, capsys, damage):
    _write_tree(tmp_path / "tree", per_class=2)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, store_size=8, cache_dir=str(tmp_path / "c"))
    good = load_data(cfg)
    caches = sorted((tmp_path / "c").glob("*.pt"))
    assert len(caches) == 2  # train and test
    for cache in caches:
        if damage == "garbage":
            cache.write_bytes(os.urandom(300))
        elif damage == "truncated":
            cache.write_bytes(cache.read_bytes()[:200])
        elif damage == "wrong_shape":
            torch.save({"images": torch.zeros(4, 3, 9, 9, dtype=torch.uint8), "labels": None, "classes": None}, cache)
        else:
            torch.save({"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "labels": torch.tensor([0, 5, 0, 1]),
                        "classes": ["a", "b"]}, cache)
    capsys.readouterr()
    rebuilt = load_data(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("decoding the images again" in line for line in err), err
    assert torch.equal(rebuilt.train.images, good.train.images) and torch.equal(rebuilt.test.labels, good.test.labels)
    load_data(cfg)  # the rebuilt cache is valid: silent
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- too large for memory


def test_a_folder_too_large_for_memory_is_streamed_from_disk(tmp_path, capsys, monkeypatch):
    _write_tree(tmp_path / "tree", per_class=3)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, store_size=8,
                     cache_dir=str(tmp_path / "c"), train_subset=4)
    in_ram = load_data(cfg)
    monkeypatch.setattr(ssl_emp.data.folder, "available_memory", lambda: 1000)  # 6 x 3 x 8 x 8 = 1152 bytes: no
    capsys.readouterr()
    streamed = load_data(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "c2")}))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("does not fit in memory; reading it from disk instead" in ln for ln in err), err
    assert isinstance(streamed.train, IndexedImageFiles) and isinstance(in_ram.train, IndexedImages)
    assert len(streamed.train) == 4  # train_subset applies to a streamed set too
    assert torch.equal(torch.stack([streamed.train[i][1] for i in range(4)]), in_ram.train.images)
    assert torch.equal(streamed.train.labels, in_ram.train.labels)
    assert not (tmp_path / "c2").exists()  # nothing decoded, nothing cached


def test_an_archive_too_large_for_memory_is_one_line_naming_in_memory_false(tmp_path, monkeypatch):
    archive = _archive(tmp_path)
    monkeypatch.setattr(ssl_emp.data.folder, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match=r"does not fit in memory: unpack it .* data\.in_memory=false"):
        load_data(DataConfig(dataset="imagefolder", data_dir=str(archive), image_size=8, cache_dir=str(tmp_path / "c")))


# ----------------------------------------------------------------------------- messages


def test_random_bytes_archive_is_not_reported_as_missing(tmp_path):
    path = tmp_path / "data.tar.gz"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig(dataset="imagefolder", data_dir=str(path), cache_dir=str(tmp_path / "c")))
    assert "not found" not in str(info.value) and "is a file but not a .tar/.tar.gz archive" in str(info.value)


@pytest.mark.parametrize("archive", [False, True])
def test_decode_error_names_the_whole_path_and_no_buffer(tmp_path, archive):
    _write_tree(tmp_path / "tree", per_class=1, splits=("train",))
    (tmp_path / "tree" / "train" / "b" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "tree" / "train" / "a" / "cut.png").write_bytes((tmp_path / "tree" / "train" / "a" / "0.png").read_bytes()[:60])
    source = tmp_path / "tree"
    if archive:
        source = tmp_path / "tree.tar"
        with tarfile.open(source, "w") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    cfg = DataConfig(dataset="imagefolder", data_dir=str(source), image_size=8, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError) as info:
        load_data(cfg)
    message = str(info.value)
    assert "train/a/cut.png" in message and "BytesIO" not in message and "<" not in message, message
    (tmp_path / "tree" / "train" / "a" / "cut.png").unlink()
    if archive:
        with tarfile.open(source, "w") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    with pytest.raises(ConfigError, match=r"train/b/broken\.png: not an image in a known format$"):
        load_data(cfg)


def test_truncated_archive_is_one_line_exit_2(tmp_path, tiny_args, capsys):
    archive = _archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    code = pretrain(tmp_path / "run", tiny_args, *FAST, "--set", "data.dataset=imagefolder", "--data-dir", str(archive),
                     "--set", f"data.cache_dir={tmp_path / 'c'}")
    assert code == 2
    assert f"archive {archive} is truncated or corrupt" in one_line(capsys)
