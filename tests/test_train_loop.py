"""The training loop's guarantees, checked through ``pretrain`` itself: no host sync in a step, no
kept image dropped, the pruner's weights reach the loss; plus the model contract it relies on."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import ssl_emp.train
from ssl_emp.cli import main
from ssl_emp.config import Config, ModelConfig, OptimConfig
from ssl_emp.models import PretrainModel, build_model
from ssl_emp.pruning import DynamicPruner
from ssl_emp.pruning.sampler import FoldedBatchSampler
from ssl_emp.run.checkpoint import load_checkpoint
from ssl_emp.runtime import scaled_lr

SYNCS = ("item", "cpu", "tolist", "__bool__", "__int__", "__float__", "numpy")


def _run(tmp_path, tiny_args, *extra, name="run"):
    out = tmp_path / name
    code = main(["pretrain", "--output-dir", str(out), *tiny_args, "--set", "eval.eval_every=0", *extra])
    assert code == 0
    return out, json.loads((out / "summary.json").read_text())


def _host_side_read() -> bool:
    """The one read the view pipeline makes of a value it drew on the host on purpose: the colour
    jitter's step order (``ssl_emp.augment.step_order``, ``torch.randperm(4)`` on the CPU generator,
    as kornia does). Every tensor is on the CPU here, so the test tells it apart by name; that the
    pipeline reads nothing from the device is tests/test_augment_sync.py's check on the meta device."""
    frame = sys._getframe(2)
    while frame is not None and "/torch/" in frame.f_code.co_filename:
        frame = frame.f_back
    return frame is not None and frame.f_code.co_name == "step_order" and frame.f_code.co_filename.endswith(
        "ssl_emp/augment.py")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["simclr", "moco"])
def test_a_training_step_makes_no_host_sync(tmp_path, tiny_args, monkeypatch, algorithm):
    """Counts reads of device values (``.item()``, ``bool(t)``, ``.cpu()``, ...) and
    ``torch.cuda.synchronize`` made inside ``train_step`` on non-logging steps: there must be none.

    The view pipeline is included (it no longer reads crop boxes or jitter guards back the way
    kornia's modules did); only its host-side draw of the jitter order is left out.
    """
    inside = {"on": False}
    calls: dict[str, list[str]] = {"step": [], "outside": []}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            if not _host_side_read():
                calls["step" if inside["on"] else "outside"].append(name)
            return real(*args, **kwargs)
        return wrapper

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.cuda, "synchronize", counted("cuda.synchronize", torch.cuda.synchronize))
    real_step = ssl_emp.train.train_step

    def step(*args, **kwargs):
        inside["on"] = True
        try:
            return real_step(*args, **kwargs)
        finally:
            inside["on"] = False

    monkeypatch.setattr(ssl_emp.train, "train_step", step)
    if not hasattr(DynamicPruner, "flush"):  # today's pruner syncs in update; the buffering one does not
        real_update = DynamicPruner.update
        monkeypatch.setattr(DynamicPruner, "update", lambda self, idx, loss, **signals: (
            real_update(self, idx, loss, **signals) if not inside["on"] else torch.ones_like(loss)))
    _run(tmp_path, tiny_args, "--epochs", "1", "--set", f"algorithm={algorithm}", "--set", "data.train_subset=256",
         "--set", "log_every=1000")
    assert calls["step"] == [], f"host syncs inside train_step: {calls['step']}"
    assert "item" in calls["outside"], "the counter must see the epoch-end reads (else it counts nothing)"


