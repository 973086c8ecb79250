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
from ..workloads.draws import RawDraws, steady_writes
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
        # The buffered writes: [next, count) of these arrays are still ahead.
        self.t_buf = np.empty(0, np.float64)
        self.p_buf = np.empty(0, np.int64)
        self.count = 0
        #: uniform and hotspot writes of a modelled guest are drawn in compiled code
        #: (:mod:`sim.workloads.draws`, the same values as numpy's), else by the workload
        self.draw_params = (workload.steady_params()
                            if not guest.exact and RawDraws.supports(rng) else None)
        self.draws = RawDraws(rng) if self.draw_params is not None else None
        self.drop()
        self.until = 0.0

    @property
    def batch(self) -> WriteBatch:
        """The buffered writes (applied or not) in time order."""
        return WriteBatch(self.t_buf[:self.count], self.p_buf[:self.count])

    def drop(self) -> None:
        """Forget the writes not applied yet (the vCPUs stopped: they never happen)."""
        self.count = 0
        self.seed, self.row = _NO_SEEDS, _NO_ROWS
        self.next = 0
        self._args: tuple[Any, ...] | None = None

    def restart_at(self, t: float) -> None:
        """The guest runs again from ``t`` (on the destination, after a post-copy switch)."""
        self.drop()
        self.until = t
        self.workload.resume_at(t)

    def generate_until(self, t_end: float) -> None:
        """Make sure every write before ``t_end`` is in the buffer (generated once, in order)."""
        if t_end <= self.until:
            return
        if self.draws is not None:
            self.draw_until(t_end)
            return
        batch = self.workload.writes(self.until, t_end, self.rng, self.scale())
        self.until = t_end
        n = len(batch)
        # What a write does to a page's bytes matters in exact mode only: in modelled mode the
        # seeds and rows stay empty (the kernel reads them only for exact content).
        seeds = (self.content_rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
                 if self.guest.exact else _NO_SEEDS)
        rows = self.workload.content_rows(batch.page) if self.guest.exact else None
        if self.next >= self.count:  # all applied (the common case): no copies
            self.t_buf, self.p_buf, self.count, self.seed = batch.t_s, batch.page, n, seeds
            self.row = _NO_ROWS if rows is None else rows
        else:
            keep = slice(self.next, self.count)
            buffered = self.count
            self.t_buf = np.concatenate([self.t_buf[keep], batch.t_s])
            self.p_buf = np.concatenate([self.p_buf[keep], batch.page])
            self.count = len(self.t_buf)
            if self.guest.exact:
                self.seed = np.concatenate([self.seed[keep], seeds])
            if rows is not None or len(self.row):
                self.row = np.concatenate([_rows_of(self.row, buffered)[keep],
                                           _rows_of(rows, n)])
        self.next = 0
        self._args = None

    def room_for(self, t_end: float) -> int:
        """Make the buffer hold the writes still ahead at its start, with room for those of
        ``[until, t_end)``; returns how many outputs of the generator they draw at most, but
        for rejections (a hotspot write draws one output and two half outputs)."""
        rate = float(self.draw_params[5]) * self.scale()  # type: ignore[index]
        most = int(rate * max(t_end - self.until, 0.0)) + 2
        ahead = self.count - self.next
        if self.next > 0:  # applied writes are dropped: the rest moves to the front
            self.t_buf[:ahead] = self.t_buf[self.next:self.count]
            self.p_buf[:ahead] = self.p_buf[self.next:self.count]
            self.count, self.next = ahead, 0
            self._args = None
        if ahead + most > self.t_buf.shape[0]:
            size = max(ahead + most, 2 * self.t_buf.shape[0], 64)
            t_buf, p_buf = np.empty(size, np.float64), np.empty(size, np.int64)
            t_buf[:ahead], p_buf[:ahead] = self.t_buf[:ahead], self.p_buf[:ahead]
            self.t_buf, self.p_buf = t_buf, p_buf
            self._args = None
        return 2 * most + 64

    def pull_draws(self, t_end: float, attempt: int) -> None:
        """Pull the generator's outputs the writes up to ``t_end`` draw; a later ``attempt``
        (the draws ran short: a run of rejections) pulls twice as many as the one before."""
        assert self.draws is not None
        self.draws.pull(self.room_for(t_end) << attempt)

    def set_count(self, count: int, next_: int) -> None:
        """The compiled chunk (:func:`sim.engine.kernel.draw_and_send`) left ``count`` writes in the buffer,
        the first ``next_`` of them applied."""
        if count != self.count:
            self.count = count
            self._args = None
        self.next = next_

    def draw_until(self, t_end: float) -> None:
        """Compiled drawing (:func:`sim.workloads.draws.steady_writes`) up to ``t_end``."""
        draws, workload = self.draws, self.workload
        assert draws is not None
        attempt = 0
        while True:
            self.pull_draws(t_end, attempt)  # makes room in the buffer too
            count, c1 = steady_writes(draws.raw, draws.at, self.draw_params, self.until,
                                      workload.clock_count, t_end, self.scale(), self.t_buf,
                                      self.p_buf, self.count)
            if count >= 0:
                break
            attempt += 1
        workload.advance_clock(t_end, c1)
        self.until = t_end
        if count != self.count:
            self.count = count
            self._args = None

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
        if self.next >= self.count:
            self.t_buf, self.p_buf = np.empty(0, np.float64), np.empty(0, np.int64)
            self.count = 0
            self.seed, self.row = _NO_SEEDS, _NO_ROWS
            self.next = 0
            self._args = None

    def kernel_args(self) -> tuple[Any, ...]:
        count = self.guest.counts_versions
        if self._args is None or self._args[4] is not count:
            self._args = (self.t_buf[:self.count], self.p_buf[:self.count], self.seed,
                          self.zero_pattern, count, self.pattern, self.write_size,
                          self.word_size, self.row, self.workload.content_versions)
        return self._args

    def settle(self) -> None:
        """Python draws from the generator next: hand back the outputs pulled ahead."""
        if self.draws is not None:
            self.draws.settle()
