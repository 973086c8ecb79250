"""What a guest write does to a page's bytes, and the XBZRLE sizes that follow from it.

Each write changes ``write_size`` bytes of one page, laid out by ``write_pattern``:

* ``clustered``: one run of ``write_size`` bytes at a random offset (a struct or buffer update);
* ``scattered``: ``write_size`` single bytes at random offsets (pointer-chasing updates);
* ``counter``: ``write_size / word_size`` adjacent little-endian words, each incremented by one;
* ``full``: the whole page rewritten with random bytes (page-cache fills, memcpy);
* ``zero``: the whole page zeroed (freed memory being scrubbed).

A write's bytes come from a 64-bit seed drawn from the run's RNG, so a run is repeatable. The same
compiled function drives exact-content runs (real bytes) and the modelled mode's size table, so
the two modes agree by construction (DESIGN §3): the table holds what the *real* XBZRLE encoder
produced on synthetic pages written ``k`` times with the workload's own pattern.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ..choices import WRITE_PATTERNS
from ..spec import WorkloadSpec

if TYPE_CHECKING:
    from ..encoders import Encoder

#: pattern name -> the id apply_write branches on: its position in sim.choices.WRITE_PATTERNS
PATTERNS: dict[str, int] = {name: i for i, name in enumerate(WRITE_PATTERNS)}
assert PATTERNS == {"clustered": 0, "scattered": 1, "counter": 2, "full": 3, "zero": 4}, \
    "apply_write's branches number the patterns so"

# Modelled mode: sizes for k = 1..SIZE_TABLE_WRITES writes since the cached copy (more writes use
# the last row), SIZE_TABLE_SAMPLES synthetic pages each.
SIZE_TABLE_WRITES = 64
SIZE_TABLE_SAMPLES = 48


@njit(inline="always")
def _mix(x):  # splitmix64 step: a cheap, good 64-bit hash
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x, z ^ (z >> np.uint64(31))


@njit(cache=True)
def apply_write(page, pattern, write_size, word_size, seed):
    """Change ``page`` (uint8[page_size]) as one write of ``pattern`` with the given seed."""
    n = page.shape[0]
    state = np.uint64(seed)
    if pattern == 4:  # zero
        page[:] = 0
        return
    if pattern == 3:  # full
        for i in range(0, n, 8):
            state, r = _mix(state)
            for b in range(min(8, n - i)):
                page[i + b] = np.uint8((r >> np.uint64(8 * b)) & np.uint64(0xFF))
        return
    size = min(max(write_size, 1), n)
    state, r = _mix(state)
    if pattern == 0:  # clustered
        start = np.int64(r % np.uint64(n - size + 1))
        for i in range(size):
            if (i & 7) == 0:
                state, r = _mix(state)
            v = np.uint8((r >> np.uint64(8 * (i & 7))) & np.uint64(0xFF))
            page[start + i] = v if v != page[start + i] else v ^ np.uint8(0xFF)
    elif pattern == 1:  # scattered
        for _ in range(size):
            state, r = _mix(state)
            pos = np.int64(r % np.uint64(n))
            v = np.uint8((r >> np.uint64(56)) & np.uint64(0xFF))
            page[pos] = v if v != page[pos] else v ^ np.uint8(0xFF)
    else:  # counter: increment adjacent little-endian words
        w = min(max(word_size, 1), n)
        words = max(1, size // w)
        span = min(words * w, n - n % w)
        slots = (n - span) // w + 1
        start = np.int64(r % np.uint64(slots)) * w
        for k in range(span // w):
            base = start + k * w
            carry = 1
            for b in range(w):
                s = np.int64(page[base + b]) + carry
                page[base + b] = np.uint8(s & 0xFF)
                carry = s >> 8
                if carry == 0:
                    break


@njit(cache=True)
def apply_writes_rows(pages, counts, pattern, write_size, word_size, seeds):
    """Apply ``counts[i]`` writes to row ``i`` of ``pages``, drawing seeds from ``seeds[i]``."""
    for i in range(pages.shape[0]):
        state = np.uint64(seeds[i])
        for _ in range(counts[i]):
            state, s = _mix(state)
            apply_write(pages[i], pattern, write_size, word_size, s)


def synthetic_pages(rng: np.random.Generator, counts: np.ndarray, pattern: int, write_size: int,
                    word_size: int, page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pages of random bytes (``old``) and copies written ``counts[i]`` times with the pattern
    (``new``): what every modelled size table is measured on."""
    old = rng.integers(0, 256, size=(counts.size, page_size), dtype=np.uint8)
    new = old.copy()
    apply_writes_rows(new, counts.astype(np.int64), pattern, write_size, word_size,
                      rng.integers(0, 2**63, size=counts.size, dtype=np.int64).astype(np.uint64))
    return old, new


