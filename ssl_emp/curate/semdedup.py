"""SemDeDup (Abbas et al. 2023), after the official code (facebookresearch/SemDeDup:
``clustering/clustering.py``, ``clustering/sort_clusters.py``, ``semdedup.py``).

Spherical k-means; each cluster sorted by cosine distance to its centroid (``keep: hard``, the
official default: farthest first; ``easy``: the reverse; ``random``: shuffled); within a cluster,
item j is removed when its largest cosine similarity to an *earlier* member exceeds 1 − ε. The
first member of every group in sort order survives, and a one-item cluster is always kept.

Where this differs from the official code (each also said where it happens):
- similarities are computed in tiles of ``block_size`` x ``block_size`` instead of one
  cluster-sized matrix, so memory stays bounded for a large cluster (the result is the same);
- the similarity of a first member to "earlier" ones is −inf, not the 0 that the official
  upper-triangular matrix leaves; with 0 < ε < 1 the threshold 1 − ε is positive, so no decision changes;
- ``random`` shuffles each cluster with numpy's seeded generator instead of Python's ``random``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_emp.curate.clusters import Clusters, normalised, spherical_kmeans


@dataclass(frozen=True)
class Duplicates:
    """Per item: its largest cosine to an earlier member of its cluster (−inf for none) and that member."""

    clusters: Clusters
    max_sim: np.ndarray  # float32 [N]
    match: np.ndarray  # int64 [N], -1 where there is no earlier member

    def removed(self, eps: float) -> np.ndarray:
        """bool [N]: the duplicates at ``eps`` (the official ``M > 1 - eps``, in float32 as there)."""
        return self.max_sim > np.float32(1 - eps)

    def kept_fraction(self, eps_values: list[float]) -> list[float]:
        """The share of the images kept at each ε: one pass of the similarities serves every ε."""
        return [float(1 - self.removed(eps).mean()) for eps in eps_values]


def sort_order(clusters: Clusters, keep: str, seed: int = 0) -> np.ndarray:
    """All indices, cluster by cluster (ascending id), each cluster in SemDeDup's order.

    ``hard``: descending cosine distance to the centroid; the official code sorts with Python's
    stable ``sorted(reverse=True)``, so ties stay in data-set order. ``easy``: that list reversed.
    """
    n = len(clusters.assign)
    index = np.arange(n)
    if keep == "hard":
        return np.lexsort((index, clusters.cos_to_centroid, clusters.assign))
    if keep == "easy":
        return np.lexsort((-index, -clusters.cos_to_centroid, clusters.assign))
    if keep == "random":
        return np.lexsort((np.random.default_rng(seed).random(n), clusters.assign))
    raise ValueError(f"unknown keep mode {keep!r}")


def _earlier_max(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """For the rows of ``x`` (one cluster in sort order): the largest dot product with an earlier
    row and its position, in ``block`` x ``block`` tiles of the strictly lower triangle."""
    m = len(x)
    best = np.full(m, -np.inf, dtype=np.float32)
    where = np.full(m, -1, dtype=np.int64)
    for r0 in range(0, m, block):
        r1 = min(r0 + block, m)
        rows = np.arange(r0, r1)[:, None]
        for c0 in range(0, r1 - 1, block):  # columns before the block's last row
            c1 = min(c0 + block, r1 - 1)
            sim = x[r0:r1] @ x[c0:c1].T
            sim[np.arange(c0, c1)[None, :] >= rows] = -np.inf  # only earlier members
            arg = sim.argmax(axis=1)
            top = sim[np.arange(r1 - r0), arg]
            better = top > best[r0:r1]  # strictly: the first maximum wins, as in one argmax over the row
            best[r0:r1][better] = top[better]
            where[r0:r1][better] = c0 + arg[better]
    return best, where


def find_duplicates(emb: np.ndarray, clusters: Clusters, keep: str = "hard", seed: int = 0,
                    block_size: int = 4096) -> Duplicates:
    """Each item's largest cosine to an earlier member of its cluster (``emb``: L2-normalised rows)."""
    order = sort_order(clusters, keep, seed)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(clusters.assign, minlength=clusters.k))])
    max_sim = np.full(len(order), -np.inf, dtype=np.float32)
    match = np.full(len(order), -1, dtype=np.int64)
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end - start < 2:  # empty or one-item cluster: nothing to compare, kept
            continue
        members = order[start:end]
        best, where = _earlier_max(emb[members], block_size)
        max_sim[members] = best
        match[members] = np.where(where >= 0, members[np.maximum(where, 0)], -1)
    return Duplicates(clusters, max_sim, match)


