"""The junk probe: data.inject_noise replaces a fixed fraction of the training images."""

import torch

from ssl_emp.config import DataConfig
from ssl_emp.data import load_data
from ssl_emp.data.junk import junk_indices


def test_inject_noise_marks_a_fixed_fraction_of_shuffled_copies_and_keeps_the_bank_clean():
    clean = load_data(DataConfig(image_size=16))
    probed = load_data(DataConfig(image_size=16, inject_noise=0.2))
    again = load_data(DataConfig(image_size=16, inject_noise=0.2))
    n = len(clean.train)
    junk = probed.junk
    assert junk is not None and junk.dtype == torch.bool and junk.shape == (n,)
    assert int(junk.sum()) == round(0.2 * n)
    assert torch.equal(junk, again.junk) and torch.equal(probed.train.images, again.train.images)
    # untouched images are identical, junk ones are pixel permutations of their originals
    assert torch.equal(probed.train.images[~junk], clean.train.images[~junk])
    before, after = clean.train.images[junk].flatten(2), probed.train.images[junk].flatten(2)
    assert torch.equal(before.sort(dim=2).values, after.sort(dim=2).values)
    assert (before != after).flatten(1).any(dim=1).float().mean() > 0.95
    # the kNN bank (labelled training images) is the clean set; labels are unchanged
    assert torch.equal(probed.bank.images, clean.train.images)
    assert torch.equal(probed.train.labels, clean.train.labels)
    assert clean.junk is None


def test_junk_indices_name_the_images_inject_junk_replaced():
    # benchmarks/junk_probe.py finds a finished run's junk images with junk_indices alone
    probed = load_data(DataConfig(image_size=16, inject_noise=0.2))
    n = len(probed.train)
    assert torch.equal(junk_indices(n, 0.2), probed.junk.nonzero().squeeze(1))
    assert not torch.equal(junk_indices(n, 0.2), junk_indices(n + 1, 0.2)[: round(0.2 * n)])