@pytest.mark.slow
@pytest.mark.parametrize("method, rate, subset, kept", [
    ("full", 0.0, 257, 257),  # 257 = 4 x 64 + 1
    ("random-dynamic", 0.24609375, 256, 193),  # ceil(0.75390625 x 256) = 193 = 3 x 64 + 1
    ("emp", 0.5, 258, 129),  # 129 = 2 x 64 + 1
])
def test_every_kept_image_is_trained_and_counted(tmp_path, tiny_args, method, rate, subset, kept):
    """A trailing batch of one joins the batch before it: the achieved rate is the pruner's exact K."""
    out, summary = _run(tmp_path, tiny_args, "--epochs", "2", "--method", method, "--pruning-rate", str(rate),
                        "--set", f"data.train_subset={subset}")
    assert summary["images_seen"] == 2 * kept
    assert summary["achieved_rate"] == pytest.approx(1 - kept / subset, abs=1e-12)
    assert summary["optimizer_steps"] == 2 * (kept // 64)  # the single image rode along, no extra step
    counts = load_checkpoint(out / "checkpoints" / "final.pt")["pruner"]["table"]["count"]
    assert int(counts.sum()) == 2 * kept


def test_folded_batches_cover_each_rank_alike():
    pruner = DynamicPruner(num_samples=130, method="random-dynamic", pruning_rate=0.2, epochs=1, seed=0)
    pruner.set_epoch(0)  # 104 kept -> 52 per rank -> batches of 25 + 25 + 2, and of 17 x 3 + 1 folded
    for batch_size, sizes in ((25, [25, 25, 2]), (17, [17, 17, 18])):
        per_rank = [list(FoldedBatchSampler(pruner.sampler(rank=r, world_size=2), batch_size)) for r in range(2)]
        for batches in per_rank:
            assert [len(b) for b in batches] == sizes and len(FoldedBatchSampler(pruner.sampler(0, 2), batch_size)) == len(sizes)
        served = {i for batches in per_rank for b in batches for i in b}
        assert served == set(pruner.kept_indices().tolist())


def test_pruner_weights_reach_the_loss(tmp_path, tiny_args, monkeypatch):
    """Weights of zero (patched into InfoBatch's update) must leave every trained parameter unchanged."""
    initial = {}
    real_build, real_update = ssl_emp.train.build, DynamicPruner.update

    def build(cfg, run):
        t = real_build(cfg, run)
        initial.update({k: v.detach().clone() for k, v in t.state.model.named_parameters()})
        return t

    monkeypatch.setattr(ssl_emp.train, "build", build)
    monkeypatch.setattr(DynamicPruner, "update", lambda self, idx, loss, **s: 0 * real_update(self, idx, loss, **s))
    out, _ = _run(tmp_path, tiny_args, "--epochs", "1", "--method", "infobatch", "--pruning-rate", "0.3",
                  "--set", "data.train_subset=256", "--set", "optim.weight_decay=0")
    final = load_checkpoint(out / "checkpoints" / "final.pt")["model"]
    assert initial and all(torch.equal(final[k], v) for k, v in initial.items())
    # It did train: batch-norm statistics moved (they do not depend on the loss).
    assert not torch.equal(final["backbone.bn1.running_mean"], torch.zeros_like(final["backbone.bn1.running_mean"]))


def test_learning_rate_scales_with_the_global_batch():
    cfg = OptimConfig(lr=0.3, batch_size=32)
    assert scaled_lr(cfg, 1) == pytest.approx(0.0375) and scaled_lr(cfg, 4) == pytest.approx(0.15)


@pytest.mark.parametrize("algorithm", ["simclr", "moco"])
def test_model_contract(algorithm):
    cfg = ModelConfig(backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}, proj_hidden_dim=16,
                      proj_out_dim=8, queue_size=32)
    model = build_model(algorithm, cfg)
    assert model.num_views == 2 and model.needs_labels is False
    views = [torch.randn(4, 3, 16, 16) for _ in range(model.num_views)]
    out = model(*views, labels=None)
    assert out["loss"].shape == (4,) and out["loss"].dtype == torch.float32 and out["loss"].requires_grad
    signals = set(out) - {"loss"}
    assert signals == {"align", "loss_12", "loss_21"} and not any(out[s].requires_grad for s in signals)
    assert signals == set(model.signals) and isinstance(model, PretrainModel)  # returns what it declares
    pruner = DynamicPruner(num_samples=4, method="emp", epochs=1, signals=model.signals)  # which the pruner takes
    pruner.set_epoch(0)
    pruner.update(torch.arange(4), out["loss"].detach(), **{name: out[name] for name in model.signals})
    pruner.flush()
    model.on_train_step(0.5)  # the loop calls it before every step; must accept a fraction


def test_moco_momentum_follows_its_cosine_schedule(monkeypatch):
    cfg = ModelConfig(backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}, momentum_start=0.9,
                      momentum_end=1.0, proj_hidden_dim=16, proj_out_dim=8, queue_size=32)
    model = build_model("moco", cfg)
    seen = []
    monkeypatch.setattr(model, "momentum_update", seen.append)
    for progress in (0.0, 0.5, 1.0):
        model.on_train_step(progress)
    assert seen == pytest.approx([0.9, 0.95, 1.0])


def test_config_keys_of_the_fast_path_default_as_documented():
    cfg = Config()
    assert cfg.model.channels_last is True and cfg.model.compile is False and cfg.model.gather_distributed is True


def test_channels_last_is_skipped_where_torch_cpu_kernels_are_unsafe():
    """A strided 1x1 convolution with < 16 input channels aborts torch's CPU backward in channels_last
    (odd batches); such a model trains contiguous on the CPU, every other model channels_last."""
    from ssl_emp.models import build_backbone
    from ssl_emp.runtime import memory_format

    narrow = build_backbone("resnet18", True, layers=[1, 1, 1, 1], channels=[8, 16, 32, 64])
    default = build_backbone("resnet18", True, layers=[1, 1, 1, 1], channels=[16, 32, 64, 128])
    cpu = torch.device("cpu")
    assert memory_format(narrow, cpu, True) == torch.contiguous_format
    assert memory_format(default, cpu, True) == torch.channels_last
    assert memory_format(default, cpu, False) == torch.contiguous_format
    assert memory_format(narrow, torch.device("cuda", 0), True) == torch.channels_last
