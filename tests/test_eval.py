"""Tests for ssl_emp.eval: feature extraction, weighted kNN and the linear probe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_emp.errors import ConfigError
from ssl_emp.eval import extract_features, knn_accuracy, knn_predict, linear_probe


@pytest.fixture(autouse=True)
def _single_thread():
    """Run these tiny problems on one thread: on shared cores, OpenMP barriers waiting for a
    descheduled second thread made them ~50x slower (seen: 0.6 ms vs 60 ms per L-BFGS step)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _knn_data(seed: int = 0, n: int = 600, m: int = 150, d: int = 32, c: int = 7):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g)
    train_y = torch.randint(0, c, (n,), generator=g)
    test_y = torch.randint(0, c, (m,), generator=g)
    # Unequal row norms, so a missing L2 normalisation changes the neighbours.
    train_x = (centres[train_y] + 1.5 * torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g).add(0.1) * 5
    test_x = (centres[test_y] + 1.5 * torch.randn(m, d, generator=g)) * torch.rand(m, 1, generator=g).add(0.1) * 5
    return train_x, train_y, test_x, test_y, c


def _brute_force_scores(train_x, train_y, test_x, k, temperature, num_classes) -> Tensor:
    """Reference InstDisc scores: full similarity matrix, topk, scatter (float64)."""
    x = F.normalize(train_x.double(), dim=1)
    q = F.normalize(test_x.double(), dim=1)
    sims, idx = (q @ x.T).topk(k, dim=1)
    scores = torch.zeros(q.shape[0], num_classes, dtype=torch.float64)
    return scores.scatter_add_(1, train_y[idx], (sims / temperature).exp())


# --------------------------------------------------------------------------------------- kNN


@pytest.mark.parametrize(("k", "temperature"), [(20, 0.1), (1, 0.07), (200, 0.5)])
def test_knn_matches_brute_force(k: int, temperature: float) -> None:
    train_x, train_y, test_x, test_y, c = _knn_data()
    ref = _brute_force_scores(train_x, train_y, test_x, k, temperature, c)
    got = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, use_gpu=False)
    assert got.shape == (test_x.shape[0], c)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=0.0)
    assert torch.equal(got.argmax(dim=1), ref.argmax(dim=1))

    acc = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature, use_gpu=False)
    ref_top1 = (ref.argmax(dim=1) == test_y).double().mean().item()
    ref_top5 = (ref.topk(5, dim=1).indices == test_y[:, None]).any(dim=1).double().mean().item()
    assert acc["top1"] == pytest.approx(ref_top1)
    assert acc["top5"] == pytest.approx(ref_top5)
    assert acc["k"] == k and acc["temperature"] == temperature
    assert 0.0 <= acc["top1"] <= acc["top5"] <= 1.0
    # The data set has structure, so the classifier must beat chance by a wide margin.
    assert acc["top1"] > 2.0 / c


def test_knn_chunk_size_does_not_change_results() -> None:
    train_x, train_y, test_x, test_y, _ = _knn_data(seed=1)
    runs = [knn_predict(train_x, train_y, test_x, k=15, chunk_size=cs, use_gpu=False) for cs in (1, 7, 64, 10_000)]
    for other in runs[1:]:
        assert torch.equal(runs[0], other)
    accs = [
        knn_accuracy(train_x, train_y, test_x, test_y, k=15, chunk_size=cs, use_gpu=False) for cs in (1, 13, 10_000)
    ]
    assert accs[0] == accs[1] == accs[2]


def test_knn_top5_with_fewer_than_five_classes_and_num_classes() -> None:
    train_x, train_y, test_x, test_y, _ = _knn_data(seed=2, c=3)
    acc = knn_accuracy(train_x, train_y, test_x, test_y, k=10, use_gpu=False)
    assert acc["top5"] == 1.0  # top-min(5, C) with C = 3 covers every class
    scores = knn_predict(train_x, train_y, test_x, k=10, num_classes=5, use_gpu=False)
    assert scores.shape == (test_x.shape[0], 5)
    assert torch.all(scores[:, 3:] == 0)


