"""ssl_emp.lightning.PruningCallback through pytorch_lightning.Trainer on CPU (tiny runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from ssl_emp.data.source import ImageSource
from ssl_emp.data.views import CroppedViews
from ssl_emp.errors import ConfigError
from ssl_emp.lightning import PruningCallback
from tests.helpers import ROOT, assert_same_table, child_env, load_script, rank_records, torchrun

SCRIPT = Path(__file__).resolve().parent / "lightning_ddp_script.py"
EXAMPLE = ROOT / "examples" / "lightning_simclr.py"
H = load_script(SCRIPT)


@pytest.mark.parametrize("method", ["random-dynamic", "emp"])
def test_visits_and_seen_indices_match_the_exact_budget(method: str) -> None:
    epochs = 3
    callback = PruningCallback(num_samples=H.NUM_IMAGES, method=method, pruning_rate=0.5, epochs=epochs, seed=2)
    module = H.TinySimCLR(callback)
    H.trainer([callback], epochs).fit(module)
    pruner = callback.pruner
    k = pruner.budget
    assert k == 128
    stats = pruner.stats()
    assert stats["sample_visits"] == k * epochs
    assert stats["visits_per_epoch"] == [k] * epochs
    assert stats["achieved_rate"] == 0.5
    assert stats["optimizer_steps"] == epochs * 4  # 128 / 32
    for epoch in range(epochs):
        seen = module.seen[epoch]
        assert len(seen) == k  # no repeats, nothing dropped
        assert sorted(seen) == pruner.kept_indices(epoch).tolist()
    assert module.seen[0] != module.seen[1]  # a dynamic method changes the set
    logged = module.trainer.callback_metrics
    assert float(logged["pruning/sample_visits"]) == k * epochs
    assert float(logged["pruning/achieved_rate"]) == 0.5
    assert float(logged["pruning/keep_fraction"]) == 0.5


def test_infobatch_needs_reloaded_dataloaders_and_then_counts_every_kept_sample() -> None:
    def run(**kwargs):
        callback = PruningCallback(num_samples=H.NUM_IMAGES, method="infobatch", epochs=3, seed=1)
        module = H.TinySimCLR(callback)
        H.trainer([callback], 3, **kwargs).fit(module)
        return callback, module

    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs"):
        run()
    callback, module = run(reload_dataloaders_every_n_epochs=1)
    sizes = [len(module.seen[e]) for e in range(3)]
    assert sizes[0] == H.NUM_IMAGES and sizes[1] < H.NUM_IMAGES  # infobatch prunes from epoch 1
    for e in range(3):
        assert sorted(module.seen[e]) == callback.pruner.kept_indices(e).tolist()
    assert callback.pruner.stats()["sample_visits"] == sum(sizes)


def test_resume_from_a_lightning_checkpoint_picks_the_same_kept_sets(tmp_path: Path) -> None:
    epochs, config = 3, dict(num_samples=H.NUM_IMAGES, method="emp", pruning_rate=0.5, epochs=3, seed=4)
    full_cb = PruningCallback(**config)
    full = H.TinySimCLR(full_cb)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    H.trainer([full_cb, ckpt], epochs, enable_checkpointing=True).fit(full)
    assert (tmp_path / "epoch=0.ckpt").is_file()

    resumed_cb = PruningCallback(**config)
    resumed = H.TinySimCLR(resumed_cb)
    H.trainer([resumed_cb], epochs).fit(resumed, ckpt_path=tmp_path / "epoch=0.ckpt")
    assert sorted(resumed.seen) == [1, 2]  # epoch 0 came from the checkpoint
    for epoch in (1, 2):
        assert resumed.seen[epoch] == full.seen[epoch]  # same set, same order
        assert sorted(resumed.seen[epoch]) == full_cb.pruner.kept_indices(epoch).tolist()
    a, b = full_cb.pruner.state_dict(), resumed_cb.pruner.state_dict()
    assert_same_table(b["table"], a["table"])
    assert a["sample_visits"] == b["sample_visits"] == 128 * epochs
    assert torch.equal(a["kept"], b["kept"])


def test_a_loader_that_bypasses_the_pruner_is_refused() -> None:
    callback = PruningCallback(num_samples=H.NUM_IMAGES, method="emp", pruning_rate=0.5, epochs=1)

    class Plain(H.TinySimCLR):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(H.TwoViewDigits(), batch_size=32, shuffle=True)

    with pytest.raises(ConfigError, match="must draw from PruningCallback"):
        H.trainer([callback], 1).fit(Plain(callback))


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_process_ddp_ends_with_the_same_pruner_on_both_ranks(tmp_path: Path) -> None:
    torchrun(SCRIPT, tmp_path, timeout=240)
    ranks = rank_records(tmp_path)
    assert_same_table(ranks[1]["state"]["table"], ranks[0]["state"]["table"])
    k, epochs = 128, H.CONFIG["epochs"]
    for r in range(2):
        assert ranks[r]["stats"]["sample_visits"] == k * epochs
    for epoch in range(epochs):
        kept = ranks[0]["kept"][epoch]
        assert torch.equal(ranks[1]["kept"][epoch], kept)
        halves = [ranks[r]["seen"][epoch] for r in range(2)]
        assert len(halves[0]) == len(halves[1]) == k // 2  # each rank trains its shard
        assert sorted(halves[0] + halves[1]) == kept.tolist()


@pytest.mark.slow
def test_the_example_runs(tmp_path: Path) -> None:
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "1", "--method", "emp", "--rate", "0.5"]
    proc = subprocess.run(cmd, env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "sample_visits" in proc.stdout


@pytest.mark.parametrize("size", [H.NUM_IMAGES + 32, H.NUM_IMAGES - 32], ids=["longer", "shorter"])
def test_a_data_set_of_another_length_than_num_samples_is_refused_before_the_first_batch(size: int) -> None:
    # Longer: indices >= num_samples would never be trained; shorter: an IndexError inside the DataLoader.
    callback = PruningCallback(num_samples=H.NUM_IMAGES, method="emp", pruning_rate=0.5, epochs=1)

    class OtherSize(H.TinySimCLR):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(H.TwoViewDigits(size), batch_sampler=self.callback.batch_sampler(self.batch_size))

    module = OtherSize(callback)
    with pytest.raises(ConfigError, match=f"data set has {size} samples but the pruner was built for num_samples=256"):
        H.trainer([callback], 1).fit(module)
    assert module.seen == {}


def test_a_trainer_without_an_epoch_limit_is_refused_at_the_start() -> None:
    callback = PruningCallback(num_samples=H.NUM_IMAGES, method="emp", pruning_rate=0.5, epochs=2)
    module = H.TinySimCLR(callback)
    with pytest.raises(ConfigError, match=r"Trainer\(max_epochs=-1\) trains without an epoch limit"):
        H.trainer([callback], -1).fit(module)
    assert module.seen == {}


class _Photos(ImageSource):
    """Images of their own sizes (4:3 and 3:4), as a photo source has."""

    def __init__(self, n: int):
        rng = torch.Generator().manual_seed(0)
        self.images = [torch.randint(0, 256, (3, 24, 32) if i % 2 else (3, 32, 24), generator=rng, dtype=torch.uint8)
                       for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> torch.Tensor:
        return self.images[index]


class _PhotoSimCLR(H.TinySimCLR):
    """TinySimCLR on views cut from photographs in the workers; records each batch's views."""

    def __init__(self, callback: PruningCallback, source: ImageSource, workers: int):
        super().__init__(callback)
        self.source, self.workers, self.views = source, workers, {}

    def train_dataloader(self) -> DataLoader:
        views = CroppedViews(self.source, views=2, size=8, scale=(0.2, 1.0), seed=3)
        return DataLoader(views, batch_sampler=self.callback.view_batch_sampler(self.batch_size), num_workers=self.workers)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, views = batch  # uint8 [B, 2, 3, 8, 8]
        for i, v in zip(idx.tolist(), views, strict=True):
            self.views[(self.current_epoch, i)] = v
        x = views.float().flatten(2)[..., :64] / 255
        return super().training_step((idx, x[:, 0], x[:, 1]), batch_idx)


@pytest.mark.parametrize("workers", [0, 2])
def test_photographs_train_with_views_seeded_by_epoch_and_index(workers: int) -> None:
    """Views cut from each photograph's own pixels, the same for (epoch, index) whatever the workers."""
    source = _Photos(H.NUM_IMAGES)  # random-dynamic: epoch 1 keeps some of epoch 0's images (EMP: none)
    callback = PruningCallback(num_samples=H.NUM_IMAGES, method="random-dynamic", pruning_rate=0.5, epochs=2, seed=2)
    module = _PhotoSimCLR(callback, source, workers)
    H.trainer([callback], 2).fit(module)
    assert sorted(i for e, i in module.views if e == 1) == callback.pruner.kept_indices(1).tolist()
    direct = CroppedViews(source, views=2, size=8, scale=(0.2, 1.0), seed=3)
    for (epoch, index), views in list(module.views.items())[::17]:
        assert torch.equal(views, direct[(epoch, index)][1])
    first = {i: v for (e, i), v in module.views.items() if e == 0}
    both = [i for (e, i) in module.views if e == 1 and i in first]
    assert both and not any(torch.equal(first[i], module.views[(1, i)]) for i in both)  # new crops each epoch