@lru_cache(maxsize=64)
def _size_table(pattern: int, write_size: int, word_size: int,
                page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, changed bytes): the encoder's record size and the changed bytes it copies (an
    nzrun ends at the first equal byte, so they are the bytes that differ), per sample."""
    from ..encoders.xbzrle import encoded_sizes

    rng = np.random.default_rng([pattern, write_size, word_size, page_size])
    k = np.repeat(np.arange(1, SIZE_TABLE_WRITES + 1), SIZE_TABLE_SAMPLES)
    old, new = synthetic_pages(rng, k, pattern, write_size, word_size, page_size)
    sizes = encoded_sizes(old, new).astype(np.int32)
    changed = np.where(sizes > 0, (old != new).sum(axis=1), 0).astype(np.int32)

    def table(values: np.ndarray) -> np.ndarray:  # row 0 (no write since): 0
        out = np.zeros((SIZE_TABLE_WRITES + 1, SIZE_TABLE_SAMPLES), np.int32)
        out[1:] = values.reshape(SIZE_TABLE_WRITES, SIZE_TABLE_SAMPLES)
        out.setflags(write=False)
        return out

    return table(sizes), table(changed)


def writer_spec(workload: WorkloadSpec) -> WorkloadSpec:
    """The spec whose write pattern a run's content follows: a phased workload uses its first
    phase's pattern for the whole run (a simplification, documented in the README)."""
    if workload.kind == "phased" and workload.phases:
        return workload.phases[0].workload
    return workload


def xbzrle_size_table(workload: WorkloadSpec, page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, changed)``: ``sizes[k, j]`` the XBZRLE size (−1 overflow) of sample ``j`` after
    ``k`` writes (row 0: 0), ``changed[k, j]`` the changed bytes the record carries.

    Built once per (pattern, write size, word size, page size) by running the real encoder.
    """
    spec = writer_spec(workload)
    return _size_table(PATTERNS[spec.write_pattern], spec.write_size, spec.word_size, page_size)


_PLUGIN_TABLES: dict[tuple[object, ...], np.ndarray] = {}


def _plugin_table(encoder: type[Encoder], pattern: int, write_size: int, word_size: int,
                  page_size: int) -> np.ndarray:
    key = (encoder, pattern, write_size, word_size, page_size)
    if key in _PLUGIN_TABLES:
        return _PLUGIN_TABLES[key]
    rng = np.random.default_rng([pattern, write_size, word_size, page_size, 9])
    k = np.repeat(np.arange(0, SIZE_TABLE_WRITES + 1), SIZE_TABLE_SAMPLES)
    old, new = synthetic_pages(rng, k, pattern, write_size, word_size, page_size)
    from collections.abc import Sequence

    from ..encoders import call_plugin, check_payload  # at call time: encoders imports this module
    from ..errors import PluginError

    enc = encoder()
    payloads = call_plugin(enc, "encode_batch", new, old if encoder.needs_previous else None)
    if not isinstance(payloads, Sequence) or len(payloads) != len(new):
        raise PluginError(f"plug-in encoder {enc.name!r}: encode_batch() must return a list of "
                          f"{len(new)} payloads (got {type(payloads).__name__})")
    sizes = np.array([-1 if pl is None else len(pl)
                      for pl in (check_payload(enc, pl) for pl in payloads)], np.int32)
    table = sizes.reshape(SIZE_TABLE_WRITES + 1, SIZE_TABLE_SAMPLES)
    table.setflags(write=False)
    _PLUGIN_TABLES[key] = table
    return table


def plugin_size_table(encoder: type[Encoder], workload: WorkloadSpec, page_size: int) -> np.ndarray:
    """``table[k, j]``: a plug-in's payload size (−1: "not for me", 0: unchanged) for synthetic
    page ``j`` after ``k`` writes of the workload's pattern, against its pre-write copy for a
    delta encoder (the same construction as :func:`xbzrle_size_table`, run through the plug-in's
    own ``encode_batch``). Built once per encoder class and pattern."""
    spec = writer_spec(workload)
    return _plugin_table(encoder, PATTERNS[spec.write_pattern], spec.write_size,
                         spec.word_size, page_size)
