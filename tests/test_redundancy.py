"""The redundancy probe's data: data.redundancy builds a training set of U unique images, a share d of
them present c times; its validation, and the per-epoch repeat diagnostics through `ssl-emp pretrain`."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_emp.cli import main
from ssl_emp.config import DataConfig, RedundancyConfig, duplicated_count, load_config, redundant_size
from ssl_emp.data import IndexedImageFiles, load_data
from ssl_emp.data.redundancy import extra_copies, make_redundant, redundancy_diagnostics, redundant_layout
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import DynamicPruner


def _data(**redundancy) -> DataConfig:
    return DataConfig(image_size=16, train_subset=200, redundancy=RedundancyConfig(**redundancy))


def test_sizes_follow_the_typed_decimals():
    assert duplicated_count(100, 0.29) == 29  # 0.29 * 100 is 28.999... in floating point
    assert redundant_size(1000, 0.5, 4) == 2500
    assert redundant_size(100, 0.3, 4) == 70 + 120


@pytest.mark.slow
def test_exact_copies_repeat_their_unique_image_and_the_bank_holds_each_once():
    clean = load_data(DataConfig(image_size=16, train_subset=200))
    data = load_data(_data(unique=100, dup_fraction=0.3, copies=4))
    n = len(data.train)
    assert n == 190 and data.unique_of.shape == (n,) and len(data.bank) == 100
    counts = torch.bincount(data.unique_of)
    assert sorted(counts.tolist()) == [1] * 70 + [4] * 30
    # every training sample is its unique image, pixel for pixel, with the original's label
    assert torch.equal(data.train.images, data.bank.images[data.unique_of])
    assert torch.equal(data.train.labels, data.bank.labels[data.unique_of])
    # the bank: U distinct images of the split, clean, as the seeded layout chose them
    chosen, unique_of = redundant_layout(200, 100, 0.3, 4)
    assert torch.equal(unique_of, data.unique_of)
    assert torch.equal(data.bank.images, clean.train.images[chosen])
    assert torch.equal(data.bank.labels, clean.train.labels[chosen])
    assert len(torch.unique(data.bank.images.flatten(1), dim=0)) == 100
    again = load_data(_data(unique=100, dup_fraction=0.3, copies=4))
    assert torch.equal(again.train.images, data.train.images) and clean.unique_of is None
    copies = extra_copies(data.unique_of)
    assert int(copies.sum()) == n - 100 and not copies[:100].any() and copies[100:].all()


def test_near_copies_are_fixed_mild_changes_of_their_original():
    exact = load_data(_data(unique=100, dup_fraction=0.5, copies=3))
    near = load_data(_data(unique=100, dup_fraction=0.5, copies=3, near=True))
    again = load_data(_data(unique=100, dup_fraction=0.5, copies=3, near=True))
    assert torch.equal(near.unique_of, exact.unique_of) and torch.equal(near.bank.images, exact.bank.images)
    assert torch.equal(near.train.images, again.train.images)  # drawn once, from a seeded generator
    copies = extra_copies(near.unique_of)
    assert torch.equal(near.train.images[~copies], exact.train.images[~copies])  # originals untouched
    changed = (near.train.images[copies] != exact.train.images[copies]).flatten(1).any(dim=1)
    assert changed.all()
    # the two extra copies of one image are different changes of it
    dup = near.unique_of[copies]
    first, second = near.train.images[copies][0::2], near.train.images[copies][1::2]
    assert torch.equal(dup[0::2], dup[1::2]) and (first != second).flatten(1).any(dim=1).all()
    # mild: a copy's own original is its nearest bank image for most copies, and on average fewer
    # than 5 % of the bank lie nearer (a copy unrelated to its original would put about half nearer)
    dist = torch.cdist(near.train.images[copies].flatten(1).float(), near.bank.images.flatten(1).float())
    nearer = (dist < dist.gather(1, dup[:, None])).float().mean(dim=1)
    assert nearer.median() == 0 and nearer.mean() < 0.05


def test_val_fraction_holds_out_first_so_no_copy_is_validated():
    plain = load_data(DataConfig(image_size=16, train_subset=200, val_fraction=0.2))
    data = load_data(DataConfig(image_size=16, train_subset=200, val_fraction=0.2,
                                redundancy=RedundancyConfig(unique=100, dup_fraction=0.5, copies=2)))
    chosen, _ = redundant_layout(len(plain.train), 100, 0.5, 2)
    assert torch.equal(data.bank.images, plain.train.images[chosen]) and torch.equal(data.test.images, plain.test.images)
    assert data.test_is_validation and len(data.train) == 150


def test_dedup_trains_on_the_unique_images_with_the_redundant_runs_bank():
    redundant = load_data(_data(unique=100, dup_fraction=0.5, copies=3))
    dedup = load_data(_data(unique=100, dup_fraction=0.5, copies=3, dedup=True))
    assert torch.equal(dedup.bank.images, redundant.bank.images) and torch.equal(dedup.bank.labels, redundant.bank.labels)
    assert torch.equal(dedup.train.images, redundant.bank.images) and torch.equal(dedup.unique_of, torch.arange(100))


def test_extra_copies_marks_every_repeat_after_the_first():
    unique_of = torch.tensor([2, 0, 2, 1, 0, 2])
    assert extra_copies(unique_of).tolist() == [False, False, True, False, True, True]


def test_repeat_share_against_a_direct_count():
    gen = torch.Generator().manual_seed(0)
    unique_of = torch.randint(0, 12, (40,), generator=gen)
    for size in (1, 5, 20, 40):
        kept = torch.randperm(40, generator=gen)[:size].sort().values
        seen: set[int] = set()
        repeats = 0
        for i in kept.tolist():
            repeats += unique_of[i].item() in seen
            seen.add(unique_of[i].item())
        got = redundancy_diagnostics(unique_of, kept)
        assert got == {"repeat_share": pytest.approx(repeats / size), "distinct_unique": len(seen)}
    assert redundancy_diagnostics(torch.tensor([0, 1, 2, 3, 0, 0, 1]), torch.tensor([0, 2, 4, 5, 6])) == {
        "repeat_share": pytest.approx(2 / 5), "distinct_unique": 3}


@pytest.mark.parametrize("sets, message", [
    (["data.redundancy.unique=0"], "unique must be a positive integer"),
    (["data.redundancy.unique=100", "data.redundancy.dup_fraction=1.5"], r"dup_fraction must be in \[0, 1\]"),
    (["data.redundancy.unique=100", "data.redundancy.dup_fraction=-0.1"], r"dup_fraction must be in \[0, 1\]"),
    (["data.redundancy.unique=100", "data.redundancy.copies=1"], "copies must be an integer >= 2"),
    (["data.redundancy.unique=100", "data.redundancy.dup_fraction=0.001"], "duplicates no image"),
    (["data.redundancy.unique=100", "data.redundancy.dup_fraction=0"], "duplicates no image"),
    (["data.redundancy.unique=100", "data.in_memory=false"], "held in memory"),
    (["data.redundancy.unique=100", "data.inject_noise=0.1"], "one at a time"),
    (["data.redundancy.dedup=true"], "needs a redundant training set"),
    (["data.dataset=stl10", "data.train_split=train+unlabeled", "data.redundancy.unique=100"], "train_split=train"),
])
def test_bad_redundancy_is_one_line(sets, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(None, sets)
    assert "\n" not in str(exc.value)


def test_more_unique_images_than_the_split_is_one_line():
    with pytest.raises(ConfigError, match="unique=201 is more than the 200 images") as exc:
        load_data(_data(unique=201))
    assert "\n" not in str(exc.value)


def test_images_read_from_disk_are_refused():
    files = IndexedImageFiles(["a.png"], None, None, 16)
    with pytest.raises(ConfigError, match="held in memory"):
        make_redundant(files, RedundancyConfig(unique=1, dup_fraction=1.0, copies=2))


@pytest.mark.slow
def test_pretrain_logs_repeat_share_and_distinct_images_per_epoch(tmp_path, tiny_args):
    out = tmp_path / "run"
    code = main(["pretrain", "--output-dir", str(out), *tiny_args, "--epochs", "2", "--method", "random-dynamic",
                 "--pruning-rate", "0.5", "--set", "data.train_subset=200", "--set", "data.redundancy.unique=100",
                 "--set", "data.redundancy.copies=3", "--set", "eval.eval_every=0"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["epoch"] >= 0]
    assert len(epochs) == 2
    # random-dynamic's kept set depends only on (seed, epoch): recount it here, independently
    _, unique_of = redundant_layout(200, 100, 0.5, 3)
    pruner = DynamicPruner(num_samples=len(unique_of), method="random-dynamic", pruning_rate=0.5, epochs=2, seed=0)
    for record in epochs:
        pruner.set_epoch(record["epoch"])
        kept = pruner.kept_indices()
        distinct = len(set(unique_of[kept].tolist()))
        assert record["pruning/distinct_unique"] == distinct
        assert record["pruning/repeat_share"] == pytest.approx((len(kept) - distinct) / len(kept))
        assert 0 < record["pruning/repeat_share"] < 0.5  # below full data's (N − U) / N = 100 / 200
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 200
    assert summary["repeat_share"] == pytest.approx(sum(r["pruning/repeat_share"] for r in epochs) / 2)
    assert summary["distinct_unique"] == pytest.approx(sum(r["pruning/distinct_unique"] for r in epochs) / 2)
