"""The buffered update of ssl_emp.pruning: no host synchronisation in update(), flush() equal to
step-by-step updates, repeats within an epoch, and the bad batches flush() and update() reject."""

from __future__ import annotations

import pytest
import torch

from ssl_emp.pruning import METHODS, DynamicPruner
from tests.pruning_helpers import assert_one_line_config_error, fake_stats, make, run_epoch

# --------------------------------------------------------------------------- buffered updates
_SYNC_METHODS = ("item", "cpu", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "nonzero")


def _count_syncs(monkeypatch) -> dict[str, int]:
    calls = {name: 0 for name in (*_SYNC_METHODS, "cuda.synchronize")}
    for name in _SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def sync(*args, **kwargs):
        calls["cuda.synchronize"] += 1

    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    return calls


@pytest.mark.parametrize("method", [*METHODS, "emp-supervised"])
def test_update_makes_no_host_synchronising_call(method: str, monkeypatch) -> None:
    objective = "supervised" if method == "emp-supervised" else "contrastive"
    name = "emp" if method == "emp-supervised" else method
    pruner = make(name, 0.0 if name == "full" else 0.5, n=400, epochs=4, objective=objective)
    run_epoch(pruner, 0, batch=64, stats=lambda idx, e: (*fake_stats(idx, e), fake_stats(idx, e)[1] + 1))
    pruner.set_epoch(1)  # infobatch: an epoch with up-weighted samples
    if name == "infobatch":
        assert pruner._upweight is not None and bool(pruner._upweight.any())
    order = pruner.sampler().indices()
    batches = [(chunk, *fake_stats(chunk, 1)) for chunk in order.split(64)]
    calls = _count_syncs(monkeypatch)
    weights = [pruner.update(idx, loss=loss, align=align, entropy=(align + 1) / 2) for idx, loss, align in batches]
    assert calls == dict.fromkeys(calls, 0)
    pruner.flush()  # the counters do see synchronising calls: flush() makes them, once per epoch
    assert sum(calls.values()) > 0
    monkeypatch.undo()
    scale = 1 / (1 - 0.5)
    for (idx, _, _), w in zip(batches, weights, strict=True):
        expected = torch.ones(idx.numel()) if pruner._upweight is None else torch.where(pruner._upweight[idx], scale, 1.0)
        torch.testing.assert_close(w, expected)


def _stream(pruner: DynamicPruner, epoch: int) -> list[torch.Tensor]:
    """The epoch's batches with padding-style repeats and a short last batch."""
    order = pruner.sampler().indices()
    order = torch.cat([order, order[:5]])  # DistributedSampler-style repeats of early samples
    return list(order.split(13))


@pytest.mark.parametrize("method", ["emp", "emp-easy", "infobatch", "ucb", "random-dynamic"])
def test_buffered_updates_equal_step_by_step_updates(method: str) -> None:
    kw = {"objective": "supervised"} if method == "emp-easy" else {}
    buffered, stepwise = (make(method, 0.6, n=120, epochs=5, seed=6, **kw) for _ in range(2))
    for epoch in range(5):
        for pruner in (buffered, stepwise):
            pruner.set_epoch(epoch)
        for i, chunk in enumerate(_stream(buffered, epoch)):
            loss, align = fake_stats(chunk, epoch)
            signals = {"align": align, "entropy": (align + 1) * 1.5}
            if i % 3 == 2:  # some steps without the signals the method does not need
                need = buffered.required_signal
                signals = {} if need is None else {need: signals[need]}
            w_buf = buffered.update(chunk, loss=loss, **signals)
            w_step = stepwise.update(chunk, loss=loss, **signals)
            stepwise.flush()  # the reference: every step folded in at once, as before buffering
            torch.testing.assert_close(w_buf, w_step, rtol=0, atol=0)
            if epoch == 2 and i == 3:  # a mid-epoch checkpoint flushes part of the epoch
                buffered.state_dict()
        assert torch.equal(buffered.kept_indices(), stepwise.kept_indices())
    a, b = buffered.state_dict(), stepwise.state_dict()
    assert a.keys() == b.keys()
    for name, column in b["table"].items():
        torch.testing.assert_close(a["table"][name], column, rtol=0, atol=0, equal_nan=True)
    for key, value in b.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(a[key], value), key
        elif key != "table":
            assert a[key] == value, key
    assert buffered.stats() == stepwise.stats()


def test_buffer_does_not_keep_a_larger_base_tensor_alive() -> None:
    pruner = make("emp", 0.0, n=8, epochs=1)
    pruner.set_epoch(0)
    logits = torch.rand(8, 1000)
    pruner.update(torch.arange(8), loss=logits[:, 0], align=logits[:, 1] - 0.5)
    step = pruner._pending[0]
    assert step.loss.untyped_storage().nbytes() == 8 * 4 and step.align.untyped_storage().nbytes() == 8 * 4
    pruner.flush()
    assert pruner.table.loss.tolist() == pytest.approx(logits[:, 0].tolist())


