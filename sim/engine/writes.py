"""The guest's writes, generated ahead in time order and applied as sim time passes.

The workload draws writes for an interval at once (vectorised); they wait here until the send
loop or an idle wait reaches their time, so every page goes out with the content it had when it
was sent. The throttle scales the rate of writes drawn from then on; a stopped guest writes
nothing.

A long wait with nothing being sent (the time before a migration starts, or between two
migrations) is applied in steps of at most :data:`STEP_WRITES` writes, so its memory does not
grow with its length: only each page's final state (zero flag, write count, latest content) and
the dirty log (at most one entry a page) are kept. Intervals holding fewer writes are drawn in
one piece, as they always were, so their results do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..guest import Guest
from ..spec import WorkloadSpec
from ..workloads import Workload, WriteBatch
from . import kernel
from .bitmap import MigrationBitmap
from .content import PATTERNS, writer_spec

#: the most writes one step of :meth:`WriteBuffer.apply_until` draws (about 6 MiB of buffer and
#: 25 ms of work; far more than any interval of a scenario holds, but for a long idle wait)
STEP_WRITES = 1 << 18
_NO_SEEDS = np.empty(0, np.uint64)  # modelled content: no write changes real bytes
_NO_ROWS = np.empty(0, np.int64)  # no write sets a captured version (a replay's rows)


def _rows_of(rows: np.ndarray | None, n: int) -> np.ndarray:
    """``n`` writes' version rows: ``rows`` when each write has one, else -1 (none) each."""
    return rows if rows is not None and len(rows) == n else np.full(n, -1, np.int64)


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
        self.seed, self.row = _NO_SEEDS, _NO_ROWS
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
        # What a write does to a page's bytes matters in exact mode only: in modelled mode the
        # seeds and rows stay empty (the kernel reads them only for exact content).
        seeds = (self.content_rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
                 if self.guest.exact else _NO_SEEDS)
        rows = self.workload.content_rows(batch.page) if self.guest.exact else None
        if self.next >= len(self.batch.t_s):  # all applied (the common case): no copies
            self.batch, self.seed = batch, seeds
            self.row = _NO_ROWS if rows is None else rows
        else:
            keep = slice(self.next, None)
            buffered = len(self.batch.t_s)
            self.batch = WriteBatch(np.concatenate([self.batch.t_s[keep], batch.t_s]),
                                    np.concatenate([self.batch.page[keep], batch.page]))
            if self.guest.exact:
                self.seed = np.concatenate([self.seed[keep], seeds])
            if rows is not None or len(self.row):
                self.row = np.concatenate([_rows_of(self.row, buffered)[keep],
                                           _rows_of(rows, n)])
        self.next = 0
        self._args = self._kernel_args()
        self.guest.reserve_dirty(len(self.batch.t_s))  # each buffered write may dirty a page

    def apply_until(self, t_end: float) -> None:
        """Apply every write before ``t_end`` to the guest's pages and the dirty log, in steps
        of at most :data:`STEP_WRITES` drawn writes (see the module docstring)."""
        while True:
            step_end = self.step_end(t_end)
            self.generate_until(step_end)
            self.next = kernel.apply_writes(self.guest.kernel_args(), self.bitmap.kernel_args(),
                                            self.kernel_args(), self.next, step_end,
                                            self.guest.exact)
            if step_end >= t_end:
                return
            self.drop_applied()

    def step_end(self, t_end: float) -> float:
        """Where the next step of drawing writes up to ``t_end`` ends: ``t_end`` itself unless
        the interval from :attr:`until` would hold more than :data:`STEP_WRITES` writes."""
        rate = self.workload.peak_writes_per_s * self.scale()
        if t_end <= self.until or rate * (t_end - self.until) <= STEP_WRITES:
            return t_end
        step = self.until + STEP_WRITES / rate
        return step if step > self.until else t_end  # a step below float resolution: one piece

    def drop_applied(self) -> None:
        """Release the writes already applied (the buffer then holds only those still ahead)."""
        if self.next >= len(self.batch.t_s):
            self.batch = WriteBatch.empty()
            self.seed, self.row = _NO_SEEDS, _NO_ROWS
            self.next = 0
            self._args = self._kernel_args()

    def kernel_args(self) -> tuple[Any, ...]:
        return self._args

    def _kernel_args(self) -> tuple[Any, ...]:
        return (self.batch.t_s, self.batch.page, self.seed, self.zero_pattern, self.pattern,
                self.write_size, self.word_size, self.row, self.workload.content_versions)
