"""``data.backend: dali``: NVIDIA DALI decodes and cuts the views of an image folder (its CPU mode here),
fed the pruner's kept indices; runs resume exactly; unsupported settings are one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_emp.cli import main
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import Interrupt, interrupt_after, resume

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (the ssl-emp[dali] extra)")


def _photos(root, per_class: int = 12) -> None:
    """JPEG photographs of two classes, 4:3 and 3:4, larger than the 16-px views."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 4):
                shape = (30, 40, 3) if i % 2 else (40, 30, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)


def _args(tmp_path, tiny_args) -> list[str]:
    _photos(tmp_path / "photos")
    return [*tiny_args, "--set", "data.dataset=imagefolder", "--data-dir", str(tmp_path / "photos"),
            "--set", "data.in_memory=false", "--set", "data.backend=dali", "--set", "optim.batch_size=8",
            "--set", "log_every=1", "--set", "eval.eval_every=0", "--set", "eval.knn_k=3",
            "--method", "emp", "--pruning-rate", "0.5", "--epochs", "3"]


def test_dali_trains_the_kept_sets_and_resumes_exactly(tmp_path, tiny_args):
    args = _args(tmp_path, tiny_args)
    assert main(["pretrain", "--output-dir", str(tmp_path / "straight"), *args]) == 0
    final = load_checkpoint(tmp_path / "straight" / "checkpoints" / "final.pt")
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["images_seen"] == 3 * 12 and summary["achieved_rate"] == 0.5  # 24 images, 12 kept an epoch
    with interrupt_after(3), pytest.raises(Interrupt):  # in epoch 1: 12 kept / batch 8 folds into 1 batch
        main(["pretrain", "--output-dir", str(tmp_path / "split"), *args])
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] < 2
    assert resume(tmp_path / "split") == 0
    again = load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")
    for key, value in final["model"].items():
        if key != "_extra_state":
            assert torch.equal(value, again["model"][key]), key
    steps = (tmp_path / "straight" / "steps.csv").read_text()
    assert steps == (tmp_path / "split" / "steps.csv").read_text()


def test_dali_views_differ_per_epoch_and_are_cut_from_the_photo(tmp_path):
    """Two views of each kept image, [B, 2, 3, S, S] uint8, redrawn each epoch, seeded by (seed, epoch)."""
    from ssl_emp.data.dali import DaliViews
    from ssl_emp.data.views import EpochTagged

    _photos(tmp_path / "p", per_class=4)
    files = sorted(str(p) for p in (tmp_path / "p" / "train").rglob("*.jpg"))
    epoch = {"e": 0}
    views = DaliViews(files, EpochTagged([[0, 1, 2], [3, 4]], lambda: epoch["e"]), 2, 16, (0.2, 1.0), 0,
                      torch.device("cpu"))
    first = list(views)
    assert [idx.tolist() for idx, _ in first] == [[0, 1, 2], [3, 4]]
    assert first[0][1].shape == (3, 2, 3, 16, 16) and first[0][1].dtype == torch.uint8
    again = list(views)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))  # same epoch, same views
    # data.num_workers (DALI's threads) is a neutral key: the views do not depend on it
    threads = DaliViews(files, EpochTagged([[0, 1, 2], [3, 4]], lambda: 0), 2, 16, (0.2, 1.0), 0,
                        torch.device("cpu"), threads=3)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, threads, strict=True))
    epoch["e"] = 1
    assert not torch.equal(list(views)[0][1], first[0][1])


def test_dali_settings_it_cannot_serve_are_one_line(tmp_path, tiny_args, capsys, monkeypatch):
    args = _args(tmp_path, tiny_args)
    in_memory = [a if a != "data.in_memory=false" else "data.in_memory=true" for a in args]
    assert main(["pretrain", "--output-dir", str(tmp_path / "a"), *in_memory]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.backend=dali reads an image folder's files" in err
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if the extra were not installed
    assert main(["pretrain", "--output-dir", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "ssl-emp[dali]"' in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_image_dali_cannot_decode_is_one_line_naming_the_files(tmp_path):
    from ssl_emp.data.dali import DaliViews
    from ssl_emp.data.views import EpochTagged
    from ssl_emp.errors import ConfigError

    _photos(tmp_path / "p", per_class=2)
    files = sorted(str(p) for p in (tmp_path / "p" / "train").rglob("*.jpg"))
    with open(files[1], "rb") as handle:
        head = handle.read(300)
    with open(files[1], "wb") as handle:
        handle.write(head)  # a truncated JPEG: its header reads, its pixels do not
    views = DaliViews(files, EpochTagged([[0, 1], [2, 3]], lambda: 0), 2, 16, (0.2, 1.0), 0, torch.device("cpu"))
    with pytest.raises(ConfigError) as err:
        list(views)
    assert "\n" not in str(err.value) and files[1] in str(err.value)
