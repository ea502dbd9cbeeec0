"""`ssl-emp pretrain` under torchrun (2 processes, gloo, CPU) with EMP pruning."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_emp.config import ModelConfig
from ssl_emp.models import build_model
from ssl_emp.pruning import DynamicPruner
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import assert_same_table, rank_records, torchrun

SCRIPT = Path(__file__).resolve().parent / "ddp_pretrain_script.py"


pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """One 2-rank run of the script, shared by the tests below; returns its record folder."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    torchrun(SCRIPT, tmp_path / "run", tmp_path, timeout=300)
    return tmp_path


@pytest.mark.slow
def test_emp_pretrain_on_two_ranks(ddp_run):
    tmp_path = ddp_run
    ranks = rank_records(tmp_path)
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")

    # A one-process pruner fed the same statistics, in all-gather order (rank 0's batch, then rank 1's).
    reference = DynamicPruner(num_samples=200, method="emp", pruning_rate=0.5, epochs=3, seed=0)
    steps = list(zip(ranks[0]["steps"], ranks[1]["steps"], strict=True))
    for epoch in range(3):
        reference.set_epoch(epoch)
        kept = reference.kept_indices()
        assert kept.numel() == 100
        for r in range(2):
            assert torch.equal(ranks[r]["kept"][epoch], kept), f"rank {r}, epoch {epoch}"
        served = torch.cat([ranks[r]["served"][epoch] for r in range(2)])
        assert set(served.tolist()) == set(kept.tolist()) and len(served) == 100
        for (e0, *a), (e1, *b) in steps:
            if e0 == epoch:
                assert e1 == epoch
                reference.update(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), torch.cat([a[2], b[2]]))
    # Rank 0's checkpointed table equals the reference, and both ranks saw every gathered sample.
    assert_same_table(final["pruner"]["table"], reference.state_dict()["table"])
    assert final["pruner"]["table"]["count"].sum() == 300

    # DDP keeps the replicas identical, and the learning rate is scaled by the global batch.
    assert ranks[0]["params"].keys() == ranks[1]["params"].keys() and ranks[0]["params"]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(ranks[1]["params"][name], value), name
        assert torch.equal(final["model"][name], value), name
    assert ranks[0]["world"] == 2 and ranks[0]["base_lr"] == pytest.approx(0.3 * 32 * 2 / 256)


@pytest.mark.slow
def test_gathered_simclr_negatives_equal_one_process_on_the_whole_batch(ddp_run):
    """lightly's NTXentLoss(gather_distributed=True) semantics, per sample (recorded by the same run)."""
    ranks = [record["gather"] for record in rank_records(ddp_run)]
    model = build_model("simclr", ModelConfig(**ranks[0]["model_cfg"])).eval()
    model.load_state_dict(ranks[0]["init"])
    views = ranks[0]["views"]
    assert torch.equal(views, ranks[1]["views"])
    out = model(views[0], views[1])
    out["loss"].sum().backward()
    torch.testing.assert_close(torch.cat([r["loss"] for r in ranks]), out["loss"].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["align"] for r in ranks]), out["align"], rtol=1e-5, atol=1e-6)
    for r in ranks:  # gradients reach every rank's projections: the summed gradient is the whole batch's
        torch.testing.assert_close(r["grad"], model.head.layers[-1].weight.grad, rtol=1e-4, atol=1e-6)
