"""The bit-packed page sets' word helpers, against numpy's own counts."""

from __future__ import annotations

import numpy as np
from numba import njit

from sim import bits


@njit
def _popcounts(words):  # type: ignore[no-untyped-def]
    out = np.empty(words.shape[0], np.int64)
    for i in range(words.shape[0]):
        out[i] = bits.popcount(words[i])
    return out


def test_popcount_is_numpys_bit_count() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**64, size=1000, dtype=np.uint64)
    words[:3] = [0, 2**64 - 1, 2**63]
    assert (_popcounts(words) == np.bitwise_count(words)).all()


def test_count_below_counts_the_set_pages_before_p() -> None:
    flags = np.random.default_rng(2).random(5000) < 0.4
    packed = bits.pack(flags)
    for p in (0, 1, 63, 64, 65, 4999, 5000):
        assert bits.count_below(packed, p) == flags[:p].sum()
