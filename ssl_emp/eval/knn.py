"""Weighted k-nearest-neighbour classification on frozen features.

The protocol is the non-parametric classifier of InstDisc (Wu et al., "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination", CVPR 2018), the one used as a training
monitor by MoCo (He et al., CVPR 2020) and lightly: cosine similarity, the k most similar
training features vote for their class with weight ``exp(sim / T)``.
"""

from __future__ import annotations

import math
import sys
import weakref
from collections.abc import Iterator

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.eval.features import check_features, check_labels
from ssl_emp.settings import EvalConfig

# faiss' flat CPU search tiles its GEMM as 4096 queries x 1024 bank rows, so chunks only bound
# the [chunk, k] result arrays and the [chunk, C] vote matrix (4096 x 1000 float64 = 33 MB).
# benchmarks/bench_knn.py (50k bank x 10k queries, D=512, k=200, 2-core EPYC): chunks of
# 512 / 1024 / 2048 / 4096 / 10000 took 2.31 / 1.61 / 1.13 / 0.96 / 0.93x the bare matmul;
# below one faiss tile its per-call GEMMs and heap passes get less efficient.
DEFAULT_CHUNK_SIZE = 4096

# k and T are defined once, in EvalConfig (the run config's eval section).
_DEFAULTS = EvalConfig()

# Largest k that faiss' GPU k-selection supports; beyond it the CPU index is used.
_GPU_MAX_K = 2048

# exp(sim / T) with sim <= 1 overflows float64 once 1 / T exceeds ~709.
_MIN_TEMPERATURE = 1.0 / 700.0


# Banks already told that k was lowered: a run's monitor scores the same bank every few epochs,
# and one line per run says it.
_LOWERED_FOR: weakref.WeakSet = weakref.WeakSet()


def bank_limited_k(k: int, bank_size: int, bank: object | None = None) -> int:
    """``k``, lowered to ``bank_size`` when the bank is smaller, which one line on stderr says.

    The monitor of ``ssl-emp pretrain`` and ``ssl-emp eval knn`` both go through here, so the same
    checkpoint scores the same in both. With ``bank`` (the bank's data set) the line is printed
    once per bank. :func:`knn_accuracy` itself still refuses a ``k`` above the bank size.
    """
    if isinstance(k, bool) or not isinstance(k, int) or bank_size < 1 or k <= bank_size:
        return k  # a k that is no count, or an empty bank, is knn_accuracy's to refuse
    try:
        said = bank is not None and bank in _LOWERED_FOR
        if bank is not None:
            _LOWERED_FOR.add(bank)
    except TypeError:  # a bank that cannot be weakly referenced or hashed: said every time
        said = False
    if not said:
        print(f"ssl-emp: kNN k={k} is larger than the {bank_size}-image bank; using k={bank_size}", file=sys.stderr)
    return bank_size


def _faiss_has_gpu() -> bool:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


def faiss_gpu(use_gpu: bool | None) -> bool:
    """Whether faiss should run on the GPU: when this build has GPU support and sees a GPU (the
    ``faiss-gpu`` extra on a GPU machine) unless ``use_gpu`` is False; True without one is refused."""
    if use_gpu and not _faiss_has_gpu():
        raise ConfigError("use_gpu=True but this faiss build has no GPU support (or sees no GPU)")
    return use_gpu is not False and _faiss_has_gpu()


def _check_knn_args(
    train_x: object,
    train_y: object,
    k: int,
    temperature: float,
    chunk_size: int,
    use_gpu: bool | None,
) -> tuple[Tensor, Tensor]:
    x = check_features(train_x, "train_x")
    y = check_labels(train_y, x.shape[0], "train_y")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > x.shape[0]:
        raise ConfigError(f"k={k} exceeds the size of the training bank ({x.shape[0]})")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    if temperature < _MIN_TEMPERATURE:
        raise ConfigError(f"temperature={temperature} is below {_MIN_TEMPERATURE:.2g}: exp(sim / T) overflows float64")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    faiss_gpu(use_gpu)  # refused here, before any feature is moved, when asked for and absent
    return x, y


def _check_queries(test_x: object, dim: int) -> Tensor:
    q = check_features(test_x, "test_x")
    if q.shape[1] != dim:
        raise ConfigError(f"test_x has dimension {q.shape[1]} but train_x has {dim}")
    return q


