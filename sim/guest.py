"""The guest: its pages (as metadata, or as real bytes), and KVM's dirty log of what it wrote.

In ``modelled`` content mode a page is described by two facts: whether it is all zero, and how
many times it has been written (its ``version``). The XBZRLE model needs only "how many writes
since the cached copy was taken", which the version difference gives. In ``exact`` mode the
guest also holds real bytes (``uint8[pages, page_size]``).
"""

from __future__ import annotations

import numpy as np

from .spec import VmSpec


class Guest:
    """Page metadata and the dirty log ``D`` (REF §1.8): writes set bits, a sync drains them."""

    def __init__(self, spec: VmSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.pages = spec.memory // spec.page_size
        self.page_size = spec.page_size
        self.zero = np.zeros(self.pages, dtype=np.bool_)
        if spec.zero_fraction >= 1.0:
            self.zero[:] = True
        elif spec.zero_fraction > 0:
            # Each page is zero with probability zero_fraction; drawn in slices to bound memory.
            step = 1 << 22
            for lo in range(0, self.pages, step):
                hi = min(lo + step, self.pages)
                self.zero[lo:hi] = rng.random(hi - lo, dtype=np.float32) < spec.zero_fraction
        self.version = np.zeros(self.pages, dtype=np.uint32)
        self.dirty_log = np.zeros(self.pages, dtype=np.bool_)
        self.running = True
        self.exact = spec.content == "exact"
        if self.exact:
            # Real bytes: random content, zero where the zero flag says so.
            self.memory = rng.integers(0, 256, size=(self.pages, self.page_size), dtype=np.uint8)
            self.memory[self.zero] = 0
        else:
            self.memory = np.zeros((1, 8), np.uint8)  # placeholder the kernel never reads
        self.memory64 = self.memory.view(np.uint64)  # the same bytes as 64-bit words

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The compiled kernel's ``guest`` group (:mod:`sim.engine.kernel`)."""
        return self.dirty_log, self.zero, self.version, self.memory, self.memory64
