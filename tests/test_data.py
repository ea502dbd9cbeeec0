import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_emp.config import DataConfig
from ssl_emp.data import IndexedImages, Labelled, load_data, load_split
from ssl_emp.errors import ConfigError


def _write_tree(root, classes=("a", "b"), per_class=3, size=20, splits=("train", "test")):
    g = torch.Generator().manual_seed(0)
    for split in splits:
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")


@pytest.mark.slow
def test_digits_split_is_fixed_indexed_and_rgb():
    train = load_split(DataConfig(image_size=16), "train")
    test = load_split(DataConfig(image_size=16), "test")
    assert isinstance(train, IndexedImages)
    assert (len(train), len(test)) == (1437, 360)
    idx, img = train[5]
    assert idx == 5 and img.shape == (3, 16, 16) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1])  # grayscale replicated to RGB
    again = load_split(DataConfig(image_size=16), "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)


def test_train_subset_is_fixed_and_labelled_view_yields_pairs():
    cfg = DataConfig(image_size=16, train_subset=100)
    a, b = load_data(cfg), load_data(cfg)
    assert len(a.train) == 100 and torch.equal(a.train.images, b.train.images)
    image, label = Labelled(a.train)[3]
    assert image.shape == (3, 16, 16) and label == int(a.train.labels[3])


@pytest.mark.parametrize("archive", [False, True])
def test_imagefolder_tree_and_archive(tmp_path, archive):
    _write_tree(tmp_path / "tree" / "mini")
    source = tmp_path / "tree" / "mini"
    if archive:
        source = tmp_path / "mini.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tmp_path / "tree" / "mini", arcname="mini")
    cfg = DataConfig(dataset="imagefolder", data_dir=str(source), image_size=16, store_size=16, cache_dir=str(tmp_path / "cache"))
    data = load_data(cfg)
    assert len(data.train) == 6 and len(data.test) == 6
    assert data.train.classes == ["a", "b"] and data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train.images.shape == (6, 3, 16, 16)
    cached = load_data(cfg)  # second load comes from the decoded cache
    assert torch.equal(cached.train.images, data.train.images)
    assert any((tmp_path / "cache").iterdir())


def test_imagefolder_without_class_folders_has_no_labels(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        img = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=8, in_memory=False))
    assert len(data.train) == 4 and data.train.labels is None and data.bank is None and data.test is None
    assert capsys.readouterr().err == ""  # loose images with no class folders beside them are no strays
    with pytest.raises(ConfigError, match="no labels"):
        Labelled(data.train)


def test_corrupt_image_error_names_the_file(tmp_path):
    _write_tree(tmp_path, per_class=2, splits=("train",))
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ConfigError, match=r"broken\.png"):
        load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=8, cache_dir=str(tmp_path / "c")))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10", "imagefolder"])
def test_missing_data_dir_is_a_clear_error(tmp_path, dataset):
    with pytest.raises(ConfigError, match="not found|needs --data-dir"):
        load_data(DataConfig(dataset=dataset, data_dir=str(tmp_path / "absent")))


def test_torchvision_set_without_files_and_no_download(tmp_path):
    with pytest.raises(ConfigError, match="cifar10 files not found"):
        load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_val_fraction_holds_out_a_fixed_stratified_part_and_never_loads_test(monkeypatch):
    import ssl_emp.data.load as data_module

    real = data_module.load_split

    def no_test(cfg, split):
        assert split != "test", "the test split must not be read while tuning on a validation split"
        return real(cfg, split)

    monkeypatch.setattr(data_module, "load_split", no_test)
    cfg = DataConfig(image_size=8, val_fraction=0.2)
    a, b = load_data(cfg), load_data(cfg)
    assert a.test_is_validation and a.bank is a.train
    assert len(a.test) == 288 and len(a.train) == 1437 - 288
    assert torch.equal(a.test.images, b.test.images)  # fixed, not seeded by the run
    assert a.test.labels.bincount().min() >= 27 and a.test.labels.bincount().max() <= 30  # stratified
    full = real(DataConfig(image_size=8), "train").images.flatten(1)
    rows = {tuple(r.tolist()): i for i, r in enumerate(full)}
    train_rows = {rows[tuple(r.tolist())] for r in a.train.images.flatten(1)}
    val_rows = {rows[tuple(r.tolist())] for r in a.test.images.flatten(1)}
    assert not train_rows & val_rows


def test_train_subset_offset_gives_a_disjoint_fixed_subset():
    first = load_split(DataConfig(train_subset=300), "train")
    second = load_split(DataConfig(train_subset=300, train_subset_offset=300), "train")
    again = load_split(DataConfig(train_subset=300, train_subset_offset=300), "train")
    assert len(second) == 300 and torch.equal(second.images, again.images)
    rows = {bytes(x.flatten().tolist()) for x in first.images}
    assert not any(bytes(x.flatten().tolist()) in rows for x in second.images)  # digits has no exact repeats
    with pytest.raises(ConfigError, match="train_subset_offset"):
        load_split(DataConfig(train_subset=300, train_subset_offset=1600), "train")


class _FakeSTL10:
    """torchvision's STL10 as the loader sees it: NCHW uint8 data, labels, classes."""

    classes = ["a", "b"]

    def __init__(self, root, split, download):
        n = 24 if split.startswith("train") else 8
        self.data = np.random.default_rng(0).integers(0, 256, (n, 3, 48, 48), dtype=np.uint8)
        self.labels = np.arange(n) % 2


def test_stl10_larger_than_image_size_keeps_its_pixels_and_trains(tmp_path, monkeypatch, tiny_args):
    """Views of a 96-px STL-10 image at 64 px are cut from its own pixels, not from a 64-px copy
    (here 48 px at image_size 16); data.store_size bounds what is kept."""
    import torchvision.datasets

    from ssl_emp.cli import main

    monkeypatch.setattr(torchvision.datasets, "STL10", _FakeSTL10)
    cfg = DataConfig(dataset="stl10", data_dir=str(tmp_path), image_size=16)
    assert load_data(cfg).train.images.shape == (24, 3, 48, 48)
    cfg.store_size = 32
    assert load_data(cfg).train.images.shape == (24, 3, 32, 32)
    assert main(["pretrain", "--output-dir", str(tmp_path / "run"), *tiny_args, "--set", "data.dataset=stl10",
                 "--data-dir", str(tmp_path), "--set", "optim.batch_size=8", "--epochs", "1"]) == 0
