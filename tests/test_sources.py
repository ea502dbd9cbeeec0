"""The data-source contract: a new source is one class and one registry line, and the Hugging Face
source (a ``save_to_disk`` folder) trains, evaluates, resumes and is curated through the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_emp.cli import main
from ssl_emp.data.registry import DATASETS, DatasetSpec
from ssl_emp.data.source import ImageSource
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import Interrupt, interrupt_after, resume


class Stripes(ImageSource):
    """A source written for this test: stripes of a class-given period, of varied sizes."""

    def __init__(self, n: int, offset: int):
        self.n, self.offset = n, offset
        self.labels = torch.arange(offset, offset + n) % 2
        self.classes = ["narrow", "wide"]

    def __len__(self) -> int:
        return self.n

    def read(self, index: int) -> torch.Tensor:
        i = self.offset + index
        h, w = (18, 24) if i % 3 else (24, 18)
        period = 2 + 4 * (i % 2)
        x = (torch.arange(w) + i) % period < period // 2
        return (x.to(torch.uint8) * 255).expand(3, h, w).contiguous()


def test_a_source_added_in_a_test_trains_through_pretrain(tmp_path, tiny_args, monkeypatch):
    monkeypatch.setitem(DATASETS, "stripes", DatasetSpec(lambda cfg, split, classes: Stripes(32 if split == "train" else 8, 0 if split == "train" else 32), reads_files=False))  # noqa: E501
    assert main(["pretrain", "--output-dir", str(tmp_path / "run"), *tiny_args, "--set", "data.dataset=stripes",
                 "--set", "optim.batch_size=8", "--epochs", "1", "--method", "emp", "--pruning-rate", "0.5"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_samples"] == 32 and "knn_top1" in json.dumps(summary)


# ----------------------------------------------------------------------------- Hugging Face datasets


@pytest.fixture
def hf_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)

    def split(n: int):
        shapes = [(18, 24), (24, 18), (20, 20)]
        images = [Image.fromarray(rng.integers(0, 256, (*shapes[i % 3], 3), dtype=np.uint8)) for i in range(n)]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
        return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)

    path = tmp_path / "hf"
    datasets.DatasetDict(train=split(24), test=split(8)).save_to_disk(str(path))
    return path


def _hf_args(tiny_args, path):
    return [*tiny_args, "--set", "data.dataset=hf", "--data-dir", str(path), "--set", "optim.batch_size=8",
            "--set", "log_every=1", "--set", "eval.eval_every=0", "--epochs", "2", "--method", "emp",
            "--pruning-rate", "0.5"]


def test_hf_trains_evaluates_and_resumes_through_the_cli(tmp_path, tiny_args, hf_folder):
    args = _hf_args(tiny_args, hf_folder)
    assert main(["pretrain", "--output-dir", str(tmp_path / "straight"), *args]) == 0
    final = tmp_path / "straight" / "checkpoints" / "final.pt"
    assert main(["eval", "knn", "--checkpoint", str(final), "--output", str(tmp_path / "knn.json")]) == 0
    assert 0.0 <= json.loads((tmp_path / "knn.json").read_text())["top1"] <= 1.0
    with interrupt_after(2), pytest.raises(Interrupt):  # one epoch: 12 kept images / batch 8
        main(["pretrain", "--output-dir", str(tmp_path / "split"), *args])
    assert resume(tmp_path / "split") == 0
    a, b = load_checkpoint(final), load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert main(["curate", "--no-progress", "--checkpoint", str(final), "--output-dir", str(tmp_path / "cur")]) == 0
    assert (tmp_path / "cur" / "kept.txt").is_file()


@pytest.mark.parametrize("override, message", [
    ("data.hf_image_column=photo", "has no image column 'photo' (columns: image, label): set data.hf_image_column"),
    ("data.hf_label_column=kind", "has no label column 'kind' (columns: image, label)"),
    ("data.hf_train_split=all", "has no split 'all' (it has train, test): set data.hf_train_split"),
])
def test_hf_bad_columns_and_splits_are_one_line(tmp_path, tiny_args, hf_folder, capsys, override, message):
    assert main(["pretrain", "--output-dir", str(tmp_path / "run"), *_hf_args(tiny_args, hf_folder),
                 "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_hf_without_the_package_is_one_line(tmp_path, tiny_args, hf_folder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    assert main(["pretrain", "--output-dir", str(tmp_path / "run"), *_hf_args(tiny_args, hf_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'ssl-emp[hf]'" in err, err


def test_hf_split_whose_labels_are_all_minus_one_is_unlabelled(tmp_path):
    """A split published without labels (all -1, as imagenet-1k's test split) is read as unlabelled,
    as the torchvision sets' are, not as class -1."""
    datasets = pytest.importorskip("datasets")
    from ssl_emp.data.load import load_split
    from ssl_emp.settings import DataConfig

    images = [Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)) for _ in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    datasets.DatasetDict(train=datasets.Dataset.from_dict({"image": images, "label": [-1] * 4}, features=features)
                         ).save_to_disk(str(tmp_path / "hf"))
    split = load_split(DataConfig(dataset="hf", data_dir=str(tmp_path / "hf"), image_size=16), "train")
    assert split.labels is None and len(split) == 4
