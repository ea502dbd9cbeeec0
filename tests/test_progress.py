"""Progress where the user waits (decoding a folder, extracting features): in a redirected log, a
line per stage with its count and time, and no carriage returns (a bar's redraws)."""

from __future__ import annotations

import re
import subprocess
import sys

from ssl_emp.cli import main
from tests.conftest import TINY
from tests.helpers import ROOT, child_env
from tests.test_photos import _photo_tree

STAGES = ("decoding the train split of", "decoding the test split of", "features of the kNN bank",
          "features of the test split")


def _args(tmp_path, out: str) -> list[str]:
    tiny = [arg for arg in TINY if arg != "--no-progress"]
    return ["pretrain", "--output-dir", str(tmp_path / out), *tiny, "--set", "data.dataset=imagefolder",
            "--data-dir", str(tmp_path / "tree"), "--set", f"data.cache_dir={tmp_path / ('cache-' + out)}",
            "--set", "optim.batch_size=8", "--epochs", "1"]


def test_a_redirected_log_has_a_line_per_stage_and_no_carriage_returns(tmp_path, capsys):
    _photo_tree(tmp_path / "tree")
    with open(tmp_path / "log.txt", "wb") as log:
        proc = subprocess.run([sys.executable, "-m", "ssl_emp", *_args(tmp_path, "run")], env=child_env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=log, timeout=300)
    text = (tmp_path / "log.txt").read_bytes().decode()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    for stage in STAGES:  # e.g. "ssl-emp: decoding the train split of /tmp/.../tree: 24 images in 0.0 s"
        assert re.search(rf"^ssl-emp: {stage}.*: \d+ images in \d+\.\d s$", text, re.MULTILINE), (stage, text)
    # --no-progress: none of it
    assert main([*_args(tmp_path, "quiet"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert not any(stage in err for stage in STAGES), err
