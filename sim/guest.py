"""The guest: its pages (as metadata, or as real bytes), and KVM's dirty log of what it wrote.

In ``modelled`` content mode a page is described by two facts: whether it is all zero, and how
many times it has been written (its ``version``). The XBZRLE model needs only "how many writes
since the cached copy was taken", which the version difference gives. In ``exact`` mode the
guest also holds real bytes (``uint8[pages, page_size]``).

Cost in writes, not in RAM: the zero flags and the dirty log are bit-packed (:mod:`sim.bits`),
and the dirty log also lists the pages it holds in the order they were first dirtied, so a sync
costs what was dirtied since the last one (as KVM's dirty ring does), not a walk over RAM. The
modelled *cost* of a sync to QEMU's migration thread is separate (``source_cpu.sync_per_page``).
"""

from __future__ import annotations

import numpy as np

from . import bits
from .spec import VmSpec


class Guest:
    """Page metadata and the dirty log ``D`` (REF §1.8): writes set bits, a sync drains them."""

    def __init__(self, spec: VmSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.pages = spec.memory // spec.page_size
        self.page_size = spec.page_size
        if spec.zero_fraction >= 1.0:
            self.zero_bits = bits.full(self.pages)
        elif spec.zero_placement == "first":  # the lowest n pages
            self.zero_bits = bits.empty(self.pages)
            bits.put_range(self.zero_bits, 0, round(spec.zero_fraction * self.pages))
        else:
            self.zero_bits = bits.empty(self.pages)
            # Each page is zero with probability zero_fraction; drawn in slices to bound memory
            # (a slice is a whole number of words, so it packs on its own).
            step = 1 << 22
            for lo in range(0, self.pages if spec.zero_fraction > 0 else 0, step):
                hi = min(lo + step, self.pages)
                flags = rng.random(hi - lo, dtype=np.float32) < spec.zero_fraction
                self.zero_bits[lo >> 6: (hi + 63) >> 6] = bits.pack(flags)
        for region in spec.zero_regions:  # known zero ranges, whole pages (the scenario checks)
            bits.put_range(self.zero_bits, region.offset // self.page_size,
                           (region.offset + region.size) // self.page_size)
        self.version = np.zeros(self.pages, dtype=np.uint32)
        #: a migration that reads no versions runs (see :attr:`counts_versions`)
        self.versions_unread = False
        self.version_readers = 0  # dirty-rate measurements running (they read versions)
        self.dirty_bits = bits.empty(self.pages)
        # D's words that are not empty, in the order they were first dirtied: a sync walks
        # them, not RAM. Room for every word (a 64th of the pages; never grown).
        self.dirty_words = np.zeros(bits.words(self.pages), np.int64)
        self.dirty_count = np.zeros(1, np.int64)  # how many of dirty_words are in use
        self.running = True
        self.exact = spec.content == "exact"
        if self.exact:
            # Real bytes: random content, zero where the zero flag says so.
            self.memory = rng.integers(0, 256, size=(self.pages, self.page_size), dtype=np.uint8)
            self.memory[self.zero] = 0
        else:
            self.memory = np.zeros((1, 8), np.uint8)  # placeholder the kernel never reads
        self.memory64 = self.memory.view(np.uint64)  # the same bytes as 64-bit words
        # the compiled kernel's ``guest`` group: these arrays are never reallocated
        self._args = (self.dirty_bits, self.dirty_words, self.dirty_count, self.zero_bits,
                      self.version, self.memory, self.memory64)

    @property
    def counts_versions(self) -> bool:
        """Whether a write bumps its page's ``version`` now: not while a migration runs whose
        page cache, size samples and plug-ins read none (no XBZRLE, no plug-in) and no dirty-rate
        measurement runs. The bump is a random access per write, a cache miss for each write of
        a fleet (a fifth of a thousand guests' time). Model note: a version then counts the
        writes made while something could read it, so a later XBZRLE migration of the same guest
        picks other (equally likely) samples from its size table than if every write counted."""
        return self.version_readers > 0 or not self.versions_unread

    @property
    def zero(self) -> np.ndarray:
        """bool[pages]: which pages are all zero now (a copy)."""
        return bits.unpack(self.zero_bits, self.pages)

    def set_initial(self, zero: np.ndarray, content: np.ndarray | None = None) -> None:
        """Start from given memory: ``zero`` (bool[pages]) says which pages are all zero; in
        exact mode ``content`` (uint8[pages, page_size]) is their bytes, or, when None, the
        drawn random bytes are kept for the pages not zero."""
        self.zero_bits[:] = bits.pack(np.asarray(zero, np.bool_))
        if self.exact:
            if content is not None:
                self.memory[:] = content
            else:
                self.memory[zero] = 0

    def clear_dirty_log(self) -> None:
        """D := ∅, in what was dirtied (the migration's setup starts a fresh log)."""
        self.dirty_bits[self.dirty_words[: int(self.dirty_count[0])]] = 0
        self.dirty_count[0] = 0

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        """The compiled kernel's ``guest`` group (:mod:`sim.engine.kernel`)."""
        return self._args
