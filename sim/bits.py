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


def put_range(bits: np.ndarray, lo: int, hi: int) -> None:
    """Set pages ``lo`` .. ``hi - 1``: whole words at once, the two ends bit by bit."""
    if hi <= lo:
        return
    first, last = lo >> 6, (hi - 1) >> 6
    low_mask = ~np.uint64((1 << (lo & 63)) - 1)  # bits lo&63 .. 63 of the first word
    high_mask = np.uint64((1 << (((hi - 1) & 63) + 1)) - 1)  # bits 0 .. (hi-1)&63 of the last
    if first == last:
        bits[first] |= low_mask & high_mask
        return
    bits[first] |= low_mask
    bits[first + 1: last] = np.uint64(0xFFFFFFFFFFFFFFFF)
    bits[last] |= high_mask


@njit(inline="always")
def test(bits, p):
    return (bits[p >> 6] >> np.uint64(p & 63)) & _ONE != 0


@njit(inline="always")
def put(bits, p):
    bits[p >> 6] |= _ONE << np.uint64(p & 63)


@njit(inline="always")
def drop(bits, p):
    bits[p >> 6] &= ~(_ONE << np.uint64(p & 63))


_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), \
    np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(inline="always")
def popcount(w):
    """Set bits of one word, as an int64 (SWAR: no step per set bit, as a word of a pass's
    bitmap is mostly set)."""
    w = w - ((w >> np.uint64(1)) & _M1)
    w = (w & _M2) + ((w >> np.uint64(2)) & _M2)
    w = (w + (w >> np.uint64(4))) & _M4
    return np.int64((w * _H01) >> np.uint64(56))


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
        total += popcount(bits[i])
    if p & 63:
        total += popcount(bits[full_words] & ((_ONE << np.uint64(p & 63)) - _ONE))
    return total
