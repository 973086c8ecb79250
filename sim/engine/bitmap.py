"""QEMU's migration bitmap ``B``: the pages still to send, the scan cursor, the clear-chunks.

A sync merges the guest's dirty log ``D`` into ``B`` (REF §1.5); the send loop takes pages from
``B`` in scan order from the cursor (REF §1.2). A page sent from a clear-chunk re-arms that chunk
(QEMU clears the chunk's KVM dirty log then), so a write that lands in a re-armed chunk dirties
``D`` even while the page still waits in ``B`` (REF §1.3).
"""

from __future__ import annotations

import numpy as np

from . import kernel


class MigrationBitmap:
    """``pending`` (bool per page), its count, the cursor and the clear-chunk flags."""

    def __init__(self, pages: int, clear_shift: int) -> None:
        self.pending = np.zeros(pages, np.bool_)
        self.n_pending = 0
        self.cursor = 0
        self.clear_shift = int(clear_shift)
        self.chunk_cleared = np.zeros((pages >> self.clear_shift) + 1, np.bool_)
        #: the scan has wrapped once: the first full round is over (XBZRLE starts, REF §2.6)
        self.round_done = False

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, int]:
        return self.pending, self.chunk_cleared, self.clear_shift

    def set_all(self) -> None:
        """Setup: every page is to be sent (REF §1.1)."""
        self.pending[:] = True
        self.n_pending = self.pending.shape[0]

    def sync(self, dirty_log: np.ndarray) -> int:
        """B := B ∪ D, D := ∅; every clear-chunk must be re-armed before its next send.
        Returns the pages newly dirty (pending now, not before)."""
        self.n_pending, newly = kernel.sync_bitmap(self.pending, dirty_log)
        self.chunk_cleared[:] = False
        return int(newly)

    def stale_behind_cursor(self) -> int:
        """Pending pages the destination already holds a copy of: all of them after the first
        round, else those the scan has passed."""
        if self.round_done:
            return self.n_pending
        return int(np.count_nonzero(self.pending[:self.cursor]))
