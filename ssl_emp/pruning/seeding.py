"""Seeded randomness and exact decimals shared by the selection rules and SCAN's marking.

Apart from ``methods`` so that ``scan`` (which ``methods`` imports for its rule) can use them too.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import torch


def make_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded by hashing (seed, *keys): independent streams, no global RNG."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest, "little") >> 1)
    return gen


def exact_fraction(value: float) -> Fraction:
    """The decimal the user typed (0.7, not 0.69999…), so budgets round the intended way."""
    return Fraction(repr(float(value)))
