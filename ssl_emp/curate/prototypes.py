"""Self-supervised prototypes (Sorscher et al. 2022, "Beyond neural scaling laws"): k-means on the
embeddings, an image's difficulty is its cosine distance to its nearest centroid, and the hardest
(or easiest) images are kept at the target rate; optionally every cluster keeps a minimum quota."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ssl_emp.curate.clusters import Clusters, normalised, spherical_kmeans
from ssl_emp.errors import ConfigError


def kept_count(n: int, rate: float) -> int:
    """Images kept of ``n`` at pruning rate ``rate``: ⌈(1 − rate) n⌉, the pruner's rounding (the rate
    read as the decimal typed, ``ssl_emp.pruning.seeding.exact_fraction``; not imported from there,
    since the pruning registry imports this package for its curation methods)."""
    return math.ceil((1 - Fraction(repr(float(rate)))) * n)


def prototype_ranking(clusters: Clusters, keep: str = "hard") -> np.ndarray:
    """All indices, the first kept first: by cosine distance to the nearest centroid, descending
    (``hard``) or ascending (``easy``); ties in data-set order."""
    distance = 1 - clusters.cos_to_centroid.astype(np.float64)
    return np.argsort(-distance if keep == "hard" else distance, kind="stable")


def select_prototypes(clusters: Clusters, rate: float, keep: str = "hard", quota: int = 0) -> np.ndarray:
    """bool [N]: the images kept, given their clusters.

    Ranked by cosine distance to the centroid (``hard``: descending, ``easy``: ascending; ties in
    data-set order); the ``quota`` highest-ranked of each cluster are kept first, the rest of the
    budget goes down the global ranking.
    """
    n = len(clusters.assign)
    budget = kept_count(n, rate)
    ranking = prototype_ranking(clusters, keep)
    kept = np.zeros(n, dtype=bool)
    if quota:
        # Position within its own cluster's ranking: sort the ranking by cluster (stable), count.
        by_cluster = ranking[np.argsort(clusters.assign[ranking], kind="stable")]
        sizes = np.bincount(clusters.assign, minlength=clusters.k)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        kept[by_cluster[np.arange(n) - starts < quota]] = True
        if kept.sum() > budget:
            raise ConfigError(f"curate.quota={quota} keeps {int(kept.sum())} images in {clusters.k} clusters, more than "
                              f"the {budget} that curate.rate={rate} keeps; lower the quota or the rate")
    rest = ranking[~kept[ranking]]
    kept[rest[:budget - int(kept.sum())]] = True
    return kept


def prototype_keep(emb: np.ndarray, rate: float, k: int, iterations: int = 100, seed: int = 0, keep: str = "hard",
                   quota: int = 0) -> np.ndarray:
    """The indices that self-supervised prototypes keep at pruning rate ``rate``, ascending."""
    clusters = spherical_kmeans(normalised(emb), k, iterations, seed)
    return np.flatnonzero(select_prototypes(clusters, rate, keep, quota))
