"""The pre-copy migration process: QEMU's migration thread as a SimPy process (REF §1.8).

Setup sets every page pending and syncs once. Then, turn by turn: close the 100 ms bandwidth
window when due (bandwidth → threshold = bandwidth × downtime-limit), idle to the window's end
when its ``max-bandwidth`` budget is spent, sync the dirty bitmap only when pending bytes drop
*below* the threshold, complete when they are at or under it, else send one chunk of at most
50 ms. Completion stops the guest, syncs a last time, and sends what is left plus the device
state with no rate limit; downtime is measured, not assumed.

``switchover: rounds`` is the classic policy of the papers and SimGrid instead: sync at the end
of each full pass, stop-and-copy when pending ≤ threshold or after ``max_passes`` live passes.

Model notes (where this departs from QEMU, and why):
* The migration thread's own CPU time (page scanning, bitmap syncs) is not modelled yet: pages
  leave at link rate. On links ≥ 10 Gbit/s real QEMU is often CPU-bound instead.
* Setup takes one round trip (the connection); downtime ends when the last byte has been written
  to the link, plus one round trip for the destination's SHUT message when ``return-path`` is in
  force (REF §1.6 step 6). The destination's load-and-start time is not modelled.
* Device state is sent as one block of ``vm.device_state`` bytes; QEMU's EOF/VM description
  records are folded into it.
* A destination that cannot parse a record (its version predates the encoding, REF §8.2) fails
  when that record arrives, one latency after it was sent; the source learns of it one latency
  later (the closed socket, or the SHUT message on the return path) and stops there. Bytes the
  source would have pushed in that round trip are not counted.
* Live commands (QMP) act between chunks: a parameter change or ``migrate_cancel`` takes effect
  when the running chunk (at most 50 ms) ends, and ``query-migrate`` counts a chunk's pages as
  sent from its start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field

import numpy as np
import simpy

from ..capabilities import InForce
from ..encoders import ENCODERS, plugins_in_force
from ..guest import Guest
from ..link import Link
from ..recorder import Recorder
from ..spec import FaultSpec, MigrationSpec, Scenario
from ..workloads import WriteBatch, make_workload
from . import kernel, multifd
from .content import PATTERNS, plugin_size_table, writer_spec, xbzrle_size_table
from .profiles import max_bandwidth, profile

WINDOW_S = 0.1  # BUFFER_DELAY: bandwidth window and rate-limit period
MAX_WAIT_S = 0.05  # MAX_WAIT: longest single chunk
DIRTY_RATE_PERIOD_S = 1.0  # dirty-rate statistics update at syncs at least this far apart
PERIODIC_SYNC_S = 5.0  # auto-converge's periodic sync timer (QEMU 9.2+)
# Post-copy without postcopy-preempt: background bytes an urgent page waits behind (a socket's
# worth of send buffer; an assumption, stated in the README).
POSTCOPY_QUEUE = 256 * 1024



@dataclass
class _PassStats:
    number: int
    t_start: float
    dirty_pages_at_sync: int
    throttle_pct: float
    counters: np.ndarray = field(default_factory=lambda: np.zeros(kernel.N_COUNTERS, np.int64))


# QEMU's RAM_SAVE_FLAG_XBZRLE: a destination that predates it reports the unknown flag (REF §8.2)
XBZRLE_FLAG = 0x40


#: in-band negotiation at setup: yields SimPy events, returns what was agreed or an error text
Handshake = Callable[["Migration"], Generator[simpy.Event, None, "InForce | str"]]


class Migration:
    """One guest's migration state: guest, workload, bitmaps, counters, and its Recorder.

    The guest runs from sim time 0; :meth:`run` is the migration itself, started by the source
    endpoint's ``migrate`` (:mod:`sim.endpoints`) with the parameters and capabilities in force.
    """

    def __init__(self, env: simpy.Environment, scenario: Scenario, recorder: Recorder,
                 rng: np.random.Generator, link: Link,
                 progress: Callable[[float, float], None] | None = None,
                 faults: Iterable[FaultSpec] = ()) -> None:
        self.env = env
        self.sc = scenario
        self.mig = scenario.migration
        self.wire = scenario.wire
        self.rec = recorder
        self.rng = rng
        self.progress = progress
        self.link = link
        self.guest = Guest(scenario.vm, rng)
        self.workload = make_workload(scenario.workload, self.guest.pages, scenario.vm.page_size)
        pattern_spec = writer_spec(scenario.workload)
        self._zero_pattern = pattern_spec.write_pattern == "zero"
        self._pattern = PATTERNS[pattern_spec.write_pattern]
        self._write_size = pattern_spec.write_size
        self._word_size = pattern_spec.word_size
        # Content seeds come from their own stream, so exact and modelled runs of one scenario
        # write the same pages at the same times.
        self._content_rng = np.random.default_rng([scenario.seed, 1])
        n = self.guest.pages
        self.page_size = scenario.vm.page_size
        self.pending = np.zeros(n, np.bool_)
        self.n_pending = 0
        self.cursor = 0
        self.clear_shift = int(self.mig.clear_bitmap_shift)
        self.chunk_cleared = np.zeros((n >> self.clear_shift) + 1, np.bool_)
        # Write buffer: writes generated up to self._w_until, applied up to index self._w_next.
        self._w = WriteBatch.empty()
        self._w_seed = np.empty(0, np.uint64)
        self._w_next = 0
        self._w_until = 0.0
        self.exact = self.guest.exact
        self.mem = self.guest.memory
        self.mem64 = self.mem.view(np.uint64)
        self.dest = np.zeros_like(self.mem) if self.exact else self.mem
        self.enc_out = np.zeros(self.page_size if self.exact else 8, np.uint8)
        self._stall = 0.0  # source-thread time owed to bitmap syncs, paid before the next send
        # Post-copy: (remote faults, stall seconds, pages pushed, wire bytes) after the switch.
        self.postcopy_stats = np.zeros(4, np.float64)
        self.postcopy_bytes = 0
        self.postcopy_requested = False  # migrate-start-postcopy
        self._pending_after_syncs: list[int] = []
        self._dest_written: np.ndarray | None = None  # pages the guest wrote after the switch
        self.in_force = InForce(frozenset())
        self.xbzrle_started = False
        self.pl_counts = np.zeros((0, 2), np.int64)
        self.broken_encoder: str | None = None  # whose record the destination could not parse
        #: destination crashes and cancels aimed at this guest (link faults live in the Link)
        self.faults: list[FaultSpec] = [f for f in faults
                                        if f.kind in ("destination_crash", "cancel")]
        self._fired: list[FaultSpec] = []
        self._configure_encoders()
        # Statistics.
        self.sync_count = 0
        self.transferred = 0
        self.precopy_bytes = 0
        self.downtime_bytes = 0
        self.threshold = 0.0
        self.bandwidth = 0.0
        self.pages_per_second = 0.0
        self.expected_downtime = self.mig.downtime_limit
        self.dirty_pages_rate = 0.0
        self.dirty_bytes_last_sync = 0
        self._period_start = 0.0
        self._period_newly = 0
        self._period_xfer = 0  # bytes transferred when the period began
        # Auto-converge / dirty-limit (REF §4): the non-resetting trigger counter, the throttle
        # in force (% of CPU taken from the guest, or of its writes held back by dirty-limit),
        # and the guest CPU time it cost (vCPU-seconds).
        self._trigger_count = 0
        self.throttle_pct = 0.0
        self.max_throttle_pct = 0.0
        self.guest_cpu_lost = 0.0
        self._throttle_t = 0.0
        self._next_periodic = math.inf
        self._syncs_at_tick = 0
        self._window_start = 0.0
        self._window_bytes = 0.0
        self._window_pages = 0
        self.passes: list[_PassStats] = []
        self.status = "none"
        self.dest_status = "none"
        self.failure_reason = ""
        self.source_error = ""
        self.cancel_requested = False
        self.t_migrate = self.mig.start
        self.setup_time = 0.0
        self.total_time = 0.0
        self.downtime = 0.0

    @property
    def caps(self) -> frozenset[str]:
        """The capabilities in force on the source."""
        return self.in_force.capabilities

    def _configure_encoders(self) -> None:
        """(Re)build the source's page cache (REF §2.5) and the plug-in encoders in force.

        The cache exists whenever XBZRLE or a delta plug-in is in force; resizing it
        (``xbzrle-cache-size`` during a migration) empties it.
        """
        self._configure_stream()
        self.xbzrle_on = self.in_force.is_enabled("xbzrle")
        self.plugins = [cls() for cls in plugins_in_force(self.in_force.capabilities)]
        self.cache_on = self.xbzrle_on or any(e.needs_previous for e in self.plugins)
        slots = max(1, self.mig.xbzrle_cache_size // self.page_size) if self.cache_on else 1
        self.slot_addr = np.full(slots, -1, np.int64)
        self.slot_age = np.zeros(slots, np.int64)
        self.slot_version = np.zeros(slots, np.uint32)
        self.cache_data = (np.zeros((slots, self.page_size), np.uint8)
                           if self.exact and self.cache_on else np.zeros((1, 8), np.uint8))
        self.cache64 = self.cache_data.view(np.uint64)
        self.xb_sizes = np.full((1, 1), -1, np.int32)
        if self.xbzrle_on and not self.exact:
            self.xb_sizes = xbzrle_size_table(self.sc.workload, self.page_size)
        # Plug-ins (DESIGN §9): (needs_previous, record header, destination cannot decode).
        n = len(self.plugins)
        self.pl_flags = np.array(
            [[int(e.needs_previous), int(e.header),
              int(e.capability not in self.in_force.dest_decodes)] for e in self.plugins],
            np.int64).reshape(n, 3)
        if self.exact or n == 0:
            self.pl_sizes = np.full((n, 1, 1), -1, np.int32)
        else:
            self.pl_sizes = np.stack([plugin_size_table(type(e), self.sc.workload,
                                                        self.page_size) for e in self.plugins])
        if len(self.pl_counts) != n:
            self.pl_counts = np.zeros((n, 2), np.int64)  # per plug-in: (records, wire bytes)
        self.broken_encoder = None

    def _configure_stream(self) -> None:
        """Record sizes and the source thread's costs: one stream, or multifd's packets over
        channels (:mod:`sim.multifd`). Costs are seconds per page scanned, raw page copied,
        XBZRLE comparison and XBZRLE output byte (the zero test is in the scan when it runs)."""
        cpu, page = self.sc.source_cpu, self.page_size
        if self.in_force.is_enabled("multifd"):
            self.raw_bytes, self.zero_bytes, self.cpu_costs = multifd.wire_and_cpu(
                self.mig, cpu, self.sc.workload, page)
            return
        self.raw_bytes, self.zero_bytes = self.wire.page_header + page, self.wire.zero_page
        scan = page / cpu.scan_rate if cpu.scan_rate > 0 else 0.0
        self.cpu_costs = np.array([
            cpu.per_page + (scan if self.mig.zero_page_detection != "none" else 0.0),
            page / cpu.copy_rate if cpu.copy_rate > 0 else 0.0,
            page / cpu.xbzrle_rate if cpu.xbzrle_rate > 0 else 0.0,
            cpu.xbzrle_per_byte], np.float64)

    def set_parameters(self, spec: MigrationSpec) -> None:
        """New parameters during a migration (REF §6.2): ``max-bandwidth`` applies at the next
        chunk, ``downtime-limit`` at the next window, a new cache size flushes the cache."""
        resized = spec.xbzrle_cache_size != self.mig.xbzrle_cache_size
        self.mig = spec
        self.link.set_cap(self, max_bandwidth(spec))
        if resized and self.xbzrle_on:
            self._configure_encoders()

    # --- guest writes -------------------------------------------------------------------------

    def _buffer_writes(self, t_end: float) -> None:
        """Make sure every write before ``t_end`` is in the buffer (generated once, in order)."""
        if t_end <= self._w_until:
            return
        scale = (1.0 - self.throttle_pct / 100) if self.guest.running else 0.0
        batch = self.workload.writes(self._w_until, t_end, self.rng, scale)
        self._w_until = t_end
        keep = slice(self._w_next, None)
        self._w = WriteBatch(np.concatenate([self._w.t_s[keep], batch.t_s]),
                             np.concatenate([self._w.page[keep], batch.page]))
        seeds = (self._content_rng.integers(0, 2**63, size=len(batch), dtype=np.int64)
                 .astype(np.uint64) if self.exact else np.zeros(len(batch), np.uint64))
        self._w_seed = np.concatenate([self._w_seed[keep], seeds])
        self._w_next = 0

    def _apply_writes_until(self, t_end: float) -> None:
        self._buffer_writes(t_end)
        self._w_next = kernel.apply_writes(
            self.pending, self.guest.dirty_log, self.guest.zero, self.guest.version,
            self._w.t_s, self._w.page, self._zero_pattern, self._w_seed, self._w_next, t_end,
            self.clear_shift, self.chunk_cleared, self.exact, self.mem, self._pattern,
            self._write_size, self._word_size)

    # --- events and bookkeeping ---------------------------------------------------------------

    def _set_status(self, status: str, t: float | None = None) -> None:
        self.status = status
        self.rec.event(self.env.now if t is None else t, "source", "MIGRATION", status)

    def _set_dest_status(self, status: str, t: float) -> None:
        self.dest_status = status
        self.rec.event(t, "destination", "MIGRATION", status)

    def _sync(self, reason: str) -> None:
        """Dirty-bitmap sync (REF §1.5): merge D into B, count a pass, update dirty-rate stats."""
        before = self.n_pending
        self.n_pending, newly = kernel.sync_bitmap(self.pending, self.guest.dirty_log)
        self.chunk_cleared[:] = False  # every clear-chunk must be re-armed before its next send
        self.sync_count += 1
        self._stall += self.guest.pages * self.sc.source_cpu.sync_per_page
        now = self.env.now
        self._period_newly += newly
        if now - self._period_start >= DIRTY_RATE_PERIOD_S:
            self.dirty_pages_rate = self._period_newly / (now - self._period_start)
            self._trigger_throttle(self._period_newly * self.page_size,
                                   self.transferred - self._period_xfer)
            self._period_start = now
            self._period_newly = 0
            self._period_xfer = self.transferred
        self.dirty_bytes_last_sync = self.n_pending * self.page_size
        self._pending_after_syncs.append(self.n_pending)
        self.rec.event(now, "source", "MIGRATION_PASS", str(self.sync_count))
        self.rec.event(now, "source", "dirty-sync",
                       f"reason={reason} pending_before_bytes={before * self.page_size} "
                       f"pending_after_bytes={self.dirty_bytes_last_sync} "
                       f"threshold_bytes={self.threshold:.0f} "
                       f"transferred_bytes={self.transferred}")
        self._close_pass(now)
        self.passes.append(_PassStats(self.sync_count, now, self.n_pending, self.throttle_pct))

    def _trigger_throttle(self, bytes_dirty: int, bytes_xfer: int) -> None:
        """QEMU's migration_trigger_throttle (REF §4.1): a period that dirtied more than
        ``throttle-trigger-threshold`` % of what it sent counts; every second count (the counter
        never resets otherwise) throttles the guest one step, or switches dirty-limit on."""
        auto = self.in_force.is_enabled("auto-converge")
        limit = self.in_force.is_enabled("dirty-limit")
        if not (auto or limit):
            return
        threshold = bytes_xfer * self.mig.throttle_trigger_threshold / 100
        if bytes_dirty <= threshold:
            return
        self._trigger_count += 1
        if self._trigger_count < 2:
            return
        self._trigger_count = 0
        if auto:
            self._set_throttle(self._next_throttle(bytes_dirty, threshold))
        elif self.throttle_pct == 0:
            # Dirty-limit: every vCPU may dirty at most vcpu-dirty-limit bytes/s; writes are
            # spread evenly over vCPUs, so the guest's write rate is capped at vcpus × quota.
            nominal = self.workload.writes_per_s
            cap = self.sc.vm.vcpus * self.mig.vcpu_dirty_limit / self.page_size
            if nominal > cap:
                self._set_throttle(100.0 * (1.0 - cap / nominal))

    def _next_throttle(self, bytes_dirty: int, threshold: float) -> float:
        """mig_throttle_guest_down (REF §4.2): initial, then + increment (tail-slow: no more than
        the step to the CPU share whose dirty rate meets the threshold), at most max."""
        mig = self.mig
        if self.throttle_pct == 0:
            return float(mig.cpu_throttle_initial)
        increment = float(mig.cpu_throttle_increment)
        if mig.cpu_throttle_tailslow:
            cpu_now = 100.0 - self.throttle_pct
            cpu_ideal = cpu_now * threshold / bytes_dirty
            increment = min(increment, cpu_now - cpu_ideal)
        return min(self.throttle_pct + increment, float(mig.max_cpu_throttle))

    def _set_throttle(self, pct: float) -> None:
        now = self.env.now
        self._account_throttle(now)
        self.throttle_pct = pct
        self.max_throttle_pct = max(self.max_throttle_pct, pct)
        kind = "dirty-limit" if self.in_force.is_enabled("dirty-limit") else "cpu-throttle"
        self.rec.event(now, "source", "throttle", f"{kind} {pct:g}%")

    def _account_throttle(self, now: float) -> None:
        """Add the guest CPU time the throttle took since the last change (vCPU-seconds)."""
        if self.throttle_pct > 0 and self.in_force.is_enabled("auto-converge"):
            self.guest_cpu_lost += (now - self._throttle_t) * self.throttle_pct / 100 \
                * self.sc.vm.vcpus
        self._throttle_t = now

    def _end_throttle(self) -> None:
        """Throttling stops when the migration ends, whatever the reason (REF §4.2)."""
        self._account_throttle(self.env.now)
        self.throttle_pct = 0.0

    def _close_pass(self, now: float) -> None:
        if not self.passes:
            return
        p = self.passes[-1]
        c = p.counters
        self.rec.pass_row(**{
            "pass": p.number, "t_start_s": p.t_start, "t_end_s": now,
            "dirty_pages_at_sync": p.dirty_pages_at_sync,
            "pages_sent": int(c[kernel.C_PAGES_SENT]), "bytes_sent": int(c[kernel.C_BYTES]),
            "zero_pages": int(c[kernel.C_ZERO]), "xbzrle_pages": int(c[kernel.C_ENCODED]),
            "normal_pages": int(c[kernel.C_NORMAL]), "throttle_pct": p.throttle_pct})

    def _close_window(self, now: float) -> None:
        length = now - self._window_start
        self.bandwidth = self._window_bytes / length if length > 0 else 0.0
        self.pages_per_second = self._window_pages / length if length > 0 else 0.0
        expected_bw = self.mig.avail_switchover_bandwidth or self.bandwidth
        self.threshold = expected_bw * self.mig.downtime_limit
        if self.dirty_pages_rate > 0 and self._window_bytes > 10000 and expected_bw > 0:
            self.expected_downtime = self.dirty_bytes_last_sync / expected_bw
        self.rec.sample(
            t_s=now, bandwidth_bytes_per_s=self.bandwidth, threshold_bytes=self.threshold,
            pending_bytes=self.n_pending * self.page_size,
            expected_downtime_s=self.expected_downtime,
            dirty_pages_rate=self.dirty_pages_rate, transferred_bytes=float(self.transferred),
            throttle_pct=self.throttle_pct, status=self.status)
        self._window_start = now
        self._window_bytes = 0.0
        self._window_pages = 0
        if self.progress is not None:
            self.progress(now, self.mig.start + self.mig.max_sim_time)

    def _send(self, t_limit: float, byte_budget: float, last_stage: bool,
              rate: float) -> tuple[float, float]:
        """One chunk through the kernel; returns (end time, bytes).

        If the destination cannot parse a record (XBZRLE or a plug-in's), the chunk ends right
        after the first one (the stream breaks there) and ``broken_encoder`` names the encoder.
        In exact mode a page for a plug-in comes back from the kernel; it is encoded here and
        the chunk goes on from after it.
        """
        now = self.env.now
        self._buffer_writes(t_limit if math.isfinite(t_limit) else now)
        c = np.zeros(kernel.N_COUNTERS, np.int64)
        counts_before = self.pl_counts[:, 0].copy()
        t0, sent = now, 0.0
        while True:
            t_end, self.cursor, self._w_next, self.n_pending, self.xbzrle_started, part, page, \
                slot = kernel.send_chunk(
                    self.pending, self.guest.dirty_log, self.guest.zero, self.guest.version,
                    self._w.t_s, self._w.page, self._zero_pattern, self._w_next,
                    self.cursor, self.n_pending, t0, rate, byte_budget - sent, t_limit,
                    self.clear_shift, self.chunk_cleared,
                    self.raw_bytes, self.zero_bytes, self.wire.xbzrle_header, self.page_size,
                    self.mig.zero_page_detection != "none",
                    self.xbzrle_on, self.cache_on, self.xbzrle_started, last_stage,
                    self.sync_count, self.xbzrle_on and "xbzrle" not in self.in_force.dest_decodes,
                    self.slot_addr, self.slot_age, self.slot_version, self.xb_sizes,
                    self.pl_flags, self.pl_sizes, self.pl_counts, self.cpu_costs, c,
                    self.exact, self.mem, self.mem64, self.dest, self.cache_data, self.cache64,
                    self.enc_out, self._w_seed, self._pattern, self._write_size,
                    self._word_size)
            sent += part
            if page < 0:
                break
            size, stop = self._plugin_page(page, slot, last_stage, c)
            sent += size
            c[kernel.C_BYTES] += size
            t0 = now + sent / rate
            t_end = t0
            if stop:
                break
        if self.xbzrle_on and "xbzrle" not in self.in_force.dest_decodes \
                and c[kernel.C_ENCODED] > 0:
            self.broken_encoder = "xbzrle"
        for j in np.flatnonzero(self.pl_counts[:, 0] > counts_before):
            if self.pl_flags[j, 2]:
                self.broken_encoder = self.plugins[j].name
        if sent > 0 or c[kernel.C_UNCHANGED] > 0:
            overhead = self.wire.chunk_overhead
            sent += overhead
            c[kernel.C_BYTES] += overhead
            t_end += overhead / rate
        self.passes[-1].counters += c
        self.transferred += int(sent)
        self._window_bytes += sent
        self._window_pages += int(c[kernel.C_PAGES_SENT])
        if last_stage:
            self.downtime_bytes += int(sent)
        else:
            self.precopy_bytes += int(sent)
        return t_end, sent

    def _plugin_page(self, p: int, slot: int, last_stage: bool,
                     c: np.ndarray) -> tuple[int, bool]:
        """Exact mode: page ``p`` through the plug-ins in order (a delta one only with a cache
        hit, ``slot``), else raw; the destination decodes with the plug-in's ``decode``.
        Returns (wire bytes, whether the stream broke here)."""
        page = self.mem[p]
        for j, enc in enumerate(self.plugins):
            previous = None
            if enc.needs_previous:
                if slot < 0:
                    continue
                previous = self.cache_data[slot].tobytes()
            payload = enc.encode(page.tobytes(), previous)
            if payload is None:
                continue
            if len(payload) == 0:
                c[kernel.C_UNCHANGED] += 1
                return 0, False
            size = int(self.pl_flags[j, 1]) + len(payload)
            self.pl_counts[j] += (1, size)
            c[kernel.C_PAGES_SENT] += 1
            if slot >= 0 and not last_stage:
                self.cache_data[slot] = page
                self.slot_version[slot] = self.guest.version[p]
            if self.pl_flags[j, 2]:
                return size, True
            try:
                rebuilt = enc.decode(payload, self.dest[p].tobytes() if enc.needs_previous
                                     else None)
                if len(rebuilt) != self.page_size:
                    raise ValueError(f"decoded {len(rebuilt)} bytes, not a page")
                self.dest[p] = np.frombuffer(rebuilt, np.uint8)
            except Exception:  # noqa: BLE001 - a plug-in's bug shows as a decode error
                c[kernel.C_DECODE_ERRORS] += 1
            return size, False
        c[kernel.C_NORMAL] += 1
        c[kernel.C_PAGES_SENT] += 1
        self.dest[p] = page
        return self.raw_bytes, False

    # --- the process --------------------------------------------------------------------------

    def run(self, spec: MigrationSpec, in_force: InForce, handshake: Handshake | None = None):
        """The migration, as a SimPy process started at ``migrate`` time.

        ``handshake`` (in-band negotiation) runs after the connection is up; it yields SimPy
        events and returns what it agreed (an :class:`InForce`) or an error text that fails the
        migration in setup.
        """
        env = self.env
        self.mig = spec
        self.in_force = in_force
        self._apply_writes_until(env.now)
        self.t_migrate = env.now
        self._set_status("setup")
        if self._due_fault(env.now) == "destination_crash":
            self._fail("destination crashed", "Failed to connect to the destination: "
                                              "Connection refused")
            return
        self.link.join(self, max_bandwidth(spec))
        try:
            yield from self._migrate(handshake)
        finally:
            self.link.leave(self)

    def _migrate(self, handshake: Handshake | None):  # noqa: C901 - the loop mirrors REF §1.8
        env = self.env
        deadline = env.now + self.mig.max_sim_time
        cancel_at = env.now + self.mig.max_time if self.mig.max_time is not None else math.inf
        # Setup: connect (one round trip), every page pending, the first sync (REF §1.1).
        setup = 2 * self.link.latency_s
        if setup > 0:
            yield env.timeout(setup)
            self._apply_writes_until(env.now)
        self._set_dest_status("setup", env.now - self.link.latency_s)
        if handshake is not None:
            agreed = yield from handshake(self)
            self._apply_writes_until(env.now)
            if isinstance(agreed, str):
                self._fail(agreed, agreed)
                return
            self.in_force = agreed
        self._configure_encoders()
        self.pending[:] = True
        self.n_pending = self.guest.pages
        self.guest.dirty_log[:] = False
        self._period_start = env.now
        self._period_xfer = self.transferred
        self._sync("setup")
        yield from self._pay_stall()
        self.setup_time = env.now - self.t_migrate
        self._set_status("active")
        self._set_dest_status("active", env.now + self.link.latency_s)
        self._throttle_t = env.now
        if self.in_force.is_enabled("auto-converge") and profile(self.mig.qemu_version).periodic_sync:
            self._next_periodic = env.now + PERIODIC_SYNC_S
        self._window_start = env.now
        rounds = self.mig.switchover == "rounds"
        live_passes = 0
        while True:
            now = env.now
            if now - self._window_start >= WINDOW_S - 1e-12:
                self._close_window(now)
            fault = self._due_fault(now)
            if fault == "destination_crash":
                yield from self._destination_crashed()
                return
            if self._stall > 0:
                yield from self._pay_stall()
                continue
            if now >= self._next_periodic:
                # QEMU 9.2+: with auto-converge a 5 s timer forces a sync when none happened
                # since its last tick, so the throttle check runs in long rounds too (REF §4.2).
                if self.sync_count == self._syncs_at_tick and self.sync_count >= 2:
                    self._sync("periodic")
                self._syncs_at_tick = self.sync_count
                self._next_periodic += PERIODIC_SYNC_S
            if self.cancel_requested or now >= cancel_at or now >= deadline:
                reason = ("migrate_cancel" if self.cancel_requested
                          else "max_time" if now >= cancel_at else "not converged")
                self._cancel(reason)
                return
            if self._want_postcopy(now):
                yield from self._postcopy(cancel_at, deadline)
                return
            rate_cap = max_bandwidth(self.mig)
            budget = rate_cap * WINDOW_S if rate_cap > 0 else math.inf
            window_end = self._window_start + WINDOW_S
            if self._window_bytes >= budget:
                yield from self._idle_until(min(window_end, cancel_at, deadline,
                                                self._next_change(now)))
                continue
            pending_bytes = self.n_pending * self.page_size
            # With switchover-ack on the source only, the destination's ACK never comes: the
            # loop keeps iterating until a cancel (REF §6.1).
            may_stop = not self.in_force.switchover_blocked
            if rounds:
                if self.n_pending == 0:
                    live_passes += 1
                    self._sync("round")
                    pending_bytes = self.n_pending * self.page_size
                    capped = self.mig.max_passes is not None and live_passes >= self.mig.max_passes
                    if may_stop and (pending_bytes <= self.threshold or capped):
                        yield from self._complete(cancel_at, deadline)
                        return
            else:
                if pending_bytes < self.threshold:
                    self._sync("drain")
                    pending_bytes = self.n_pending * self.page_size
                if may_stop and pending_bytes <= self.threshold:
                    yield from self._complete(cancel_at, deadline)
                    return
            if self.n_pending == 0:
                # Nothing to send and no switchover yet (threshold still 0): wait for the window.
                yield from self._idle_until(min(window_end, cancel_at, deadline,
                                                self._next_change(now)))
                continue
            rate = self.link.share(self, now)
            if rate <= 0:
                # The link is down: nothing moves until it is back (or a deadline).
                yield from self._idle_until(min(window_end, cancel_at, deadline,
                                                self._next_change(now)))
                continue
            t_limit = min(now + MAX_WAIT_S, cancel_at, deadline, self._next_change(now))
            t_end, _ = self._send(t_limit, budget - self._window_bytes, False, rate)
            yield env.timeout(t_end - now)
            if self._undecodable():
                yield from self._fail_at_destination()
                return

    def _want_postcopy(self, now: float) -> bool:
        """Management asked for the switch (REF §5.1): by command, at a time, after some
        passes, or when a pass left no less dirty than the one before. The switch then happens
        at once (with RAM postcopiable, must-precopy bytes are under the threshold)."""
        if not self.in_force.is_enabled("postcopy-ram"):
            return False
        mig = self.mig
        after = self._pending_after_syncs[1:]  # the passes after the setup sync
        return (self.postcopy_requested
                or (mig.postcopy_after is not None and now - self.t_migrate >= mig.postcopy_after)
                or (mig.postcopy_after_passes is not None
                    and len(after) >= mig.postcopy_after_passes)
                or (mig.postcopy_on_stall and len(after) >= 2 and after[-1] >= after[-2]))

    def _postcopy(self, cancel_at: float, deadline: float):
        """The switch and the post-copy phase (REF §5.1).

        Stop the guest, sync, send the discard list (8 bytes per page the destination holds a
        stale copy of) and the device state; the destination runs the guest one latency
        later (the downtime ends). Then the source pushes the missing pages while each guest
        write to a missing page faults it over the return path: a round trip plus the page, and
        without ``postcopy-preempt`` the wait behind ``POSTCOPY_QUEUE`` bytes of background
        data already in the socket. A destination crash now loses the guest.
        """
        env = self.env
        t_stop = yield from self._stop_guest("guest stopped (postcopy)", "postcopy")
        if self.exact:
            # The source is stopped: what it pushes or serves from now on is its RAM as of now.
            # (Exact mode does not apply the guest's writes after the switch; memory_match
            # compares the destination with the source's RAM at the switch.)
            self.dest[self.pending] = self.mem[self.pending]
        # The discard list names the pages the destination holds stale copies of: pending pages
        # it received before (all of them after the first full pass, else those behind the scan).
        stale = (self.n_pending if self.xbzrle_started
                 else int(np.count_nonzero(self.pending[:self.cursor])))
        sent_at_switch = 8 * stale + self.sc.vm.device_state
        yield from self._push(sent_at_switch)
        self.transferred += sent_at_switch
        self.downtime_bytes += sent_at_switch
        t_run = env.now + self.link.latency_s
        yield env.timeout(self.link.latency_s)
        self.downtime = t_run - t_stop
        self._set_status("postcopy-active")
        self._set_dest_status("postcopy-active", env.now)
        # The guest runs on the destination from now on; its write clock restarts here.
        self.guest.running = True
        self._w = WriteBatch.empty()
        self._w_seed = np.empty(0, np.uint64)
        self._w_next = 0
        self._w_until = env.now
        self.workload.resume_at(env.now)
        self._dest_written = np.zeros(self.guest.pages, np.bool_)
        page_bytes = self.wire.page_header + self.page_size
        while self.n_pending > 0:
            now = env.now
            if self._due_fault(now) == "destination_crash":
                self._lose_guest()
                return
            rate = self.link.share(self, now)
            cap = self.mig.max_postcopy_bandwidth
            rate = min(rate, cap) if cap > 0 else rate
            until = min(now + MAX_WAIT_S, self._next_change(now))
            if rate <= 0:
                yield env.timeout(until - now)
                continue
            queue = 0.0 if self.in_force.is_enabled("postcopy-preempt") else POSTCOPY_QUEUE
            fault_cost = 2 * self.link.latency_s + (page_bytes + queue) / rate
            self._buffer_writes(until)
            before = self.postcopy_stats[3]
            t_end, self.cursor, self._w_next, self.n_pending = kernel.postcopy_chunk(
                self.pending, self.guest.zero, self._w.t_s, self._w.page, self._w_next,
                self.cursor, self.n_pending, now, rate, until, page_bytes,
                self.wire.zero_page, page_bytes, fault_cost, self._dest_written,
                self.postcopy_stats)
            sent = int(self.postcopy_stats[3] - before)
            self.transferred += sent
            self.postcopy_bytes += sent
            self._window_bytes += sent
            yield env.timeout(max(t_end, now) - now)
        self.total_time = env.now - self.t_migrate
        self._close_pass(env.now)
        self._set_dest_status("completed", env.now + self.link.latency_s)
        self.encoder_stats()
        self._set_status("completed")

    def _lose_guest(self) -> None:
        """A crash after the switch: the guest ran only on the destination, which is gone."""
        self._set_dest_status("failed", self.env.now)
        self.total_time = self.env.now - self.t_migrate
        self._close_pass(self.env.now)
        self.failure_reason = ("destination crashed during postcopy: the guest is lost "
                               "(no postcopy recovery modelled)")
        self.source_error = "Detected IO failure for postcopy. Migration paused."
        self.rec.event(self.env.now, "source", "error", self.failure_reason)
        self.guest.running = False
        self._set_status("failed")

    def _pay_stall(self):
        """The thread's time owed to bitmap syncs passes before it sends again (the guest runs
        on, and in stop-and-copy it adds to the downtime)."""
        stall, self._stall = self._stall, 0.0
        if stall > 0:
            yield from self._idle_until(self.env.now + stall)

    def _idle_until(self, t: float):
        if t > self.env.now:
            self._apply_writes_until(t)
            yield self.env.timeout(t - self.env.now)

    def _next_change(self, now: float) -> float:
        """The next time the link's rate changes or a fault is due: chunks and waits end there."""
        pending = [f.at for f in self.faults if f.at > now and f not in self._fired]
        return min([self.link.next_change_after(now), *pending])

    def _due_fault(self, now: float) -> str | None:
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

    def _destination_crashed(self):
        """The destination QEMU died: its side fails now; the source sees the connection reset
        one latency later and fails, its guest running (restarted if it was stopped). Nothing is
        lost: the source still has every page."""
        self._set_dest_status("failed", self.env.now)
        if self.link.latency_s > 0:
            yield self.env.timeout(self.link.latency_s)
        self._apply_writes_until(self.env.now)
        self._fail("destination crashed", "Unable to write to socket: Connection reset by peer")

    def _undecodable(self) -> bool:
        """The last chunk carried a record the destination cannot parse."""
        return self.broken_encoder is not None

    def _fail_at_destination(self):
        """The destination met a record it cannot parse (REF §8.2): it fails when the record
        arrives; the source learns one latency later and fails too. Its guest keeps running
        (or is restarted, if the failure came during stop-and-copy)."""
        latency = self.link.latency_s
        flag = (XBZRLE_FLAG if self.broken_encoder == "xbzrle"
                else ENCODERS[str(self.broken_encoder)].record_flag)
        error = ("load of migration failed: Invalid argument: "
                 f"Unknown combination of migration flags: {flag:#x}")
        self.rec.event(self.env.now + latency, "destination", "error", error)
        self._set_dest_status("failed", self.env.now + latency)
        if 2 * latency > 0:
            yield self.env.timeout(2 * latency)
        self._apply_writes_until(self.env.now)
        self.source_error = ("Sibling indicated error 1" if self.in_force.is_enabled("return-path")
                             else "Unable to write to socket: Connection reset by peer")
        self._fail(error, self.source_error)

    def refuse(self, reason: str) -> None:
        """The migration could not start (a refused command while setting it up)."""
        self.t_migrate = self.env.now
        self._set_status("setup")
        self._fail(reason, reason)

    def request_cancel(self) -> None:
        """``migrate_cancel``: ``cancelling`` now, ``cancelled`` when the running chunk ends."""
        if self.status in ("setup", "active") and not self.cancel_requested:
            self.cancel_requested = True
            self._set_status("cancelling")

    def encoder_stats(self) -> None:
        """One event per plug-in in force: its records and wire bytes (the runs table sums)."""
        for enc, (pages, nbytes) in zip(self.plugins, self.pl_counts, strict=True):
            self.rec.event(self.env.now, "source", "encoder-stats",
                           f"{enc.name} pages={pages} bytes={nbytes}")

    def _fail(self, reason: str, source_error: str) -> None:
        self._end_throttle()
        self.failure_reason = reason
        self.source_error = source_error
        self.rec.event(self.env.now, "source", "error", source_error)
        # Everything sent for a failed migration was sent for nothing.
        self.rec.event(self.env.now, "source", "bytes-wasted", str(self.transferred))
        self.guest.running = True
        self.total_time = self.env.now - self.t_migrate
        self._close_pass(self.env.now)
        self.encoder_stats()
        self._set_status("failed")

    def _cancel(self, reason: str) -> None:
        self._end_throttle()
        if self.status != "cancelling":
            self._set_status("cancelling")
        self.encoder_stats()
        self._set_status("cancelled")
        self.failure_reason = reason
        self.total_time = self.env.now - self.t_migrate
        self._close_pass(self.env.now)
        if self.dest_status not in ("none", "failed"):
            self._set_dest_status("failed", self.env.now + self.link.latency_s)

    def _stop_guest(self, detail: str, sync_reason: str) -> Generator[simpy.Event, None, float]:
        """The switchover's start, for stop-and-copy and post-copy alike: the thread finishes
        the sync that decided it, the vCPUs stop (no more writes, no more throttle), the state
        goes to ``device`` (QEMU 10.0+, REF §7.5) and a last sync collects what was dirtied.
        Returns when the guest stopped."""
        yield from self._pay_stall()
        t_stop = self.env.now
        self._apply_writes_until(t_stop)
        self._end_throttle()
        self.guest.running = False
        # Writes buffered beyond the stop never happen: the vCPUs are stopped.
        self._w = WriteBatch.empty()
        self._w_seed = np.empty(0, np.uint64)
        self._w_next = 0
        self.rec.event(t_stop, "source", "switchover", detail)
        if profile(self.mig.qemu_version).device_state:
            self._set_status("device")
        self._sync(sync_reason)
        yield from self._pay_stall()
        return t_stop

    def _interrupted(self, now: float, cancel_at: float, deadline: float) -> str | None:
        """What ends a stop-and-copy early: a destination crash, or a cancel and its reason."""
        if self._due_fault(now) == "destination_crash":
            return "destination_crash"
        if self.cancel_requested:
            return "migrate_cancel"
        if now >= cancel_at:
            return "max_time"
        if now >= deadline:
            return "not converged"
        return None

    def _push(self, nbytes: float, horizon: float = math.inf,
              check: Callable[[float], str | None] | None = None,
              ) -> Generator[simpy.Event, None, str | None]:
        """Send a block (device state, a discard list) at the link's share, in pieces that end
        where the rate changes, waiting out outages. Returns what ``check`` reported if it
        stopped the block, else None."""
        env = self.env
        left = float(nbytes)
        while left > 0:
            now = env.now
            stopped = check(now) if check is not None else None
            if stopped is not None:
                return stopped
            rate = self.link.share(self, now)
            until = min(self._next_change(now), horizon)
            if rate <= 0:
                yield env.timeout(until - now)
                continue
            dt = min(left / rate, until - now)
            left = 0.0 if dt >= left / rate else left - dt * rate
            yield env.timeout(dt)
        return None

    def _complete(self, cancel_at: float = math.inf, deadline: float = math.inf):
        """Stop-and-copy (REF §1.6): stop the guest, last sync, send the rest at full speed.

        The rest goes out in pieces that end where the link's rate changes or a fault is due, so
        a link that drops or dies during the downtime stretches it; a crash or cancel in this
        phase fails or cancels the migration and restarts the source's guest.
        """
        env = self.env
        t_stop = yield from self._stop_guest("guest stopped", "completion")
        stopped = None
        while self.n_pending > 0:
            now = env.now
            stopped = self._interrupted(now, cancel_at, deadline)
            if stopped is not None:
                break
            rate = self.link.share(self, now)
            until = min(self._next_change(now), cancel_at, deadline)
            if rate <= 0:
                yield env.timeout(until - now)  # the link is down: wait for it
                continue
            t_end, _ = self._send(until, math.inf, True, rate)
            yield env.timeout(t_end - now)
            if self._undecodable():
                yield from self._fail_at_destination()
                return
        if stopped is None:
            stopped = yield from self._push(
                self.sc.vm.device_state, min(cancel_at, deadline),
                lambda now: self._interrupted(now, cancel_at, deadline))
        if stopped == "destination_crash":
            yield from self._destination_crashed()
            return
        if stopped is not None:
            self._cancel(stopped)
            self.guest.running = True  # QEMU restarts the source's guest
            return
        device = self.sc.vm.device_state
        self.transferred += device
        self.downtime_bytes += device
        self.passes[-1].counters[kernel.C_BYTES] += device
        t_loaded = env.now + self.link.latency_s  # the destination has the last byte
        if self.return_path:
            yield env.timeout(2 * self.link.latency_s)
        self.downtime = env.now - t_stop
        self.total_time = env.now - self.t_migrate
        self._close_pass(env.now)
        self._set_dest_status("completed", t_loaded)
        self.encoder_stats()
        self._set_status("completed")

    @property
    def return_path(self) -> bool:
        return self.in_force.is_enabled("return-path")

    @property
    def totals(self) -> np.ndarray:
        """Counters over the whole migration: the sum over its passes."""
        total = np.zeros(kernel.N_COUNTERS, np.int64)
        for p in self.passes:
            total += p.counters
        return total

    def pages_lost(self) -> int:
        """Pages whose content the VM that runs now does not have.

        Pre-copy never loses pages: if it fails or is cancelled the source runs on with all of
        them. After a completed exact-mode run, the destination's RAM is compared with the
        source's byte for byte and every differing page counts.
        """
        if self._dest_written is not None and self.status == "failed":
            return int(np.count_nonzero(self._dest_written))  # their only copy died
        if self.status != "completed" or not self.exact:
            return 0
        return self.pages_differing()

    def pages_differing(self) -> int:
        """Exact mode: pages where the destination's RAM differs from the source's."""
        return int(np.count_nonzero((self.mem64 != self.dest.view(np.uint64)).any(axis=1)))