def test_knn_use_gpu_true_without_gpu_faiss() -> None:
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss has GPU support here")
    train_x, train_y, test_x, _, _ = _knn_data()
    with pytest.raises(ConfigError, match="GPU"):
        knn_predict(train_x, train_y, test_x, k=5, use_gpu=True)


_X = torch.randn(20, 4)
_Y = torch.arange(20) % 3
_Q = torch.randn(6, 4)
_QY = torch.arange(6) % 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 21}, "exceeds"),
        ({"k": 0}, "k must be"),
        ({"k": -3}, "k must be"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 1e-5}, "temperature"),
        ({"train_x": torch.empty(0, 4), "train_y": torch.empty(0, dtype=torch.long)}, "empty"),
        ({"test_x": torch.empty(0, 4), "test_y": torch.empty(0, dtype=torch.long)}, "empty"),
        ({"train_y": _Y[:19]}, "train_y has 19"),
        ({"test_y": _QY[:5]}, "test_y has 5"),
        ({"train_y": None}, "train_y is None"),
        ({"test_y": None}, "test_y is None"),
        ({"test_x": torch.randn(6, 5)}, "dimension"),
        ({"train_x": torch.randn(20)}, "2-D"),
        ({"train_y": _Y.float()}, "integer"),
        ({"train_y": _Y - 1}, "negative"),
        ({"num_classes": 2}, "num_classes"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"train_x": torch.full((20, 4), math.nan)}, "NaN"),
    ],
)
def test_knn_config_errors(kwargs: dict, match: str) -> None:
    args = {"train_x": _X, "train_y": _Y, "test_x": _Q, "test_y": _QY, "k": 5, "use_gpu": False} | kwargs
    with pytest.raises(ConfigError, match=match):
        knn_accuracy(**args)
    if "test_y" not in kwargs:
        args.pop("test_y")
        with pytest.raises(ConfigError, match=match):
            knn_predict(**args)


# ------------------------------------------------------------------------------ linear probe


def _separable(seed: int, n: int, d: int = 16, c: int = 4) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 10.0 * torch.eye(c, d)
    y = torch.arange(n) % c
    return centres[y] + torch.randn(n, d, generator=g), y


def test_linear_probe_separable_features() -> None:
    train_x, train_y = _separable(0, 800)
    test_x, test_y = _separable(1, 200)
    out = linear_probe(train_x, train_y, test_x, test_y)
    assert out["top1"] >= 0.99
    assert out["top5"] == 1.0
    assert out["train_top1"] >= 0.99


@pytest.mark.slow
def test_linear_probe_matches_sklearn_on_digits() -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    sk = LogisticRegression(max_iter=5000).fit(x_tr, y_tr).score(x_te, y_te)
    out = linear_probe(
        torch.tensor(x_tr, dtype=torch.float32),
        torch.tensor(y_tr),
        torch.tensor(x_te, dtype=torch.float32),
        torch.tensor(y_te),
    )
    assert abs(out["top1"] - sk) <= 0.02, (out["top1"], sk)


