"""Where a grid's curation methods get their embeddings: ``grid.embeddings`` names the sources and a
method that reads embeddings is listed once per source, ``semdedup@disjoint``.

A source is either ``{checkpoint: PATH}``, an encoder trained elsewhere (on images disjoint from the
training set: its training cost is named in the report, not added), or ``{prerun_epochs: E}``, a
short full-data run of the base config on the training set itself, per seed, whose visits are added
to the method's compute. Parsing and names only; computing them is ``ssl_emp.benchmark.embeddings``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_emp.curate.embed import embeddings_file
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import METHODS, method_spec
from ssl_emp.run.layout import BenchmarkLayout, RunLayout

SEP = "@"  # semdedup@disjoint: the method, then its source
KINDS = ("checkpoint", "prerun_epochs")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")  # no "_": run ids split at _r and _s


@dataclass(frozen=True)
class EmbeddingSource:
    """One entry of ``grid.embeddings``: an encoder's checkpoint, or a pre-run of ``prerun_epochs``."""

    name: str
    checkpoint: str | None = None
    prerun_epochs: int | None = None

    def folder(self, out: str | Path, seed: int) -> Path:
        """Its cache in the benchmark folder: one for a checkpoint, one per seed for a pre-run."""
        return BenchmarkLayout(out).embeddings / (self.name if self.checkpoint else f"{self.name}_s{seed}")

    def array(self, out: str | Path, seed: int) -> Path:
        """The embeddings file a run of ``seed`` reads (its ``pruning.embeddings``)."""
        return embeddings_file(self.folder(out, seed), "train")


def parse_sources(value: Any) -> dict[str, EmbeddingSource]:
    """``grid.embeddings``: name -> ``{checkpoint: PATH}`` or ``{prerun_epochs: E}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"benchmark key 'grid.embeddings' must map source names to a source, got {value!r}")
    out = {}
    for name, spec in value.items():
        key = f"grid.embeddings.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{key}: a source name is lower-case letters, digits and '-', got {name!r}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"{key} must be {{checkpoint: PATH}} or {{prerun_epochs: E}}, got {spec!r}")
        kind, given = next(iter(spec.items()))
        if kind == "checkpoint" and not (isinstance(given, str) and given):
            raise ConfigError(f"{key}.checkpoint must be a path, got {given!r}")
        if kind == "prerun_epochs" and not (isinstance(given, int) and not isinstance(given, bool) and given >= 1):
            raise ConfigError(f"{key}.prerun_epochs must be an integer >= 1, got {given!r}")
        out[name] = EmbeddingSource(name, **{kind: given})
    return out


def split_method(grid_method: str) -> tuple[str, str | None]:
    """``semdedup@disjoint`` -> ("semdedup", "disjoint"); ``emp`` -> ("emp", None)."""
    base, sep, source = grid_method.partition(SEP)
    return base, (source if sep else None)


def reads_embeddings(method: str) -> bool:
    """Whether a registered pruning method reads per-sample inputs (the curation methods' embeddings)."""
    return method in METHODS and bool(method_spec(method).inputs)


def check_method_source(grid_method: str, sources: dict[str, EmbeddingSource]) -> None:
    """A method that reads embeddings is spelled ``METHOD@SOURCE`` with a source of ``grid.embeddings``;
    any other method has no ``@``."""
    base, source = split_method(grid_method)
    if reads_embeddings(base) and source is None:
        named = ", ".join(f"{base}{SEP}{s}" for s in sources) or f"{base}{SEP}SOURCE with a grid.embeddings source"
        raise ConfigError(f"grid method '{base}' reads per-sample embeddings: list it as {named}")
    if source is not None and not reads_embeddings(base):
        raise ConfigError(f"grid method '{grid_method}': only methods that read embeddings take {SEP}SOURCE")
    if source is not None and source not in sources:
        raise ConfigError(f"grid method '{grid_method}': no source '{source}' in grid.embeddings "
                          f"({', '.join(sources) or 'none given'})")


def curation_fields(run_dir: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A result row's compute, curation included: the run's visits and wall time, plus, for a run that
    selected from embeddings (RUN/embeddings.json), the embedding pass (N forward passes, its seconds)
    and a pre-run's visits and seconds; the encoder of a checkpoint source is named
    (``encoder_visits``), not added. Also what the rule reported (SemDeDup's implied ε)."""
    visits, wall = summary["images_seen"], summary["wall_time_s"]
    path = RunLayout(run_dir).embeddings
    if not path.is_file():
        return {"embed_source": None, "compute_visits": visits, "compute_time_s": wall}
    rec = json.loads(path.read_text())
    prerun, prerun_s, embed_s = rec.get("prerun_visits") or 0, rec.get("prerun_time_s") or 0.0, rec.get("time_s") or 0.0
    return {"embed_source": rec.get("source"), "embed_forward_passes": rec["n"], "embed_time_s": embed_s,
            "prerun_visits": prerun, "prerun_time_s": prerun_s, "encoder_visits": rec.get("encoder_visits"),
            **rec.get("selection", {}),
            "compute_visits": visits + prerun + rec["n"], "compute_time_s": wall + prerun_s + embed_s}
