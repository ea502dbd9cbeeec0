"""What ``ssl-emp curate`` writes in its output folder: the kept indices, the removed ones and why,
the record of the run, the kept fraction against ε (table and plot), the most similar groups as a
picture and, with ``--against test``, the test images with a near-duplicate in the training split."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_emp.run.files import atomic_write_bytes, atomic_write_text

# The file names, defined once (the CLI's closing line and the tests ask for them here).
KEPT, REMOVED, RECORD = "kept.txt", "removed.csv", "curation.json"
CURVE_CSV, CURVE_PNG, DUPLICATES_PNG, CONTAMINATION = "eps_curve.csv", "eps_curve.png", "duplicates.png", "contamination.csv"
MARKER = ".ssl-emp-curate"  # written first: marks the folder as curate's, so a rerun may replace its files
# What one run writes besides the embeddings; a rerun removes those it does not write again (a
# prototypes run after a SemDeDup one leaves no stale ε curve beside its kept.txt).
OUTPUTS = (KEPT, REMOVED, RECORD, CURVE_CSV, CURVE_PNG, DUPLICATES_PNG, CONTAMINATION)


def remove_stale(out: Path, written: Sequence[str]) -> None:
    """Delete the files of an earlier run in ``out`` that this one did not write."""
    for name in OUTPUTS:
        if name not in written:
            (out / name).unlink(missing_ok=True)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``rows`` under ``header`` as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_curve(out: Path, eps_values: Sequence[float], fractions: Sequence[float], n: int, chosen: float,
                plateau: float) -> None:
    """The kept fraction against ε: ``eps_curve.csv`` and ``eps_curve.png`` (the chosen ε and the
    end of the curve's flattest stretch, ``plateau_eps``, marked)."""
    import matplotlib.pyplot as plt

    write_csv(out / CURVE_CSV, ["eps", "kept", "kept_fraction"],
              [(eps, round(f * n), f"{f:.6f}") for eps, f in zip(eps_values, fractions, strict=True)])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps_values, fractions, marker="o")
    ax.axvline(chosen, color="gray", ls="--", lw=1, label=f"curate.eps = {chosen:g}")
    ax.axvline(plateau, color="tab:orange", ls=":", lw=1.5, label=f"end of the flattest stretch: {plateau:g}")
    ax.set(xscale="log", xlabel="ε (removed: cosine > 1 − ε to an earlier member)", ylabel="kept fraction",
           ylim=(0, 1.02), title=f"SemDeDup on {n} images")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / CURVE_PNG)


def duplicate_groups(root: np.ndarray, removed: np.ndarray, cosine: np.ndarray, groups: int,
                     per_group: int) -> list[list[tuple[int, float]]]:
    """The ``groups`` groups (a kept image and the removed ones whose kept image it is) with the most
    similar members first, each as ``[(kept, 1.0), (removed, cosine), ...]`` by descending cosine."""
    members = np.flatnonzero(removed)
    members = members[np.lexsort((members, -cosine[members]))]  # most similar first, ties by index
    roots = root[members]
    found, first = np.unique(roots, return_index=True)
    chosen = found[np.argsort(first)][:groups]  # groups in the order of their most similar member
    return [[(int(g), 1.0), *((int(i), float(cosine[i])) for i in members[roots == g][:per_group - 1])]
            for g in chosen]


def write_duplicates(path: Path, groups: list[list[tuple[int, float]]], image: Any) -> None:
    """The groups as an image grid: one row each, the kept image first; ``image(i)`` is uint8 [3, H, W].
    One canvas and one ``imshow`` (a subplot per image takes seconds to draw)."""
    import matplotlib.pyplot as plt

    tiles = {i: np.asarray(image(i)).transpose(1, 2, 0) for group in groups for i, _ in group}
    h, w = next(iter(tiles.values())).shape[:2]
    cols, gap, top = max(len(g) for g in groups), max(1, w // 8), max(2, h // 3)  # top: room for a label
    cell_h, cell_w = h + top, w + gap
    canvas = np.full((len(groups) * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    for r, group in enumerate(groups):
        for c, (index, _) in enumerate(group):
            canvas[r * cell_h + top:(r + 1) * cell_h, c * cell_w:c * cell_w + w] = tiles[index]
    fig, ax = plt.subplots(figsize=(1.2 * cols, 1.5 * len(groups)))
    ax.imshow(canvas, interpolation="nearest")
    for r, group in enumerate(groups):
        for c, (index, cos) in enumerate(group):
            ax.text(c * cell_w, r * cell_h + top - 0.5, f"{index} kept" if c == 0 else f"{index} {cos:.3f}",
                    fontsize=6, color="green" if c == 0 else "black", va="bottom")
    ax.axis("off")
    ax.set_title("most similar groups: the kept image, then the removed ones (cosine to it)", fontsize=8, pad=10)
    _save(fig, path)
