"""Spherical k-means on L2-normalised embeddings (faiss), as SemDeDup's ``clustering/clustering.py``
runs it: ``faiss.Kmeans(d, k, niter, seed, spherical=True, gpu=use_gpu)``, then each point's nearest
centroid by inner product."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from ssl_emp.errors import ConfigError
from ssl_emp.eval.knn import faiss_gpu


@dataclass(frozen=True)
class Clusters:
    """Each point's cluster and its cosine similarity to that cluster's (unit-norm) centroid."""

    assign: np.ndarray  # int64 [N]
    cos_to_centroid: np.ndarray  # float32 [N]
    centroids: np.ndarray  # float32 [k, D], unit norm

    @property
    def k(self) -> int:
        return self.centroids.shape[0]


def normalised(emb: np.ndarray) -> np.ndarray:
    """``emb`` as contiguous float32 rows of unit L2 norm (a zero row stays zero)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def check_cluster_count(k: int, n: int, key: str = "curate.k") -> None:
    """k-means needs at least as many points as clusters; ``key`` names the setting in the error."""
    if k > n:
        raise ConfigError(f"{key}={k} clusters is more than the {n} images")


def spherical_kmeans(emb: np.ndarray, k: int, iterations: int, seed: int, use_gpu: bool | None = None) -> Clusters:
    """k-means on the unit sphere of the rows of ``emb`` (normalised here), seeded.

    faiss' defaults stay as the official code leaves them: it trains on at most 256 points per
    centroid (a seeded subsample when N > 256 k) and then assigns every point. On the GPU when faiss
    has GPU support and ``use_gpu`` is not False, as the kNN; a seed repeats its clustering on the
    same kind of device (GPU and CPU sum in different orders).
    """
    x = normalised(emb)
    n, d = x.shape
    check_cluster_count(k, n)
    # min_points_per_centroid only sets when faiss prints a warning (fewer than 39 points per
    # centroid); small sets are legitimate here, so that warning is silenced.
    kmeans = faiss.Kmeans(d, k, niter=iterations, seed=seed, spherical=True, min_points_per_centroid=1,
                          gpu=faiss_gpu(use_gpu))
    kmeans.train(x)
    sim, nearest = kmeans.index.search(x, 1)
    return Clusters(nearest[:, 0].astype(np.int64), sim[:, 0].astype(np.float32), kmeans.centroids.astype(np.float32))
