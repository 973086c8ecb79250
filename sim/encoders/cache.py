"""QEMU's XBZRLE page cache on the source (REF §2.5) and the cache side of the per-page decision
(REF §2.6), for the engine to apply to batches of pages in send order.

What is reproduced (migration/page_cache.c and the cache calls in migration/ram.c)
---------------------------------------------------------------------------------
* **Direct-mapped**: ``slots = cache_size // page_size`` (both powers of two, cache at least one
  page); page number ``p`` lives in slot ``p mod slots``, so pages ``slots`` apart collide.
* Each slot holds an address (page number; -1 = never filled, QEMU's all-ones), an **age**
  (0 initially) and, in exact-content mode, a page-sized copy.
* **Lookup**: a hit means the slot's address equals the page; a hit **refreshes the age** to the
  current generation (``dirty-sync-count``).
* **Insert** is refused when the slot holds *another* page whose entry is fresh:
  ``age + CACHED_PAGE_LIFETIME > generation`` with ``CACHED_PAGE_LIFETIME = 2``, i.e. it was
  inserted or hit in this generation or the previous one. Otherwise the slot is overwritten
  (content, age = generation, address). Re-inserting the page a slot already holds always works.
* Per page, once XBZRLE has started (REF §2.6), :meth:`XbzrleCache.classify` applies in order:

  - **zero page** (the zero test wins): try to insert an all-zero copy; a refusal is ignored. No
    miss and no hit is counted (QEMU's ``xbzrle_cache_zero_page``).
  - **miss**: ``cache-miss`` +1; insert the page unless in the last stage; send raw either way.
  - **hit**: ``xbzrle pages`` +1; the age is refreshed; the caller encodes against the cached copy
    and, when the result is not 0 and not in the last stage, stores the new content.

* **Last stage** (completion, REF §1.6/§2.6): misses are not inserted and hit contents are not
  updated. Hits still refresh the age: QEMU's hit test (``cache_is_cached``) sets the age whatever
  the stage. Zero pages still insert their zero copy by default, as QEMU does
  (``xbzrle_cache_zero_page`` has no last-stage check in any QEMU version; REF §2.6 says zero pages
  insert "once XBZRLE has started" with no stage exception). Pass
  ``zero_insert_in_last_stage=False`` to freeze the cache completely in the last stage instead, as
  the summary in REF §1.6 ("no longer updates or fills the cache") could be read.
* **Resize** to a different size replaces the cache with an empty one (all history lost); a
  resize to the current size is a no-op, as in QEMU's ``xbzrle_cache_resize``.

Outcome codes and QEMU's counters (REF §2.8)
--------------------------------------------
``ZERO_INSERTED`` / ``ZERO_NOT_INSERTED``: a zero page (counted by the zero-page path only).
``MISS_INSERTED`` / ``MISS_NOT_INSERTED``: ``cache-miss`` +1 each, page goes raw (``normal`` +1).
``HIT``: ``pages`` +1; the encoding result decides skipped / overflow (raw) / XBZRLE record.

Modes and departures
--------------------
* Modelled mode (``store_content=False``, the default) keeps addresses and ages only, no bytes;
  the engine tracks what changed since a page was cached. Exact mode keeps a
  ``uint8[slots, page_size]`` copy per slot, allocated up front (QEMU allocates a slot's copy on its
  first insert; the memory model of the simulation does not depend on this).
* Addresses are page numbers (QEMU: ``ram_addr`` in bytes; the slot index is the same).
* QEMU refuses an insert also when allocating the slot's copy fails; not modelled.
* XBZRLE is off for the whole first round (REF §2.6): the engine must not call ``classify`` then.
* A batch must not contain the same page twice (QEMU sends a page at most once between two syncs,
  and only syncs change the generation); ``classify`` raises ``ValueError`` if it does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

__all__ = [
    "CACHED_PAGE_LIFETIME",
    "HIT",
    "MISS_INSERTED",
    "MISS_NOT_INSERTED",
    "ZERO_INSERTED",
    "ZERO_NOT_INSERTED",
    "XbzrleCache",
    "classify_page",
]

#: An entry inserted or hit at generation g blocks colliding inserts at g and g + 1.
CACHED_PAGE_LIFETIME = 2

ZERO_INSERTED = 0
ZERO_NOT_INSERTED = 1
MISS_INSERTED = 2
MISS_NOT_INSERTED = 3
HIT = 4

#: Outcome code -> name, for tables and messages.
OUTCOME_NAMES = {
    ZERO_INSERTED: "zero_inserted",
    ZERO_NOT_INSERTED: "zero_not_inserted",
    MISS_INSERTED: "miss_inserted",
    MISS_NOT_INSERTED: "miss_not_inserted",
    HIT: "hit",
}


_I64_1 = types.Array(types.int64, 1, "C")
_I64_1R = types.Array(types.int64, 1, "C", readonly=True)


@njit(types.boolean(_I64_1R, _I64_1, types.int64, types.int64), cache=True)
def _slots_collide(pages, seen, stamp, mask):  # type: ignore[no-untyped-def]
    """True if two pages of the batch map to one slot (the only way a page can repeat)."""
    for k in range(pages.shape[0]):
        s = pages[k] & mask
        if seen[s] == stamp:
            return True
        seen[s] = stamp
    return False


@njit(inline="always")
def try_insert(address, age, slot, page, generation):  # type: ignore[no-untyped-def]
    """QEMU's cache_insert: refused while ``slot`` holds *another* page that is still fresh
    (inserted or hit less than CACHED_PAGE_LIFETIME generations ago); else take the slot."""
    held = address[slot]
    if held != -1 and held != page and age[slot] + CACHED_PAGE_LIFETIME > generation:
        return False
    address[slot] = page
    age[slot] = generation
    return True


@njit(inline="always")
def classify_page(address, age, page, is_zero, generation, last_stage,  # type: ignore[no-untyped-def]
                  zero_in_last):
    """The cache side of REF §2.6 for one page sent now; returns its outcome code.

    This one function is the cache's rule wherever it runs: :meth:`XbzrleCache.classify` applies
    it to a batch, and the engine's compiled send loop (:mod:`sim.engine.kernel`) to every page it
    sends once XBZRLE has started.
    """
    s = page & (address.shape[0] - 1)
    if is_zero:
        if last_stage and not zero_in_last:
            return ZERO_NOT_INSERTED
        if try_insert(address, age, s, page, generation):
            return ZERO_INSERTED
        return ZERO_NOT_INSERTED
    if address[s] == page:
        age[s] = generation  # a hit refreshes the age, in every stage
        return HIT
    if not last_stage and try_insert(address, age, s, page, generation):
        return MISS_INSERTED
    return MISS_NOT_INSERTED


@njit(types.void(_I64_1R, types.Array(types.boolean, 1, "C", readonly=True), types.int64,
                 types.boolean, types.boolean, _I64_1, _I64_1, types.Array(types.uint8, 2, "C"),
                 types.boolean, types.Array(types.int8, 1, "C")), cache=True)
def _classify(pages, is_zero, generation, last_stage, zero_in_last,  # type: ignore[no-untyped-def]
              address, age, content, has_content, outcome):
    mask = address.shape[0] - 1
    for k in range(pages.shape[0]):
        code = classify_page(address, age, pages[k], is_zero[k], generation, last_stage,
                             zero_in_last)
        if code == ZERO_INSERTED and has_content:
            content[pages[k] & mask, :] = 0
        outcome[k] = code


def _power_of_two(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


class XbzrleCache:
    """QEMU's direct-mapped XBZRLE page cache (see the module docstring for the rules).

    ``address`` (int64[slots], -1 = empty) and ``age`` (int64[slots]) are public read-only views
    of the state; ``content`` is ``uint8[slots, page_size]`` in exact mode, else ``None``.
    ``version`` (uint32[slots]) is the modelled mode's stand-in for the content: the guest's
    write count of the page when its copy was taken (the engine sets it; the difference to the
    page's current count is what the XBZRLE size model needs).
    """

    def __init__(self, cache_size: int, page_size: int = 4096, *, store_content: bool = False,
                 zero_insert_in_last_stage: bool = True, guest_pages: int | None = None) -> None:
        if not _power_of_two(int(page_size)):
            raise ValueError(f"page size must be a power of two (got {page_size})")
        self.page_size = int(page_size)
        # A cache with more slots than the guest has pages (rounded up to a power of two)
        # behaves exactly as that smaller one: page p sits in slot p either way (the slot is
        # p & (slots - 1)). So only that many slots are allocated; ``cache_size`` and the stats
        # keep the size asked for. QEMU allocates the whole cache (g_try_malloc in
        # migration/page_cache.c) and fails the migration when it cannot.
        self.max_slots = (1 << max(0, int(guest_pages) - 1).bit_length()
                          if guest_pages is not None else None)
        self.store_content = bool(store_content)
        self.zero_insert_in_last_stage = bool(zero_insert_in_last_stage)
        self._stamp = 0
        self._alloc(cache_size)

    def _alloc(self, cache_size: int) -> None:
        cache_size = int(cache_size)
        if cache_size < self.page_size or not _power_of_two(cache_size):
            raise ValueError(f"xbzrle-cache-size must be a power of two of at least one page "
                             f"({self.page_size} bytes) (got {cache_size})")
        self.cache_size = cache_size
        self.slots = cache_size // self.page_size
        if self.max_slots is not None:
            self.slots = min(self.slots, self.max_slots)
        self.address = np.full(self.slots, -1, dtype=np.int64)
        self.age = np.zeros(self.slots, dtype=np.int64)
        self.version = np.zeros(self.slots, dtype=np.uint32)
        self.content: np.ndarray | None = (
            np.zeros((self.slots, self.page_size), dtype=np.uint8) if self.store_content else None)
        self._seen = np.zeros(self.slots, dtype=np.int64)

    def resize(self, cache_size: int) -> None:
        """QEMU's ``xbzrle_cache_resize``: a new, empty cache, unless the size is unchanged."""
        if int(cache_size) != self.cache_size:
            self._alloc(cache_size)

    def clear(self) -> None:
        """Empty the cache (as a fresh instance of the same size)."""
        self._alloc(self.cache_size)

    def slot_of(self, pages: np.ndarray) -> np.ndarray:
        """The slot index of each page number."""
        return np.asarray(pages, dtype=np.int64) & (self.slots - 1)

    def lookup(self, pages: np.ndarray) -> np.ndarray:
        """bool[k]: which pages are cached now, without touching ages (an inspection helper)."""
        p = np.asarray(pages, dtype=np.int64)
        return self.address[p & (self.slots - 1)] == p

    @property
    def num_items(self) -> int:
        """Slots that hold a page (QEMU's ``num_items``: copies allocated so far)."""
        return int(np.count_nonzero(self.address != -1))

    def classify(self, pages: np.ndarray, is_zero: np.ndarray, generation: int,
                 last_stage: bool = False) -> np.ndarray:
        """Apply the cache side of REF §2.6 to pages sent in this order; returns int8 outcomes.

        ``pages``: page numbers (>= 0, distinct); ``is_zero``: which of them are sent as zero
        pages; ``generation``: the current ``dirty-sync-count``. The cache state changes in
        order. In exact mode a ``ZERO_INSERTED`` slot is zero-filled here; the caller stores the
        sent bytes for ``MISS_INSERTED`` pages, and for ``HIT`` pages whose encoding is not 0
        when not in the last stage (:meth:`store`), after reading the old copies
        (:meth:`content_of`).
        """
        p = np.ascontiguousarray(pages, dtype=np.int64)
        z = np.ascontiguousarray(is_zero, dtype=np.bool_)
        if p.ndim != 1 or z.shape != p.shape:
            raise ValueError("pages and is_zero must be 1-D arrays of one length")
        outcome = np.empty(p.shape[0], dtype=np.int8)
        if p.shape[0] == 0:
            return outcome
        if p.min() < 0:
            raise ValueError("page numbers must be >= 0")
        self._stamp += 1
        if (_slots_collide(p, self._seen, self._stamp, self.slots - 1)
                and np.unique(p).shape[0] != p.shape[0]):
            raise ValueError("a batch passed to XbzrleCache.classify lists a page twice")
        content = self.content if self.content is not None else np.zeros((1, 1), dtype=np.uint8)
        _classify(p, z, int(generation), bool(last_stage), self.zero_insert_in_last_stage,
                  self.address, self.age, content, self.content is not None, outcome)
        return outcome

    def _cached_slots(self, pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.content is None:
            raise RuntimeError("this XbzrleCache keeps no page contents (store_content=False)")
        p = np.asarray(pages, dtype=np.int64).reshape(-1)
        s = p & (self.slots - 1)
        if not np.array_equal(self.address[s], p):
            raise ValueError("some pages are not in the cache")
        return p, s

    def content_of(self, pages: np.ndarray) -> np.ndarray:
        """Copies of the cached contents of ``pages`` (all cached), uint8[k, page_size]."""
        _, s = self._cached_slots(pages)
        assert self.content is not None
        return self.content[s]

    def store(self, pages: np.ndarray, data: np.ndarray) -> None:
        """Store ``data[i]`` as the cached content of ``pages[i]`` (each must be cached)."""
        p, s = self._cached_slots(pages)
        d = np.asarray(data, dtype=np.uint8)
        if d.shape != (p.shape[0], self.page_size):
            raise ValueError(f"data must be uint8[{p.shape[0]}, {self.page_size}]")
        assert self.content is not None
        self.content[s] = d
