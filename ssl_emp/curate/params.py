"""What the ``curate`` section may say: its methods, ``keep`` modes and value ranges, in one place."""

from __future__ import annotations

from ssl_emp.errors import ConfigError
from ssl_emp.settings import CurateConfig, is_int, is_number

#: curate.method -> the curate.keep values it takes (the first is its default).
METHODS: dict[str, tuple[str, ...]] = {
    "semdedup": ("hard", "easy", "random"),  # which member of a duplicate group survives
    "prototypes": ("hard", "easy"),  # the images farthest from / nearest to their centroid are kept
}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_curate(c: CurateConfig) -> None:
    """Reject a ``curate`` value that cannot work, naming the key and the value."""
    _require(c.method in METHODS, f"unknown curate.method '{c.method}' (choose from {', '.join(METHODS)})")
    _require(c.keep in METHODS[c.method],
             f"curate.keep must be one of {', '.join(METHODS[c.method])} for {c.method}, got {c.keep!r}")
    _require(c.eps is None or (is_number(c.eps) and 0 < c.eps < 1), f"curate.eps must be null or in (0, 1), got {c.eps!r}")
    _require(isinstance(c.eps_range, list) and len(c.eps_range) > 0
             and all(is_number(e) and 0 < e < 1 for e in c.eps_range) and len(set(c.eps_range)) == len(c.eps_range),
             f"curate.eps_range must be a non-empty list of distinct numbers in (0, 1), got {c.eps_range!r}")
    _require(is_int(c.k) and c.k >= 1, f"curate.k must be an integer >= 1, got {c.k!r}")
    _require(is_int(c.iterations) and c.iterations >= 1, f"curate.iterations must be an integer >= 1, got {c.iterations!r}")
    _require(is_int(c.seed) and 0 <= c.seed < 2**31, f"curate.seed must be an integer in [0, 2^31), got {c.seed!r}")
    _require(is_number(c.rate) and 0 <= c.rate < 1, f"curate.rate must be in [0, 1), got {c.rate!r}")
    _require(is_int(c.quota) and c.quota >= 0, f"curate.quota must be an integer >= 0, got {c.quota!r}")
    _require(is_int(c.block_size) and c.block_size >= 1, f"curate.block_size must be an integer >= 1, got {c.block_size!r}")