def test_readers_flush_single_process() -> None:
    pruner = make("emp", 0.5, n=20, epochs=2)
    pruner.set_epoch(0)
    kept = pruner.kept_indices()
    pruner.update(kept, *fake_stats(kept, 0))
    assert pruner.stats()["sample_visits"] == 10  # stats() folded the buffer in
    pruner.update(kept, *fake_stats(kept, 0))  # repeats within the epoch: no new visits
    assert int(pruner.table.count.sum()) == 10 and pruner._pending == []


def test_update_ignores_repeats_within_an_epoch() -> None:
    pruner = make("emp", 0.0, n=10, epochs=2)
    pruner.set_epoch(0)
    w = pruner.update(torch.tensor([3, 3, 4]), torch.tensor([1.0, 9.0, 2.0]), torch.tensor([0.0, 0.0, 0.0]))
    pruner.update(torch.tensor([4]), torch.tensor([7.0]), torch.tensor([0.5]))  # padding repeat
    assert w.tolist() == [1.0, 1.0, 1.0]
    assert pruner.table.loss[3].item() == 1.0 and pruner.table.loss[4].item() == 2.0
    assert pruner.table.count[4].item() == 1
    stats = pruner.stats()
    assert stats["sample_visits"] == 2 and stats["optimizer_steps"] == 2


# --------------------------------------------------------------------------- bad batches
def _update(**kw):
    p = make("emp", 0.5, n=100, epochs=3)
    p.set_epoch(0)
    args = {"idx": torch.tensor([0, 1]), "loss": torch.tensor([1.0, 1.0]), "align": torch.tensor([0.0, 0.0])}
    args.update(kw)
    return lambda: (p.update(**args), p.flush())  # values are checked when the buffer is folded in


def _supervised_update(**kw):
    p = make("emp-easy", 0.5, n=100, epochs=3, objective="supervised")
    p.set_epoch(0)
    args = {"idx": torch.tensor([0]), "loss": torch.tensor([1.0]), "entropy": torch.tensor([0.5])}
    args.update(kw)
    return lambda: (p.update(**args), p.flush())


BAD_BATCHES = [
    pytest.param(_update(idx=torch.tensor([0, 100])), "100", id="idx-too-high"),
    pytest.param(_update(idx=torch.tensor([-1, 0])), "-1", id="idx-negative"),
    pytest.param(_update(idx=torch.tensor([0.0, 1.0])), "float32", id="idx-float"),
    pytest.param(_update(loss=torch.tensor([1.0, 1.0, 1.0])), "(3,)", id="loss-wrong-shape"),
    pytest.param(_update(align=torch.tensor([[0.0, 0.0]])), "(1, 2)", id="align-2d"),
    pytest.param(_update(loss=torch.tensor([1.0, float("nan")])), "nan", id="loss-nan"),
    pytest.param(_update(loss=torch.tensor([1, 2])), "int64", id="loss-int"),
    pytest.param(_update(align=torch.tensor([0.0, float("inf")])), "inf", id="align-inf"),
    pytest.param(_update(align=torch.tensor([0.0, 1.5])), "1.5", id="align-above-1"),
    pytest.param(_update(align=None), "align", id="align-missing"),
    pytest.param(_update(entropy=torch.tensor([0.5, -0.5])), "-0.5", id="entropy-negative"),
    pytest.param(_supervised_update(entropy=None), "entropy=None", id="supervised-entropy-missing"),
    pytest.param(_supervised_update(entropy=torch.tensor([[0.5]])), "(1, 1)", id="supervised-entropy-2d"),
    pytest.param(_supervised_update(entropy=torch.tensor([float("nan")])), "nan", id="supervised-entropy-nan"),
    pytest.param(_update(loss=[1.0, 1.0]), "list", id="loss-list"),
]


@pytest.mark.parametrize(("call", "needle"), BAD_BATCHES)
def test_bad_batch_raises_config_error(call, needle: str) -> None:
    assert_one_line_config_error(call, needle)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_accepts_cuda_tensors() -> None:
    pruner = make("infobatch", 0.0, n=50, epochs=3)
    run_epoch(pruner, 0)
    pruner.set_epoch(1)
    order = pruner.sampler().indices()
    for idx in (order[:20].cuda(), order[20:]):  # idx on the device, and (the trainer's case) on the CPU
        loss, align = fake_stats(idx, 1)
        w = pruner.update(idx, loss.cuda().half(), align.cuda())
        assert w.device.type == "cuda" and w.dtype == torch.float16 and w.shape == idx.shape
        expected = torch.where(pruner._upweight[idx.cpu()], 2.0, 1.0).half()
        torch.testing.assert_close(w.cpu(), expected)
    pruner.flush()
    assert pruner.stats()["visits_per_epoch"][1] == order.numel()
