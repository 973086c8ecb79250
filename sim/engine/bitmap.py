"""QEMU's migration bitmap ``B``: the pages still to send, the scan cursor, the clear-chunks.

A sync merges the guest's dirty log ``D`` into ``B`` (REF §1.5); the send loop takes pages from
``B`` in scan order from the cursor (REF §1.2). A page sent from a clear-chunk re-arms that chunk
(QEMU clears the chunk's KVM dirty log then), so a write that lands in a re-armed chunk dirties
``D`` even while the page still waits in ``B`` (REF §1.3).

Cost in pages, not RAM: ``B`` is bit-packed (:mod:`sim.bits`) with a count of pending pages per
block of ``2**BLOCK_SHIFT`` pages, so the scan skips empty blocks and a round costs the pending
pages plus one look per block; a sync walks only the dirty log's list.
"""

from __future__ import annotations

import numpy as np

from .. import bits
from ..guest import Guest
from . import kernel

BLOCK_SHIFT = kernel.BLOCK_SHIFT


class MigrationBitmap:
    """``B`` (bit-packed), its per-block counts and total, the cursor and the clear-chunks."""

    def __init__(self, pages: int, clear_shift: int) -> None:
        self.pages = int(pages)
        self.pending_bits = bits.empty(pages)
        self.block_count = np.zeros((pages >> BLOCK_SHIFT) + 1, np.int64)
        self.n_pending = 0
        self.cursor = 0
        self.clear_shift = int(clear_shift)
        self.chunk_cleared = np.zeros((pages >> self.clear_shift) + 1, np.bool_)
        #: the scan has wrapped once: the first full round is over (XBZRLE starts, REF §2.6)
        self.round_done = False

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        return self.pending_bits, self.block_count, self.chunk_cleared, self.clear_shift

    @property
    def pending(self) -> np.ndarray:
        """bool[pages]: the pending pages (a copy; for exact mode and inspection)."""
        return bits.unpack(self.pending_bits, self.pages)

    def set_all(self) -> None:
        """Setup: every page is to be sent (REF §1.1)."""
        self.pending_bits[:] = bits.full(self.pages)
        self.block_count[:] = 1 << BLOCK_SHIFT
        self.block_count[-1] = self.pages - ((self.block_count.shape[0] - 1) << BLOCK_SHIFT)
        self.n_pending = self.pages

    def sync(self, guest: Guest) -> int:
        """B := B ∪ D, D := ∅; every clear-chunk must be re-armed before its next send.
        Returns the pages newly dirty (pending now, not before)."""
        newly = int(kernel.sync_bitmap(self.kernel_args(), guest.kernel_args()))
        self.n_pending += newly
        self.chunk_cleared[:] = False
        return newly

    def stale_behind_cursor(self) -> int:
        """Pending pages the destination already holds a copy of: all of them after the first
        round, else those the scan has passed."""
        if self.round_done:
            return self.n_pending
        return int(bits.count_below(self.pending_bits, self.cursor))
