"""QEMU's XBZRLE page cache (REF §2.5, §2.6): direct mapping, age rule, stages, contents."""

from __future__ import annotations

import numpy as np
import pytest

from sim.encoders import xbzrle
from sim.encoders.cache import (
    CACHED_PAGE_LIFETIME,
    HIT,
    MISS_INSERTED,
    MISS_NOT_INSERTED,
    ZERO_INSERTED,
    ZERO_NOT_INSERTED,
    XbzrleCache,
)
from sim.units import PAGE_BYTES as PAGE


def run(cache: XbzrleCache, pages: list[int], gen: int, zero: list[int] | None = None,
        last: bool = False) -> list[int]:
    p = np.array(pages, dtype=np.int64)
    z = np.isin(p, zero or [])
    return cache.classify(p, z, gen, last_stage=last).tolist()


def test_geometry_and_validation() -> None:
    c = XbzrleCache(64 * 1024 * 1024)
    assert c.slots == 16384 and c.content is None
    assert (c.address == -1).all() and (c.age == 0).all() and c.num_items == 0
    assert XbzrleCache(PAGE).slots == 1
    for bad in (0, 3 * PAGE, PAGE // 2, 5000):
        with pytest.raises(ValueError, match="power of two"):
            XbzrleCache(bad)
    with pytest.raises(ValueError, match="page size"):
        XbzrleCache(8 * PAGE, page_size=3000)
    assert CACHED_PAGE_LIFETIME == 2


def test_direct_mapped_collisions_at_cache_size_distance() -> None:
    c = XbzrleCache(8 * PAGE)  # 8 slots
    assert c.slot_of(np.array([3, 11, 19, 4])).tolist() == [3, 3, 3, 4]
    assert run(c, [3, 4], gen=1) == [MISS_INSERTED, MISS_INSERTED]
    # 11 = 3 + 8 pages (one cache size further on) shares slot 3; 12 shares slot 4
    assert run(c, [11, 12, 5], gen=1) == [MISS_NOT_INSERTED, MISS_NOT_INSERTED, MISS_INSERTED]
    assert c.lookup(np.array([3, 11, 4, 12, 5])).tolist() == [True, False, True, False, True]
    # old enough: the colliding page replaces the entry
    assert run(c, [11], gen=3) == [MISS_INSERTED]
    assert run(c, [3], gen=3) == [MISS_NOT_INSERTED]
    assert c.address[3] == 11 and c.age[3] == 3


@pytest.mark.parametrize("how", ["insert", "hit", "zero"])
def test_age_rule(how: str) -> None:
    """An entry inserted/hit at generation g blocks a colliding insert at g, g+1, not g+2."""
    g = 5
    for later, blocked in ((0, True), (1, True), (2, False), (7, False)):
        c = XbzrleCache(4 * PAGE)
        if how == "insert":
            assert run(c, [1], gen=g) == [MISS_INSERTED]
        elif how == "hit":
            assert run(c, [1], gen=1) == [MISS_INSERTED]
            assert run(c, [1], gen=g) == [HIT]  # refreshes the age to g
        else:
            assert run(c, [1], gen=g, zero=[1]) == [ZERO_INSERTED]
        assert c.age[1] == g
        want = MISS_NOT_INSERTED if blocked else MISS_INSERTED
        assert run(c, [5], gen=g + later) == [want], (how, later)
        zero_want = ZERO_NOT_INSERTED if blocked else ZERO_INSERTED
        c2 = XbzrleCache(4 * PAGE)
        run(c2, [1], gen=g)
        assert run(c2, [9], gen=g + later, zero=[9]) == [zero_want]


def test_hit_refreshes_age() -> None:
    c = XbzrleCache(4 * PAGE)
    assert run(c, [2], gen=1) == [MISS_INSERTED]
    # without the hit at gen 3, page 6 could take the slot at gen 3
    assert run(c, [2], gen=3) == [HIT]
    assert c.age[2] == 3
    assert run(c, [6], gen=4) == [MISS_NOT_INSERTED]
    assert run(c, [6], gen=5) == [MISS_INSERTED]
    assert run(c, [2], gen=5) == [MISS_NOT_INSERTED]


def test_last_stage_does_not_insert_or_update() -> None:
    c = XbzrleCache(4 * PAGE, store_content=True)
    assert run(c, [1], gen=1) == [MISS_INSERTED]
    c.store(np.array([1]), np.full((1, PAGE), 7, np.uint8))
    # last stage: misses are counted but not inserted, even into empty or stale slots
    assert run(c, [0, 2, 5], gen=9, last=True) == [MISS_NOT_INSERTED] * 3
    assert c.address.tolist() == [-1, 1, -1, -1]
    # hits are still hits; as QEMU's lookup, they refresh the age
    assert run(c, [1], gen=9, last=True) == [HIT]
    assert c.age[1] == 9
    assert (c.content_of(np.array([1])) == 7).all()


def test_last_stage_zero_pages() -> None:
    # QEMU inserts zero pages whatever the stage ...
    c = XbzrleCache(4 * PAGE, store_content=True)
    assert run(c, [3], gen=2, zero=[3], last=True) == [ZERO_INSERTED]
    assert c.address[3] == 3
    # ... unless asked to freeze the cache completely in the last stage
    c = XbzrleCache(4 * PAGE, zero_insert_in_last_stage=False)
    assert run(c, [3], gen=2, zero=[3], last=True) == [ZERO_NOT_INSERTED]
    assert c.address[3] == -1
    assert run(c, [3], gen=2, zero=[3]) == [ZERO_INSERTED]


def test_zero_pages_refresh_the_cache() -> None:
    c = XbzrleCache(4 * PAGE, store_content=True)
    assert run(c, [2], gen=1) == [MISS_INSERTED]
    c.store(np.array([2]), np.full((1, PAGE), 0xAB, np.uint8))
    # the page is now sent as a zero page: its stale copy is replaced by zeros, age refreshed
    assert run(c, [2], gen=4, zero=[2]) == [ZERO_INSERTED]
    assert c.age[2] == 4 and not c.content_of(np.array([2])).any()
    # a zero page not yet cached is inserted, so a small later write is encoded
    assert run(c, [3], gen=4, zero=[3]) == [ZERO_INSERTED]
    assert run(c, [3], gen=5) == [HIT]
    new = np.zeros((1, PAGE), np.uint8)
    new[0, 100] = 1
    enc = xbzrle.encode(c.content_of(np.array([3]))[0].tobytes(), new[0].tobytes())
    assert enc == bytes([100, 1, 1])
    # a zero page colliding with a fresh entry is not inserted (and the entry stays)
    assert run(c, [7], gen=5, zero=[7]) == [ZERO_NOT_INSERTED]
    assert c.address[3] == 3


def test_miss_counting_and_outcome_mix() -> None:
    c = XbzrleCache(16 * PAGE)
    pages = list(range(0, 40))
    zero = [5, 6, 7]
    out = np.array(run(c, pages, gen=2, zero=zero))
    # 16 slots: pages 0..15 fill them (5, 6, 7 as zero copies); 16..39 collide with fresh entries
    assert (out[:16] == np.where(np.isin(np.arange(16), zero), ZERO_INSERTED, MISS_INSERTED)).all()
    assert (out[16:] == MISS_NOT_INSERTED).all()
    cache_miss = int(np.isin(out, [MISS_INSERTED, MISS_NOT_INSERTED]).sum())
    assert cache_miss == 40 - 3  # zero pages are not misses
    out = np.array(run(c, pages, gen=3))
    assert (out[:16] == HIT).all() and (out[16:] == MISS_NOT_INSERTED).all()
    assert c.num_items == 16


def test_resize_empties() -> None:
    c = XbzrleCache(4 * PAGE, store_content=True)
    run(c, [0, 1, 2, 3], gen=1)
    c.resize(4 * PAGE)  # same size: QEMU does nothing
    assert c.num_items == 4
    c.resize(8 * PAGE)
    assert c.slots == 8 and c.num_items == 0 and (c.age == 0).all()
    assert c.content is not None and c.content.shape == (8, PAGE)
    assert run(c, [0, 1], gen=2) == [MISS_INSERTED, MISS_INSERTED]
    c.clear()
    assert c.num_items == 0 and c.slots == 8
    assert run(c, [0], gen=2) == [MISS_INSERTED]


def test_exact_mode_round_trip_like_the_engine(rng: np.random.Generator) -> None:
    """Drive the cache as the engine would in exact mode, and rebuild pages on a 'destination'."""
    n_pages, slots = 32, 8
    mem = rng.integers(0, 256, (n_pages, PAGE), dtype=np.uint8)
    dest = np.zeros_like(mem)
    c = XbzrleCache(slots * PAGE, store_content=True)
    dest[:] = mem  # round 1: everything raw, nothing cached
    seen = np.zeros(5, np.int64)
    for gen in range(2, 8):
        dirty = np.sort(rng.choice(n_pages, 12, replace=False))
        for p in dirty:  # the guest writes a few bytes, or zeroes the page
            if rng.random() < 0.1:
                mem[p] = 0
            else:
                mem[p, rng.integers(0, PAGE, 5)] ^= 0x5A
        is_zero = ~mem[dirty].any(axis=1)
        last = gen == 7
        out = c.classify(dirty, is_zero, gen, last_stage=last)
        seen += np.bincount(out, minlength=5)
        ins = dirty[out == MISS_INSERTED]
        c.store(ins, mem[ins])
        raw = dirty[np.isin(out, [MISS_INSERTED, MISS_NOT_INSERTED])]
        dest[raw] = mem[raw]
        dest[dirty[is_zero]] = 0
        hits = dirty[out == HIT]
        if hits.size:
            lengths, enc = xbzrle.encode_batch(c.content_of(hits), mem[hits])
            for p, n, e in zip(hits, lengths, enc, strict=True):
                if n > 0:
                    xbzrle.decode_into(e[:n].tobytes(), dest[p])
                elif n < 0:
                    dest[p] = mem[p]
            upd = hits[lengths != 0]
            if not last:
                c.store(upd, mem[upd])
        np.testing.assert_array_equal(dest[dirty], mem[dirty])
    assert seen[HIT] > 0 and seen[MISS_INSERTED] > 0 and seen[ZERO_INSERTED] > 0


def test_argument_errors() -> None:
    c = XbzrleCache(4 * PAGE)
    with pytest.raises(ValueError, match="twice"):
        run(c, [1, 2, 1], gen=1)
    with pytest.raises(ValueError, match="twice"):
        run(c, [1, 5, 9, 1], gen=1)
    with pytest.raises(ValueError, match=">= 0"):
        run(c, [-1], gen=1)
    with pytest.raises(ValueError):
        c.classify(np.array([1, 2]), np.array([True]), 1)
    with pytest.raises(RuntimeError, match="store_content"):
        c.content_of(np.array([1]))
    assert c.classify(np.array([], np.int64), np.array([], bool), 1).shape == (0,)
    e = XbzrleCache(4 * PAGE, store_content=True)
    run(e, [1], gen=1)
    with pytest.raises(ValueError, match="not in the cache"):
        e.content_of(np.array([2]))
    with pytest.raises(ValueError, match="not in the cache"):
        e.store(np.array([5]), np.zeros((1, PAGE), np.uint8))
    with pytest.raises(ValueError):
        e.store(np.array([1]), np.zeros((1, 16), np.uint8))