def _resolve_num_classes(num_classes: int | None, *labels: Tensor) -> int:
    needed = max(int(y.max()) for y in labels) + 1
    if num_classes is None:
        return needed
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < needed:
        raise ConfigError(f"num_classes={num_classes!r} but labels go up to {needed - 1}")
    return num_classes


def _to_faiss(x: Tensor) -> np.ndarray:
    # faiss' inner product on unit vectors is the cosine similarity of InstDisc.
    return np.ascontiguousarray(F.normalize(x, dim=1).cpu().numpy(), dtype=np.float32)


def _iter_scores(
    x: Tensor,
    y: Tensor,
    q: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk_size: int,
    use_gpu: bool | None,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, scores)`` per query chunk; scores are float64 ``[chunk, C]`` on the CPU."""
    bank = _to_faiss(x)
    index: faiss.Index = faiss.IndexFlatIP(bank.shape[1])
    gpu_resources = None
    if faiss_gpu(use_gpu) and k <= _GPU_MAX_K:
        # The resources object must outlive the index; it is held for the whole generator.
        gpu_resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(gpu_resources, 0, index)
    index.add(bank)
    del bank
    bank_labels = y.cpu()
    for start in range(0, q.shape[0], chunk_size):
        queries = _to_faiss(q[start : start + chunk_size])
        sims, nn_idx = index.search(queries, k)
        # float64 so that exp(sim / T) neither overflows nor loses the ranking for small T.
        weights = (torch.from_numpy(sims).double() / temperature).exp()
        nn_labels = bank_labels[torch.from_numpy(nn_idx)]
        scores = torch.zeros(queries.shape[0], num_classes, dtype=torch.float64)
        scores.scatter_add_(1, nn_labels, weights)
        yield start, scores
    del gpu_resources


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    k: int = _DEFAULTS.knn_k,
    temperature: float = _DEFAULTS.knn_temperature,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    use_gpu: bool | None = None,
) -> Tensor:
    """Weighted-kNN class scores ``[M, C]`` (float64, CPU) for ``test_x`` (InstDisc, Wu et al. 2018).

    Score of class c for a query = sum over its k most cosine-similar training features of
    class c of ``exp(sim / temperature)``. The training bank goes into a faiss ``IndexFlatIP``
    (on the GPU when faiss has GPU support and ``use_gpu`` is not False) and queries are searched
    ``chunk_size`` at a time, so no test x train similarity matrix is ever held.
    ``num_classes`` defaults to ``max(train_y) + 1``.
    """
    x, y = _check_knn_args(train_x, train_y, k, temperature, chunk_size, use_gpu)
    q = _check_queries(test_x, x.shape[1])
    c = _resolve_num_classes(num_classes, y)
    out = torch.empty(q.shape[0], c, dtype=torch.float64)
    for start, scores in _iter_scores(x, y, q, k, temperature, c, chunk_size, use_gpu):
        out[start : start + scores.shape[0]] = scores
    return out


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = _DEFAULTS.knn_k,
    temperature: float = _DEFAULTS.knn_temperature,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    use_gpu: bool | None = None,
) -> dict[str, float | int]:
    """Top-1 / top-5 accuracy (fractions) of the weighted kNN classifier of :func:`knn_predict`.

    Returns ``{"top1", "top5", "k", "temperature"}``; top-5 is top-min(5, C). Top-1 is the
    arg-max of the scores (first class on ties). ``num_classes`` defaults to
    ``max(train_y, test_y) + 1``. Scores are consumed chunk by chunk, never stored whole.
    """
    x, y = _check_knn_args(train_x, train_y, k, temperature, chunk_size, use_gpu)
    q = _check_queries(test_x, x.shape[1])
    qy = check_labels(test_y, q.shape[0], "test_y").cpu()
    c = _resolve_num_classes(num_classes, y, qy)
    top5 = min(5, c)
    hits1 = hits5 = 0
    for start, scores in _iter_scores(x, y, q, k, temperature, c, chunk_size, use_gpu):
        target = qy[start : start + scores.shape[0]]
        hit1 = scores.argmax(dim=1) == target
        best = scores.topk(top5, dim=1).indices
        # With more than five tied classes topk may drop the arg-max; a top-1 hit is a top-5 hit.
        hit5 = hit1 | (best == target[:, None]).any(dim=1)
        hits1 += int(hit1.sum())
        hits5 += int(hit5.sum())
    n = q.shape[0]
    return {"top1": hits1 / n, "top5": hits5 / n, "k": k, "temperature": float(temperature)}
