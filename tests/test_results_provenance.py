"""Every results folder under benchmarks/results/ names the commit and the command that made it."""

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FOLDERS = sorted(p for p in RESULTS.iterdir() if p.is_dir() and p.name != "gpu")


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_results_folder_names_commit_and_command(folder):
    notes = [folder / "SWEEP_COMMIT.txt", folder / "README.md"]
    text = " ".join(p.read_text() for p in notes if p.is_file())
    assert text, f"{folder.name}: no SWEEP_COMMIT.txt or README.md"
    assert re.search(r"\b[0-9a-f]{7,40}\b", text), f"{folder.name}: no commit named"
    assert re.search(r"ssl-emp (benchmark|pretrain|curate)|bash benchmarks/|python benchmarks/", text), \
        f"{folder.name}: no command"
