"""Bit-packed page sets: one bit per guest page in ``uint64`` words (page ``p`` is bit ``p & 63``
of word ``p >> 6``), so per-page flags of a 4 TiB guest take 128 MiB, not 1 GiB each.

The compiled helpers are for the engine's kernels; :func:`pack` and :func:`unpack` convert from
and to ``bool`` arrays for everything else.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

_ONE = np.uint64(1)


def words(pages: int) -> int:
    return (int(pages) + 63) >> 6


def empty(pages: int) -> np.ndarray:
    return np.zeros(words(pages), np.uint64)


def full(pages: int) -> np.ndarray:
    """Every page's bit set (and none beyond the last page)."""
    out = np.full(words(pages), np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
    if pages & 63:
        out[-1] = np.uint64((1 << (pages & 63)) - 1)
    return out


def pack(flags: np.ndarray) -> np.ndarray:
    """bool[pages] -> words."""
    n = flags.shape[0]
    packed = np.packbits(np.asarray(flags, np.bool_), bitorder="little")
    out = np.zeros(words(n) * 8, np.uint8)
    out[: packed.shape[0]] = packed
    return out.view("<u8").astype(np.uint64, copy=False)


def unpack(bits: np.ndarray, pages: int) -> np.ndarray:
    """words -> bool[pages]."""
    raw = np.ascontiguousarray(bits, "<u8").view(np.uint8)
    return np.unpackbits(raw, bitorder="little")[:pages].astype(np.bool_)


@njit(inline="always")
def test(bits, p):
    return (bits[p >> 6] >> np.uint64(p & 63)) & _ONE != 0


@njit(inline="always")
def put(bits, p):
    bits[p >> 6] |= _ONE << np.uint64(p & 63)


@njit(inline="always")
def drop(bits, p):
    bits[p >> 6] &= ~(_ONE << np.uint64(p & 63))


@njit(inline="always")
def popcount(w):
    """Set bits of one word (a step a set bit)."""
    n = 0
    while w:
        w &= w - _ONE
        n += 1
    return n


@njit(inline="always")
def lowest_at_or_after(bits, p, n):
    """The first set bit at or after ``p`` within the word of ``p``, or -1 (below ``n``)."""
    w = bits[p >> 6] >> np.uint64(p & 63)
    if w == 0:
        return -1
    q = p + np.int64(trailing_zeros(w))
    return q if q < n else -1


@njit(cache=True)
def count_below(bits, p):
    """Set bits below page ``p``."""
    total = 0
    full_words = p >> 6
    for i in range(full_words):
        w = bits[i]
        while w:
            w &= w - _ONE
            total += 1
    if p & 63:
        w = bits[full_words] & ((_ONE << np.uint64(p & 63)) - _ONE)
        while w:
            w &= w - _ONE
            total += 1
    return total