def test_linear_probe_protocol_determinism_and_rng() -> None:
    train_x, train_y = _separable(2, 300, c=3)
    train_x = train_x + 6.0 * torch.randn(train_x.shape, generator=torch.Generator().manual_seed(5))
    test_x, test_y = _separable(3, 90, c=3)
    grid = (0.0, 1e-3, 1e-1)
    rng_before = torch.get_rng_state()
    first = linear_probe(train_x, train_y, test_x, test_y, weight_decays=grid, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG must not be touched"
    second = linear_probe(train_x, train_y, test_x, test_y, weight_decays=grid, seed=3)
    assert first == second

    # Model selection must not look at the test set: scrambling its labels changes nothing but
    # the test accuracy.
    scrambled = linear_probe(train_x, train_y, test_x, test_y.roll(1), weight_decays=grid, seed=3)
    assert scrambled["val_top1"] == first["val_top1"]
    assert scrambled["weight_decay"] == first["weight_decay"]

    proto = first["protocol"]
    assert [v["weight_decay"] for v in first["val_top1"]] == list(grid)
    assert first["weight_decay"] == proto["chosen_weight_decay"] in grid
    best = max(v["val_top1"] for v in first["val_top1"])
    assert first["val_top1"][list(grid).index(first["weight_decay"])]["val_top1"] == best
    for key in ("optimizer", "lr", "max_iter", "batch_size", "weight_decays", "val_fraction", "seed"):
        assert key in proto
    assert proto["n_val"] == 30 and proto["n_fit"] == 270 and proto["seed"] == 3
    assert set(first) == {"top1", "top5", "train_top1", "weight_decay", "val_top1", "protocol"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"weight_decays": ()}, "empty"),
        ({"weight_decays": (1e-4, -1e-3)}, "weight_decays"),
        ({"max_iter": 0}, "max_iter"),
        ({"lr": 0.0}, "lr"),
        ({"train_y": None}, "train_y is None"),
        ({"test_y": None}, "test_y is None"),
        ({"train_y": _Y[:19]}, "train_y has 19"),
        ({"test_x": torch.randn(6, 5)}, "dimension"),
        ({"train_x": torch.empty(0, 4), "train_y": torch.empty(0, dtype=torch.long)}, "empty"),
        ({"num_classes": 2}, "num_classes"),
        # One sample per class leaves nothing to validate on.
        ({"train_x": torch.randn(3, 4), "train_y": torch.arange(3)}, "leaves none of these 3"),
    ],
)
def test_linear_probe_config_errors(kwargs: dict, match: str) -> None:
    args = {"train_x": _X, "train_y": _Y, "test_x": _Q, "test_y": _QY, "val_fraction": 0.2} | kwargs
    with pytest.raises(ConfigError, match=match):
        linear_probe(**args)


# ---------------------------------------------------------------------------- feature extraction


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.5)  # makes train-mode outputs differ from eval-mode ones

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(self.conv(x)))  # [B, 4, 2, 2]: flattened to 16 by the API


def _images(n: int = 10) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randperm(n, generator=g) % 4


def test_extract_features_labelled_loader() -> None:
    model = _Tiny()
    model.train()
    model.pool.eval()  # mixed per-module modes must come back exactly as they were
    images, labels = _images()
    loader = DataLoader(TensorDataset(images, labels), batch_size=3, shuffle=False)
    feats, got_labels = extract_features(model, loader)
    assert feats.shape == (10, 16) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert not feats.requires_grad
    assert got_labels is not None and got_labels.dtype == torch.int64
    assert torch.equal(got_labels, labels)
    assert model.training and model.conv.training and model.drop.training and not model.pool.training
    model.eval()
    with torch.no_grad():
        expected = model(images).flatten(1)
    torch.testing.assert_close(feats, expected)  # fails if dropout was active, i.e. not eval mode


def test_extract_features_bare_tensors_transform_and_tuples() -> None:
    model = _Tiny().eval()
    images, labels = _images()
    raw = (images.clamp(-3, 3) * 40 + 128).to(torch.uint8)

    def to_float(t: Tensor) -> Tensor:
        return t.float() / 255.0

    feats, got_labels = extract_features(model, DataLoader(raw, batch_size=4), device="cpu", transform=to_float)
    assert got_labels is None and feats.shape == (10, 16)
    with torch.no_grad():
        torch.testing.assert_close(feats, model(to_float(raw)).flatten(1))
    assert not model.training

    batches = [(images[:6], labels[:6].tolist()), [images[6:], labels[6:]]]
    feats2, labels2 = extract_features(model, batches)
    assert torch.equal(labels2, labels)
    torch.testing.assert_close(feats2, extract_features(model, [images])[0])


def test_extract_features_config_errors() -> None:
    model = _Tiny().train()
    images, labels = _images(4)
    with pytest.raises(ConfigError, match="no batches"):
        extract_features(model, [])
    with pytest.raises(ConfigError, match="mixes"):
        extract_features(model, [(images, labels), images])
    assert model.training and model.drop.training, "mode must be restored after an error"
    with pytest.raises(ConfigError, match="labels"):
        extract_features(model, [(images, labels[:3])])
    with pytest.raises(ConfigError, match="batches must be"):
        extract_features(model, [{"image": images}])
    with pytest.raises(ConfigError, match="must return a tensor"):
        extract_features(nn.Sequential(nn.Flatten(), _TupleOut()), [images])
    with pytest.raises(ConfigError, match="device"):
        extract_features(model, [images], device="not-a-device")


class _TupleOut(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x
