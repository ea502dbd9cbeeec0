"""The ``pytest_cuda`` step: ``pytest -m cuda``, the tests that need a GPU; a skipped one counts as not run."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from .context import ROOT, Context, tail


def _decoded(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def step_pytest_cuda(ctx: Context) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, ctx.left() - 3))
    except subprocess.TimeoutExpired as exc:
        return {"status": "timeout", "output_tail": tail(_decoded(exc.stdout))}
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed|skipped|deselected)", line)), "")
    ran = re.search(r"(\d+) passed", summary)
    ok = proc.returncode == 0 and ran is not None and "skipped" not in summary  # a skipped CUDA test did not run
    return {"status": "ok" if ok else "failed", "rc": proc.returncode, "summary": summary.strip("= "),
            "output_tail": tail(proc.stdout + proc.stderr, 15)}
