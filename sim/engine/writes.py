"""The guest's writes, generated ahead in time order and applied as sim time passes.

The workload draws writes for an interval at once (vectorised); they wait here until the send
loop or an idle wait reaches their time, so every page goes out with the content it had when it
was sent. The throttle scales the rate of writes drawn from then on; a stopped guest writes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..guest import Guest
from ..spec import WorkloadSpec
from ..workloads import Workload, WriteBatch
from . import kernel
from .bitmap import MigrationBitmap
from .content import PATTERNS, writer_spec


class WriteBuffer:
    """Writes generated up to ``until``; the first not yet applied is ``next``."""

    def __init__(self, guest: Guest, bitmap: MigrationBitmap, workload: Workload,
                 spec: WorkloadSpec, rng: np.random.Generator,
                 content_rng: np.random.Generator, scale: Callable[[], float]) -> None:
        self.guest = guest
        self.bitmap = bitmap
        self.workload = workload
        self.rng = rng
        self.content_rng = content_rng
        self.scale = scale  # the share of the nominal write rate the guest runs at now
        spec = writer_spec(spec)  # whose write pattern the pages' content follows
        self.zero_pattern = spec.write_pattern == "zero"
        self.pattern = PATTERNS[spec.write_pattern]
        self.write_size = spec.write_size
        self.word_size = spec.word_size
        self.drop()
        self.until = 0.0

    def drop(self) -> None:
        """Forget the writes not applied yet (the vCPUs stopped: they never happen)."""
        self.batch = WriteBatch.empty()
        self.seed = np.empty(0, np.uint64)
        self.next = 0
        self._args = self._kernel_args()

    def restart_at(self, t: float) -> None:
        """The guest runs again from ``t`` (on the destination, after a post-copy switch)."""
        self.drop()
        self.until = t
        self.workload.resume_at(t)

    def generate_until(self, t_end: float) -> None:
        """Make sure every write before ``t_end`` is in the buffer (generated once, in order)."""
        if t_end <= self.until:
            return
        batch = self.workload.writes(self.until, t_end, self.rng, self.scale())
        self.until = t_end
        n = len(batch)
        seeds = (self.content_rng.integers(0, 2**63, size=n, dtype=np.int64)
                 .astype(np.uint64) if self.guest.exact else np.zeros(n, np.uint64))
        if self.next >= len(self.batch.t_s):  # all applied (the common case): no copies
            self.batch, self.seed = batch, seeds
        else:
            keep = slice(self.next, None)
            self.batch = WriteBatch(np.concatenate([self.batch.t_s[keep], batch.t_s]),
                                    np.concatenate([self.batch.page[keep], batch.page]))
            self.seed = np.concatenate([self.seed[keep], seeds])
        self.next = 0
        self._args = self._kernel_args()
        self.guest.reserve_dirty(len(self.batch.t_s))  # each buffered write may dirty a page

    def apply_until(self, t_end: float) -> None:
        """Apply every write before ``t_end`` to the guest's pages and the dirty log."""
        self.generate_until(t_end)
        self.next = kernel.apply_writes(self.guest.kernel_args(), self.bitmap.kernel_args(),
                                        self.kernel_args(), self.next, t_end, self.guest.exact)

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, int, int, int]:
        return self._args

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, int, int, int]:
        return (self.batch.t_s, self.batch.page, self.seed, self.zero_pattern, self.pattern,
                self.write_size, self.word_size)
