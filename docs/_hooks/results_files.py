"""MkDocs hook: serve benchmarks/results/ under results/ on the site.

docs/results.md includes benchmarks/README.md (pymdownx.snippets), whose links and images point at
``results/...`` relative to it. Adding those files here under the same relative path makes the
links resolve on the site as they do on GitHub, with one copy of the files and no symlink.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

SOURCE = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PREFIX = "results"


def on_files(files: Files, config) -> Files:
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file()):
        uri = f"{PREFIX}/{path.relative_to(SOURCE).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
