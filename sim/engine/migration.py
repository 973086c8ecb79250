"""One guest's migration: the context QEMU's migration thread runs in, and its shared verbs.

:class:`Migration` holds the parts — the guest and its workload, the migration bitmap
(:mod:`~sim.engine.bitmap`), the write buffer (:mod:`~sim.engine.writes`), the page pipeline
(:mod:`~sim.engine.pipeline`), the throttle policy (:mod:`~sim.engine.throttle`) — and the named
state (:mod:`~sim.engine.state`). The phases are SimPy generator functions that take it:
:func:`sim.engine.precopy.migrate` (setup and the live loop), :mod:`sim.engine.switchover`
(stop-and-copy) and :mod:`sim.engine.postcopy`. Commands from the endpoints arrive as methods
(:meth:`Migration.set_parameters`, :meth:`request_cancel`, :meth:`request_postcopy`,
:meth:`refuse`); nothing outside the engine writes its attributes.

Model notes (where this departs from QEMU, and why):
* Setup takes one round trip (the connection); the first sync follows (REF §1.1).
* The migration thread's own CPU time (page scan, copy, XBZRLE, bitmap syncs) is modelled by
  ``source_cpu`` and overlaps with the link (:mod:`~sim.engine.pipeline`); a sync's cost is paid
  before the next send.
* A destination that cannot parse a record (its version predates the encoding, REF §8.2) fails
  when that record arrives, one latency after it was sent; the source learns of it one latency
  later (the closed socket, or the SHUT message on the return path) and stops there. Bytes the
  source would have pushed in that round trip are not counted.
* Live commands (QMP) act between chunks: a parameter change or ``migrate_cancel`` takes effect
  when the running chunk (at most 50 ms) ends, and ``query-migrate`` counts a chunk's pages as
  sent from its start. ``stop`` (:meth:`Migration.pause_guest`) stops the guest's writes at once,
  but the writes of the running chunk up to its end have been applied already.
* A new migration of the same guest after a cancel or a failure (:meth:`Migration.renew`) starts
  from fresh statistics; the tables keep the earlier one's events and passes, and its runs row
  is the last migration's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

import numpy as np
import simpy

from ..capabilities import InForce
from ..guest import Guest
from ..link import Route
from ..recorder import Recorder
from ..spec import FaultSpec, MigrationSpec, Scenario
from ..workloads import make_workload
from .bitmap import MigrationBitmap
from .pipeline import Chunk, Pipeline
from .profiles import max_bandwidth
from .state import RUNNING, MigrationState
from .throttle import NoThrottle, Throttle, tcg_sync_wait
from .writes import WriteBuffer

MAX_WAIT_S = 0.05  # MAX_WAIT: longest single chunk
WINDOW_S = 0.1  # BUFFER_DELAY: bandwidth window and rate-limit period
DIRTY_RATE_PERIOD_S = 1.0  # dirty-rate statistics update at syncs at least this far apart

#: in-band negotiation at setup: yields SimPy events, returns what was agreed or an error text
Handshake = Callable[["Migration"], Generator[simpy.Event, None, "InForce | str"]]


@dataclass
class RateWindow:
    """The 100 ms bandwidth window in progress (REF §1.4)."""

    start: float = 0.0
    bytes: float = 0.0
    pages: int = 0


@dataclass
class DirtyRatePeriod:
    """The dirty-rate period in progress: pages newly dirtied and bytes sent since its start."""

    start: float = 0.0
    newly: int = 0
    transferred: int = 0


class Migration:
    """One guest's migration (see the module docstring).

    The guest runs from sim time 0; the migration starts when the source endpoint's ``migrate``
    starts :func:`sim.engine.precopy.migrate` with the parameters and capabilities in force.
    """

    def __init__(self, env: simpy.Environment, scenario: Scenario, recorder: Recorder,
                 rng: np.random.Generator, link: Route,
                 progress: Callable[[float, float], None] | None = None,
                 faults: Iterable[FaultSpec] = ()) -> None:
        self.env = env
        self.scenario = scenario
        self.spec: MigrationSpec = scenario.migration  # the parameters in force
        self.rec = recorder
        self.progress = progress
        self.link = link
        self.guest = Guest(scenario.vm, rng)
        self.page_size = scenario.vm.page_size
        self.workload = make_workload(scenario.workload, self.guest.pages, self.page_size)
        self.workload.prepare(self.guest)
        self.state = MigrationState(recorder, self.page_size, t_migrate=self.spec.start,
                                    expected_downtime=self.spec.downtime_limit)
        self.bitmap = MigrationBitmap(self.guest.pages, self.spec.clear_bitmap_shift)
        # Content seeds come from their own stream, so exact and modelled runs of one scenario
        # write the same pages at the same times.
        self.writes = WriteBuffer(self.guest, self.bitmap, self.workload, scenario.workload, rng,
                                  np.random.default_rng([scenario.seed, 1]), self._write_scale)
        #: the destination's RAM (exact mode; in modelled mode the source's, never compared)
        self.dest = np.zeros_like(self.guest.memory) if self.guest.exact else self.guest.memory
        self.dest_written: np.ndarray | None = None  # pages the guest wrote after a switch
        self.guest_lost = False  # the destination died after a post-copy switch
        self.in_force = InForce(frozenset())
        self.pipeline = Pipeline(scenario, self.guest, self.bitmap, self.writes, self.dest,
                                 self.state)
        self.pipeline.configure(self.spec, self.in_force)
        self.throttle: Throttle = NoThrottle(self.state, scenario.vm, self.workload,
                                             lambda: self.spec, recorder)
        self.window = RateWindow()
        self.period = DirtyRatePeriod()
        self.stall = 0.0  # source-thread time owed to bitmap syncs, paid before the next send
        self.cancel_requested = False
        self.cancel_reason = "migrate_cancel"  # the failure_reason a requested cancel records
        self.paused_at: float | None = None  # when a management ``stop`` paused the guest
        self.postcopy_requested = False  # migrate-start-postcopy, read by the post-copy trigger
        self.vm_paused = False  # management's ``stop`` (until ``cont``)
        self.switchover_gate: simpy.Event | None = None  # pre-switchover: migrate-continue
        #: destination crashes and cancels aimed at this guest (link faults live in the Link)
        self.faults = [f for f in faults if f.kind in ("destination_crash", "cancel")]
        self._fired: list[FaultSpec] = []

    def _write_scale(self) -> float:
        """The share of its nominal write rate the guest runs at now."""
        if not self.guest.running:
            return 0.0
        return self.throttle.write_share()

    @property
    def caps(self) -> frozenset[str]:
        """The capabilities in force on the source."""
        return self.in_force.capabilities

    @property
    def return_path(self) -> bool:
        return self.in_force.is_enabled("return-path")

    @property
    def pending_bytes(self) -> int:
        return self.bitmap.n_pending * self.page_size

    # --- commands (from the endpoints) --------------------------------------------------------

    def set_parameters(self, spec: MigrationSpec) -> None:
        """New parameters during a migration (REF §6.2): ``max-bandwidth`` applies at the next
        chunk, ``downtime-limit`` at the next window, a new cache size flushes the cache."""
        resized = spec.xbzrle_cache_size != self.spec.xbzrle_cache_size
        if resized and self.pipeline.xbzrle_on:
            self.pipeline.configure(spec, self.in_force)  # a MemoryError leaves all as it was
        self.spec = spec
        self.link.set_cap(self, rate_cap(self))

    def window_budget(self) -> float:
        """Bytes a rate-limit window lets through (inf: unlimited; multifd: whole packets)."""
        return self.pipeline.window_budget(max_bandwidth(self.spec), WINDOW_S)

    def request_cancel(self, reason: str = "migrate_cancel") -> None:
        """``migrate_cancel``: ``cancelling`` now, ``cancelled`` when the running chunk ends.
        As in QEMU's migrate_fd_cancel, any running state can be cancelled, stop-and-copy
        (``device``) too: the source's guest then runs again. ``reason`` is the runs table's
        ``failure_reason`` (a controller that failed names itself)."""
        if (self.state.status in RUNNING and self.state.status != "cancelling"
                and not self.cancel_requested):
            self.cancel_requested = True
            self.cancel_reason = reason
            self.state.set_status("cancelling", self.env.now)
            self.request_continue()  # a migration waiting in pre-switchover wakes to cancel

    def request_continue(self) -> None:
        """``migrate-continue``: a switchover waiting in ``pre-switchover`` goes on."""
        if self.switchover_gate is not None and not self.switchover_gate.triggered:
            self.switchover_gate.succeed()

    def pause_guest(self) -> None:
        """Management's ``stop``: the vCPUs stop now; they stay stopped after a migration that
        fails or is cancelled, until :meth:`resume_guest`. The paused time counts as guest CPU
        lost (every vCPU) until ``cont`` or the switchover's own stop (:meth:`end_pause`).
        Model note: writes of the running chunk (at most 50 ms) already applied stay applied."""
        self.vm_paused = True
        if self.guest.running and not self.state.status.startswith("postcopy"):
            now = self.env.now
            self.writes.apply_until(now)
            self.guest.running = False
            self.writes.drop()
            if self.paused_at is None:
                self.paused_at = now

    def resume_guest(self) -> None:
        """Management's ``cont``: the vCPUs run again, unless the migration holds them stopped
        (switchover, post-copy, completed)."""
        self.vm_paused = False
        held = self.state.status in ("pre-switchover", "device", "completed") or \
            self.state.status.startswith("postcopy")
        if not self.guest.running and not held:
            now = self.env.now
            self.end_pause(now)
            self.guest.running = True
            self.writes.restart_at(now)

    def restart_source_guest(self) -> None:
        """After a failed or cancelled migration the source's guest runs again if it ran before
        (management's ``stop`` holds it), writing from now on."""
        if not self.guest.running and not self.vm_paused:
            self.guest.running = True
            self.writes.restart_at(self.env.now)

    def renew(self) -> None:
        """A new migration of this guest after a cancel or a failure: fresh state (the bitmap,
        pipeline and throttle are set up again by the migration's setup)."""
        self.state.renew()
        self.cancel_requested = self.postcopy_requested = False
        self.stall = 0.0
        self.window, self.period = RateWindow(), DirtyRatePeriod()
        self.dest_written = None

    def request_postcopy(self) -> None:
        """``migrate-start-postcopy``: the switch happens at the next iteration (REF §5.1)."""
        self.postcopy_requested = True

    def end_pause(self, t: float) -> None:
        """A management pause ends at ``t`` (its ``cont``, or the switchover's own stop)."""
        if self.paused_at is not None:
            self.state.guest_cpu_lost_s += (t - self.paused_at) * self.scenario.vm.vcpus
            self.paused_at = None

    def refuse(self, reason: str) -> None:
        """The migration could not start (a refused command while setting it up)."""
        self.state.t_migrate = self.env.now
        self.state.set_status("setup", self.env.now)
        self.fail(reason, reason)

    # --- shared verbs of the phases -----------------------------------------------------------

    def sync(self, reason: str) -> None:
        """Dirty-bitmap sync (REF §1.5): merge D into B, open a pass, update the dirty rate."""
        state, period = self.state, self.period
        before = self.bitmap.n_pending
        newly = self.bitmap.sync(self.guest)
        self.stall += (self.guest.pages * self.scenario.source_cpu.sync_per_page
                       + tcg_sync_wait(self.scenario.accelerator, self.scenario.vm.vcpus,
                                       self.state.throttle_pct, self.guest.running))
        now = self.env.now
        period.newly += newly
        if now - period.start >= DIRTY_RATE_PERIOD_S:
            state.dirty_pages_rate = period.newly / (now - period.start)
            self.throttle.on_period(now, period.newly * self.page_size,
                                    state.transferred - period.transferred)
            self.period = DirtyRatePeriod(now, 0, state.transferred)
        state.open_pass(now, self.bitmap.n_pending)
        self.rec.event(now, "source", "dirty-sync",
                       f"reason={reason} pending_before_bytes={before * self.page_size} "
                       f"pending_after_bytes={state.dirty_bytes_last_sync} "
                       f"threshold_bytes={state.threshold:.0f} "
                       f"transferred_bytes={state.transferred}")

    def send(self, t_limit: float, byte_budget: float, last_stage: bool, rate: float) -> Chunk:
        """One chunk through the pipeline, counted in the pass, the window and the totals."""
        state = self.state
        chunk = self.pipeline.send(self.env.now, t_limit, byte_budget, last_stage, rate,
                                   state.passes[-1].counters)
        sent = int(chunk.sent)
        state.transferred += sent
        self.window.bytes += chunk.sent
        self.window.pages += chunk.pages_sent
        if last_stage:
            state.downtime_bytes += sent
        else:
            state.precopy_bytes += sent
        return chunk

    def pay_stall(self) -> Generator[simpy.Event, None, None]:
        """The thread's time owed to bitmap syncs passes before it sends again (the guest runs
        on, and in stop-and-copy it adds to the downtime)."""
        stall, self.stall = self.stall, 0.0
        if stall > 0:
            yield from self.idle_until(self.env.now + stall)

    def idle_until(self, t: float) -> Generator[simpy.Event, None, None]:
        if t > self.env.now:
            self.writes.apply_until(t)
            yield self.env.timeout(t - self.env.now)

    def next_change(self, now: float) -> float:
        """The next time the link's rate changes or a fault is due: chunks and waits end there."""
        change = self.link.next_change_after(now)
        for f in self.faults:
            if now < f.at < change and f not in self._fired:
                change = f.at
        return change

    def due_fault(self, now: float) -> str | None:
        """Fire the faults that are due (each once): a cancel is management's migrate_cancel; a
        destination crash is returned for the caller to act on."""
        crash = None
        for f in self.faults:
            if f.at <= now and f not in self._fired:
                self._fired.append(f)
                if f.kind == "cancel":
                    self.request_cancel()
                else:
                    crash = f.kind
        return crash

    # --- endings ------------------------------------------------------------------------------

    def encoder_stats(self) -> None:
        """One event per plug-in in force: its records and wire bytes (the runs table sums)."""
        counts = self.state.plugin_counts
        for enc, (pages, nbytes) in zip(self.pipeline.plugins, counts, strict=True):
            self.rec.event(self.env.now, "source", "encoder-stats",
                           f"{enc.name} pages={pages} bytes={nbytes}")

    def complete(self, t_destination: float) -> None:
        """Success: the destination runs the guest from ``t_destination`` on."""
        state, now = self.state, self.env.now
        state.total_time = now - state.t_migrate
        state.close_pass(now)
        state.set_dest_status("completed", t_destination)
        self.encoder_stats()
        self.guest.versions_unread = False  # the guest's writes count again
        state.set_status("completed", now)

    def fail(self, reason: str, source_error: str) -> None:
        state, now = self.state, self.env.now
        self.throttle.end(now)
        state.failure_reason = reason
        state.source_error = source_error
        self.rec.event(now, "source", "error", source_error)
        # Everything sent for a failed migration was sent for nothing.
        self.rec.event(now, "source", "bytes-wasted", str(state.transferred))
        self.restart_source_guest()
        state.total_time = now - state.t_migrate
        state.close_pass(now)
        self.encoder_stats()
        self.guest.versions_unread = False  # the guest's writes count again
        state.set_status("failed", now)

    def cancel(self, reason: str) -> None:
        state, now = self.state, self.env.now
        self.throttle.end(now)
        if state.status != "cancelling":
            state.set_status("cancelling", now)
        self.encoder_stats()
        self.guest.versions_unread = False  # the guest's writes count again
        state.set_status("cancelled", now)
        state.failure_reason = reason
        state.total_time = now - state.t_migrate
        state.close_pass(now)
        if state.dest_status not in ("none", "failed"):
            state.set_dest_status("failed", now + self.link.latency_s)

    # --- what the destination holds -----------------------------------------------------------

    def pages_lost(self) -> int:
        """Pages whose content the VM that runs now does not have.

        Pre-copy never loses pages: if it fails or is cancelled the source runs on with all of
        them. After a crash in post-copy, every page the guest wrote on the destination is lost.
        After a completed exact-mode run, the destination's RAM is compared with the source's
        byte for byte and every differing page counts.
        """
        if self.guest_lost and self.dest_written is not None:
            return int(np.count_nonzero(self.dest_written))  # their only copy died
        if self.state.status != "completed" or not self.guest.exact:
            return 0
        return self.pages_differing()

    def pages_differing(self) -> int:
        """Exact mode: pages where the destination's RAM differs from the source's."""
        return int(np.count_nonzero(
            (self.guest.memory64 != self.dest.view(np.uint64)).any(axis=1)))


def rate_cap(mig: Migration) -> float:
    """:meth:`Migration.window_budget` as the link's cap in bytes/s (0: unlimited)."""
    budget = mig.window_budget()
    return budget / WINDOW_S if math.isfinite(budget) else 0.0
