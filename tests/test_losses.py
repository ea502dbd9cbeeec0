import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ssl_emp.errors import ConfigError
from ssl_emp.losses import cross_entropy_per_sample, info_nce_per_sample, moco_info_nce_per_sample


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("batch", [2, 7, 32])
def test_per_sample_ntxent_mean_equals_lightly(temperature, batch):
    g = torch.Generator().manual_seed(batch)
    z1, z2 = torch.randn(batch, 16, generator=g), torch.randn(batch, 16, generator=g)
    loss, align = info_nce_per_sample(z1, z2, temperature)
    assert loss.shape == align.shape == (batch,)
    torch.testing.assert_close(loss.mean(), NTXentLoss(temperature=temperature)(z1, z2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(align, F.cosine_similarity(z1, z2))


def test_per_sample_ntxent_matches_explicit_formula():
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    loss, _ = info_nce_per_sample(z1, z2, 0.5)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / 0.5

    def ell(a: int, b: int) -> torch.Tensor:  # -log softmax of the positive b among all but a
        others = torch.cat([sim[a, :a], sim[a, a + 1:]])
        return torch.logsumexp(others, 0) - sim[a, b]

    for i in range(5):
        torch.testing.assert_close(loss[i], 0.5 * (ell(i, i + 5) + ell(i + 5, i)))


def test_per_sample_loss_has_gradients_and_align_does_not():
    z1 = torch.randn(4, 8, requires_grad=True)
    loss, align = info_nce_per_sample(z1, torch.randn(4, 8), 0.5)
    loss.sum().backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert not align.requires_grad


def test_moco_per_sample_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(6, 8, generator=g) for _ in range(4))
    queue = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    loss, align = moco_info_nce_per_sample(q1, q2, k1, k2, queue, 0.2)

    def ce(q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long), reduction="none")

    torch.testing.assert_close(loss, 0.5 * (ce(q1, k2) + ce(q2, k1)))
    expected_align = 0.5 * (F.cosine_similarity(q1, k2) + F.cosine_similarity(q2, k1))
    torch.testing.assert_close(align, expected_align)


@pytest.mark.parametrize("temperature", [0.0, -0.5])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        info_nce_per_sample(torch.randn(2, 3), torch.randn(2, 3), temperature)


def test_cross_entropy_per_sample_matches_torch_and_direct_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=g, dtype=torch.float64).float() * 3
    labels = torch.randint(0, 10, (32,), generator=g)
    loss, entropy = cross_entropy_per_sample(logits, labels)
    assert loss.shape == entropy.shape == (32,)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    p = torch.softmax(logits.double(), dim=1)
    direct = -(p * p.log()).sum(dim=1)
    torch.testing.assert_close(entropy.double(), direct, atol=1e-5, rtol=1e-5)
    assert (entropy >= 0).all() and (entropy <= math.log(10) + 1e-5).all()
    # bf16 logits (autocast output) still give float32 signals
    loss16, entropy16 = cross_entropy_per_sample(logits.bfloat16(), labels)
    assert loss16.dtype == entropy16.dtype == torch.float32
    # a uniform prediction has entropy log C
    _, flat = cross_entropy_per_sample(torch.zeros(2, 10), torch.tensor([0, 1]))
    torch.testing.assert_close(flat, torch.full((2,), math.log(10)))
