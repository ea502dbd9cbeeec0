"""Two-process (torchrun, gloo, CPU) run of the pruner against a one-process run (docs/method.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_emp.pruning import DynamicPruner
from tests.helpers import assert_same_table, load_script, rank_records, torchrun

SCRIPT = Path(__file__).resolve().parent / "ddp_pruner_script.py"


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_ranks_match_each_other_and_a_single_process(tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    torchrun(SCRIPT, tmp_path, timeout=180)
    ranks = rank_records(tmp_path)

    # state_dict() refuses unflushed updates under torch.distributed instead of gathering.
    assert all("flush()" in ranks[r]["refused"] for r in range(2))
    # The epoch gather orders rows step-major, then rank, also with uneven step counts and sizes.
    rows = torch.cat([script.uneven_rows(r)[1] for r in range(2)])
    expected = sorted(rows.tolist(), key=lambda row: (row[1], row[0], row[2]))
    for r in range(2):
        assert ranks[r]["gathered"].tolist() == expected

    # Both ranks end with the same table and the same accounting.
    assert_same_table(ranks[1]["state"]["table"], ranks[0]["state"]["table"])
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
    assert_same_table(ranks[0]["state"]["table"], reference.table.state_dict())
    # Padding duplicates are not visits: both ranks count what the single process counts.
    assert ranks[0]["stats"]["sample_visits"] == reference.stats()["sample_visits"] == 5 * 61
    assert ranks[0]["stats"]["achieved_rate"] == reference.stats()["achieved_rate"]
