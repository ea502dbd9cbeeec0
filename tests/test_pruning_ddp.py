"""Two-process (torchrun, gloo, CPU) run of the pruner against a one-process run (docs/method.md)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_emp.pruning import DynamicPruner

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "ddp_pruner_script.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("ddp_pruner_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun() -> list[str]:
    local = Path(sys.executable).parent / "torchrun"
    if local.exists():
        return [str(local)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_ranks_match_each_other_and_a_single_process(tmp_path: Path) -> None:
    script = _load_script()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", str(SCRIPT), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # state_dict() refuses unflushed updates under torch.distributed instead of gathering.
    assert all("flush()" in ranks[r]["refused"] for r in range(2))
    # The epoch gather orders rows step-major, then rank, also with uneven step counts and sizes.
    rows = torch.cat([script.uneven_rows(r)[1] for r in range(2)])
    expected = sorted(rows.tolist(), key=lambda row: (row[1], row[0], row[2]))
    for r in range(2):
        assert ranks[r]["gathered"].tolist() == expected

    # Both ranks end with the same table and the same accounting.
    for name, column in ranks[0]["state"]["table"].items():
        torch.testing.assert_close(ranks[1]["state"]["table"][name], column, rtol=0, atol=0, equal_nan=True)
    assert ranks[0]["stats"]["sample_visits"] == ranks[1]["stats"]["sample_visits"]

    # The 1-process reference sees the same statistics for the same samples.
    reference = DynamicPruner(**script.CONFIG)
    for epoch in range(script.CONFIG["epochs"]):
        reference.set_epoch(epoch)
        kept = reference.kept_indices()
        for r in range(2):
            assert torch.equal(ranks[r]["kept"][epoch], kept)
        shards = [ranks[r]["served"][epoch] for r in range(2)]
        assert shards[0].numel() == shards[1].numel() == 31  # 61 padded to 62
        assert set(torch.cat(shards).tolist()) == set(kept.tolist())
        for chunk in reference.sampler().indices().split(16):
            reference.update(chunk, *script.synthetic_stats(chunk, epoch))
    for name, column in reference.table.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"]["table"][name], column, rtol=0, atol=0, equal_nan=True)
    # Padding duplicates are not visits: both ranks count what the single process counts.
    assert ranks[0]["stats"]["sample_visits"] == reference.stats()["sample_visits"] == 5 * 61
    assert ranks[0]["stats"]["achieved_rate"] == reference.stats()["achieved_rate"]
