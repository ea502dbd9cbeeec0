"""`ssl-emp pretrain` under torchrun (2 processes, gloo, CPU) with EMP pruning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.pruning import DynamicPruner

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "ddp_pretrain_script.py"


@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_emp_pretrain_on_two_ranks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(SCRIPT), str(tmp_path / "run"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
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
    for name, column in reference.state_dict()["table"].items():
        torch.testing.assert_close(final["pruner"]["table"][name], column, rtol=0, atol=0, equal_nan=True)
    assert final["pruner"]["table"]["count"].sum() == 300
