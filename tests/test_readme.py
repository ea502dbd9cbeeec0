"""The README's Python example runs as written and does what its comment says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_pruning_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "DynamicPruner(" in b)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    stats = namespace["pruner"].stats()
    assert stats["sample_visits"] == 4 * 300 and stats["optimizer_steps"] == 4 * 3
    assert abs(stats["achieved_rate"] - 0.7) < 1e-9
