"""The ``faiss`` step: faiss-gpu kNN against the CPU index on the same features (identical top-1), and
curate's spherical k-means on both (the same mean cosine to the centroids, within 0.01)."""

from __future__ import annotations

import time
from typing import Any

import torch

from .context import Context


def _clustered(bank: int, queries: int, dim: int, classes: int) -> tuple[torch.Tensor, ...]:
    """Features around one centre per class, so that the vote does real work: train x, y, test x, y."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g)
    train_y, test_y = torch.randint(0, classes, (bank,), generator=g), torch.randint(0, classes, (queries,), generator=g)
    train_x = centres[train_y] + 15.0 * torch.randn(bank, dim, generator=g)
    test_x = centres[test_y] + 15.0 * torch.randn(queries, dim, generator=g)
    return train_x, train_y, test_x, test_y


def step_faiss(ctx: Context, bank: int = 50_000, queries: int = 10_000, dim: int = 512, classes: int = 10, k: int = 200) -> dict[str, Any]:
    import faiss

    from ssl_emp.eval.knn import knn_predict

    if not hasattr(faiss, "StandardGpuResources"):
        return {"status": "skipped", "note": "faiss-gpu not installed", "faiss": faiss.__version__}
    train_x, train_y, test_x, test_y = _clustered(bank, queries, dim, classes)
    out: dict[str, Any] = {"bank": bank, "queries": queries, "dim": dim, "k": k, "faiss": faiss.__version__,
                           "gpus_seen_by_faiss": faiss.get_num_gpus()}
    preds = {}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        t0 = time.perf_counter()
        scores = knn_predict(train_x, train_y, test_x, k=k, use_gpu=use_gpu)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        preds[name] = scores.argmax(dim=1)
        out[f"{name}_top1"] = float((preds[name] == test_y).double().mean())
    out["top1_disagreements"] = int((preds["cpu"] != preds["gpu"]).sum())
    out["identical_top1"] = out["top1_disagreements"] == 0
    out["kmeans"] = _kmeans(train_x.numpy())
    out["status"] = "ok" if out["identical_top1"] and out["kmeans"]["same_quality"] else "failed"
    return out


def _kmeans(x: Any, k: int = 100, iterations: int = 20) -> dict[str, Any]:
    """``ssl-emp curate``'s clustering on the CPU and the GPU: time and mean cosine to the centroid
    (the clusterings differ in detail: the two sum in different orders)."""
    from ssl_emp.curate.clusters import spherical_kmeans

    out: dict[str, Any] = {"n": int(x.shape[0]), "k": k, "iterations": iterations}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        t0 = time.perf_counter()
        clusters = spherical_kmeans(x, k, iterations, seed=0, use_gpu=use_gpu)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_mean_cos"] = round(float(clusters.cos_to_centroid.mean()), 4)
    out["same_quality"] = abs(out["cpu_mean_cos"] - out["gpu_mean_cos"]) <= 0.01
    return out