def semdedup(emb: np.ndarray, k: int, iterations: int = 100, seed: int = 0, keep: str = "hard",
             block_size: int = 4096) -> Duplicates:
    """Cluster ``emb`` (spherical k-means, seeded) and find every item's nearest earlier member."""
    x = normalised(emb)
    return find_duplicates(x, spherical_kmeans(x, k, iterations, seed), keep, seed, block_size)


def semdedup_keep(emb: np.ndarray, eps: float, k: int, iterations: int = 100, seed: int = 0, keep: str = "hard",
                  block_size: int = 4096) -> np.ndarray:
    """The indices SemDeDup keeps at ``eps``, ascending."""
    found = semdedup(emb, k, iterations, seed, keep, block_size)
    return np.flatnonzero(~found.removed(eps))


def keep_least_duplicated(dup: Duplicates, budget: int) -> tuple[np.ndarray, float]:
    """SemDeDup at a target size: the ``budget`` items with the smallest largest cosine to an earlier
    member of their cluster (ascending indices; ties at the boundary: the lower index is kept), and
    the ε this implies, 1 − the largest such cosine kept (capped at 1): the largest ε whose
    ``removed(ε)`` keeps the same set (barring ties at the boundary). Searching ε to reach a rate
    and sorting by that cosine are the same thing; the sort is exact to the image."""
    order = np.argsort(dup.max_sim, kind="stable")
    kept = np.sort(order[:budget])
    top = float(dup.max_sim[order[budget - 1]]) if budget > 0 else float("inf")
    return kept, min(1.0, 1.0 - top)


def plateau_eps(eps_values: list[float], fractions: list[float]) -> float:
    """The ε at the end of the flattest stretch of the kept-fraction curve (of equally flat stretches,
    the last): the ε a user reads off ``eps_curve.png`` without knowing the copies. Flatness is the
    share of the images still kept that a step in log ε removes (−Δ log kept / Δ log ε), so the tail
    where almost nothing is left is steep, not flat.

    Copies that stand apart from other images make a plateau — every ε on it removes the same copies —
    and this is its end: exact copies are removed and nothing else. Where no plateau exists (copies no
    closer than similar images, or no copies), the flattest stretch is the first and the ε the
    smallest but one: little is removed, and ``duplicates.png`` shows what larger ones would remove.
    (A "kneedle" knee was tried first and measured: it marked the steepest bend past the copies, and
    removed 94-97 % of the planted-copy sets; benchmarks/README.md.)
    """
    order = np.argsort(eps_values)
    eps = np.asarray(eps_values, dtype=np.float64)[order]
    kept = np.asarray(fractions, dtype=np.float64)[order]
    if len(eps) < 2:
        return float(eps[0])
    log_kept = np.log(np.maximum(kept, 1e-12))
    slope = (log_kept[:-1] - log_kept[1:]) / np.diff(np.log(eps))
    flattest = np.flatnonzero(slope <= slope.min() + 1e-12)[-1]
    return float(eps[flattest + 1])


def kept_root(dup: Duplicates, removed: np.ndarray) -> np.ndarray:
    """For each item, the kept item reached by following the nearest earlier member from a removed
    one (itself if kept). A removed item's nearest earlier member may itself be removed; its chain
    always ends, since the first member of a cluster is kept."""
    parent = np.where(removed, dup.match, np.arange(len(removed)))
    while True:  # pointer jumping: log2 of the longest chain passes
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt
