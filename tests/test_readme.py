"""The README's Python example runs as written and does what its comment says; the contributor's
page lists every module where it lies."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CONTRIBUTING = README.parent / "docs" / "contributing.md"


def test_pruning_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "DynamicPruner(" in b)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    stats = namespace["pruner"].stats()
    assert stats["sample_visits"] == 4 * 300 and stats["optimizer_steps"] == 4 * 3
    assert abs(stats["achieved_rate"] - 0.7) < 1e-9


def test_layout_section_names_files_that_exist():
    text = CONTRIBUTING.read_text()
    section = text[text.index("## The layout follows the data"):]
    block = re.search(r"```text\n(ssl_emp/.*?)```", section, flags=re.S).group(1)
    paths = [line.split()[0] for line in block.splitlines() if line.strip()]
    root = README.parent
    assert paths and all((root / p).exists() for p in paths), [p for p in paths if not (root / p).exists()]
    listed = {p.rstrip("/") for p in paths}
    modules = {str(p.relative_to(root)) for p in (root / "ssl_emp").rglob("*.py") if p.name != "__init__.py"}
    top = {m for m in modules if m.count("/") == 1 and m != "ssl_emp/__main__.py"}
    assert top <= listed, f"top-level modules missing from the layout in docs/contributing.md: {sorted(top - listed)}"
