"""The curation methods as pruning methods: SemDeDup (Abbas et al., arXiv 2303.09540) and
self-supervised prototypes (Sorscher et al., arXiv 2206.14486) on per-sample embeddings.

Each reads the input ``embeddings`` (one L2-normalised row per training image; a run gets them
from ``pruning.embeddings``, the benchmark from its ``grid.embeddings`` sources) and, except
``semdedup+random``, selects once (static). The algorithms are ``ssl_emp.curate``'s, as
``ssl-emp curate`` runs them; k-means is seeded with the run's seed.

- ``semdedup``: at rate r keeps the ⌈(1 − r)N⌉ images least similar to an earlier member of their
  cluster (ε searched to reach the rate; the implied ε is reported as ``semdedup_eps``);
- ``semdedup-eps``: SemDeDup at a fixed ε (``semdedup_eps``): its own rate, reported as achieved;
- ``semdedup+random``: SemDeDup at a fixed ε, then a fresh uniform K among its kept images each
  epoch (all of them when fewer than K are kept);
- ``prototypes`` / ``prototypes-easy``: keep the K farthest from / nearest to their k-means centroid.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ssl_emp.curate.clusters import check_cluster_count, normalised, spherical_kmeans
from ssl_emp.curate.prototypes import prototype_ranking
from ssl_emp.curate.semdedup import Duplicates, find_duplicates, keep_least_duplicated
from ssl_emp.errors import ConfigError
from ssl_emp.pruning.spec import MethodSpec, Param, Selection, SelectionContext

#: The per-sample input the curation methods read; ``pruning.embeddings`` supplies it.
EMBEDDINGS = "embeddings"


def _whole(x: float) -> bool:
    return x >= 1 and float(x).is_integer()


CURATE_K = Param(10, _whole, "an integer >= 1", "k-means clusters (SemDeDup, prototypes)")
CURATE_ITERATIONS = Param(100, _whole, "an integer >= 1", "k-means iterations (SemDeDup, prototypes)")
SEMDEDUP_EPS = Param(0.05, lambda x: 0 < x < 1, "in (0, 1)",
                     "SemDeDup ε: removed when cosine > 1 − ε to an earlier member of its cluster")
_KMEANS = {"curate_k": CURATE_K, "curate_iterations": CURATE_ITERATIONS}

# The last SemDeDup pass, by (embeddings' bytes, k, iterations, seed): `semdedup+random` selects every
# epoch from the same pass, which k-means would otherwise repeat each epoch.
_LAST: dict[tuple[str, int, int, int], Duplicates] = {}


def _embeddings(ctx: SelectionContext) -> np.ndarray:
    emb = normalised(ctx.inputs[EMBEDDINGS].numpy())
    check_cluster_count(int(ctx.params["curate_k"]), len(emb), "pruning.params.curate_k")
    return emb


def _clusters(ctx: SelectionContext, emb: np.ndarray):
    # faiss takes a 31-bit seed; the run's seed may be larger
    return spherical_kmeans(emb, int(ctx.params["curate_k"]), int(ctx.params["curate_iterations"]), ctx.seed % 2**31)


def duplicates(ctx: SelectionContext) -> Duplicates:
    """SemDeDup's pass (``keep: hard``, the official order) over the context's embeddings, memoised."""
    emb = _embeddings(ctx)
    key = (hashlib.sha1(emb.tobytes()).hexdigest(), int(ctx.params["curate_k"]),
           int(ctx.params["curate_iterations"]), ctx.seed)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = find_duplicates(emb, _clusters(ctx, emb), "hard", ctx.seed % 2**31)
    return _LAST[key]


def select_semdedup(ctx: SelectionContext) -> Selection:
    kept, eps = keep_least_duplicated(duplicates(ctx), ctx.budget)
    return Selection(torch.from_numpy(kept), info={"semdedup_eps": eps})


def select_semdedup_eps(ctx: SelectionContext) -> Selection:
    eps = ctx.params["semdedup_eps"]
    return Selection(torch.from_numpy(np.flatnonzero(~duplicates(ctx).removed(eps))), info={"semdedup_eps": eps})


def select_semdedup_random(ctx: SelectionContext) -> Selection:
    pool = torch.from_numpy(np.flatnonzero(~duplicates(ctx).removed(ctx.params["semdedup_eps"])))
    drawn = torch.randperm(pool.numel(), generator=ctx.generator)[: ctx.budget]
    return Selection(torch.sort(pool[drawn]).values)


def _prototypes(keep: str):
    def select(ctx: SelectionContext) -> Selection:
        emb = _embeddings(ctx)
        ranking = prototype_ranking(_clusters(ctx, emb), keep)
        return Selection(torch.from_numpy(np.sort(ranking[: ctx.budget])))
    return select


SEMDEDUP = MethodSpec("semdedup", select_semdedup, "SemDeDup at the target rate: drop the images most similar to an "
                      "earlier member of their k-means cluster (Abbas et al., arXiv 2303.09540)",
                      params=_KMEANS, inputs=(EMBEDDINGS,), static=True)
SEMDEDUP_AT_EPS = MethodSpec("semdedup-eps", select_semdedup_eps, "SemDeDup at a fixed ε, its own rate "
                             "(Abbas et al., arXiv 2303.09540)", params={**_KMEANS, "semdedup_eps": SEMDEDUP_EPS},
                             inputs=(EMBEDDINGS,), static=True, own_rate=True)
SEMDEDUP_RANDOM = MethodSpec("semdedup+random", select_semdedup_random, "SemDeDup at a fixed ε, then a fresh uniform "
                             "random K among its kept images each epoch", params={**_KMEANS, "semdedup_eps": SEMDEDUP_EPS},
                             inputs=(EMBEDDINGS,))
PROTOTYPES = MethodSpec("prototypes", _prototypes("hard"), "self-supervised prototypes: keep the K farthest from "
                        "their k-means centroid (Sorscher et al., arXiv 2206.14486)",
                        params=_KMEANS, inputs=(EMBEDDINGS,), static=True)
PROTOTYPES_EASY = MethodSpec("prototypes-easy", _prototypes("easy"), "self-supervised prototypes: keep the K nearest "
                             "to their k-means centroid (Sorscher et al., arXiv 2206.14486)",
                             params=_KMEANS, inputs=(EMBEDDINGS,), static=True)


def check_embeddings_setting(method: str, embeddings: object, reads: tuple[str, ...]) -> None:
    """``pruning.embeddings`` is given exactly when ``method`` reads embeddings (``reads``: its inputs),
    and a method reads no input that no config key supplies."""
    other = [name for name in reads if name != EMBEDDINGS]
    if other:
        raise ConfigError(f"pruning.method '{method}' reads the per-sample input {other[0]!r}, which no config key "
                          "supplies; build DynamicPruner(inputs=...) yourself")
    if embeddings is not None and not (isinstance(embeddings, str) and embeddings):
        raise ConfigError(f"pruning.embeddings must be a path to a .npy file, got {embeddings!r}")
    if EMBEDDINGS in reads and embeddings is None:
        raise ConfigError(f"pruning.method '{method}' reads per-sample embeddings: set pruning.embeddings=PATH.npy "
                          "(ssl-emp curate writes embeddings_train.npy)")
    if EMBEDDINGS not in reads and embeddings is not None:
        raise ConfigError(f"pruning.embeddings is set, but pruning.method '{method}' reads no embeddings")
