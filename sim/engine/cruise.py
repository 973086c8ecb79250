"""Cruising: many turns of the live loop in one compiled call, and fleets stepped in time order.

A pre-copy migration spends most of its turns doing the same thing: close the 100 ms window
when due, find nothing to decide, send one chunk of at most 50 ms at the link's share. Each turn
through :func:`sim.engine.precopy._live` costs about 13 µs of Python and SimPy around a chunk
whose own work is a microsecond; a fleet of a thousand guests each with a thousandth of a link
sends tens of millions of chunks. :func:`cruise_turns` runs those turns in one compiled loop,
with the same arithmetic in the same order as the Python turn, and stops *before* any turn that
needs Python: a sync (the pending bytes below the threshold), nothing pending, a spent window
budget, a fault, a periodic sync, a deadline or a link change coming, or a buffer running short.
The Python loop then does that turn itself, exactly as before.

**Why the tables do not change.** A turn reads the link's share when its chunk starts (the
model of :class:`sim.network.PathLink`); the share changes only when a flow joins, leaves or
changes its cap, or a link's capacity changes. So a migration may run ahead of SimPy's clock as
long as no such change can come before the turns it runs. :class:`Cruise` (one per network)
orders the cruising migrations by time and lets each run turns that start before

* the next SimPy event (anything that is not a cruising migration: a migration doing a Python
  turn of its own making, a command, a fault, a migration starting), and
* the earliest time any *other* migration in the coordinator could change the network
  (``quiet``): at least its time if its deadline, a fault or a link change is due; else a
  lower bound from its pages. It leaves the network only after a switchover, which needs the
  pending bytes at a sync at or under the threshold, so before it every page pending or
  dirtied since the last sync that is not zero must go at ``raw`` bytes at its share (a
  thousand busy guests each cruise much of a pass in a call); nothing bounds it if a cheaper
  record (XBZRLE) could carry them.

A migration that stops for a Python turn (a sync below the threshold, nothing pending, a spent
budget, a fault...) is *held* by the coordinator until that turn's time, not put on SimPy's
queue, so the others stay bounded by its quiet time, not by its turn: a sync decides nothing for
the other guests. The sync's stall is paid in the cruise (the Python loop only pays it).

A migration always runs the turn at its own time (that is the turn the Python loop would run
now). A join, leave or cap change makes every bound computed before it stale (a share may
rise): the coordinator then bounds each migration by its own time until it has run again.
"""

from __future__ import annotations

import bisect
import heapq
import math
import weakref
from typing import TYPE_CHECKING

import numpy as np
import simpy
from numba import njit
from simpy.events import URGENT  # the coordinator runs before anything else due at its time

from .. import bits
from . import kernel
from .migration import MAX_WAIT_S, WINDOW_S
from .writes import STEP_WRITES

if TYPE_CHECKING:
    from ..network import Network
    from .migration import Migration
    from .writes import WriteBuffer

#: why :func:`cruise_turns` stopped
BOUND, OWN, IDLE, READY, EMPTY, ROWS_FULL = 10, 11, 12, 13, 14, 15



@njit(inline="always")
def _close_window(now, win, stats, row, avail_bw, downtime_limit, dirty_rate,
                  dirty_bytes_last_sync, pending_bytes, transferred):
    """:func:`sim.engine.precopy.close_window`'s arithmetic: ``stats``, one samples ``row``, a
    new window."""
    length = now - win[0]
    bandwidth = win[1] / length if length > 0 else 0.0
    stats[0] = bandwidth
    stats[1] = win[2] / length if length > 0 else 0.0
    expected_bw = avail_bw if avail_bw != 0 else bandwidth
    stats[2] = expected_bw * downtime_limit
    if dirty_rate > 0 and win[1] > 10000 and expected_bw > 0:
        stats[3] = dirty_bytes_last_sync / expected_bw
    row[0] = now
    row[1] = bandwidth
    row[2] = stats[2]
    row[3] = pending_bytes
    row[4] = stats[3]
    row[5] = transferred
    win[0] = now
    win[1] = 0.0
    win[2] = 0.0


# cruise_turns: live-loop turns from ``now`` (see the module docstring), each as
# sim.engine.precopy._live and close_window do it:
#   0. stop (BOUND) at ``bound``, but for the first turn;
#   1. close the window when due: ``stats = (bandwidth, pages/s, threshold, expected downtime)``
#      and one samples row, column ``row0 + n`` of the recorder's block ``rows`` (stop
#      ROWS_FULL at its end): ``(t, bandwidth, threshold, pending bytes, expected downtime,
#      transferred)`` and ``fill``'s three; ``win = (start, bytes, pages)``;
#   1a. pay the ``stall`` a sync left (Migration.pay_stall: the time moves on, nothing is sent,
#      the writes of that time land) and start the turn over; on the first turn only if ``pay``
#      (the Python loop had not reached its stall check yet); with the window's budget spent,
#      wait so until the window ends (or ``t_cap``);
#   2. stop (OWN) at ``own_stop`` (a fault, a periodic sync, a deadline or a link change near),
#      (IDLE) with a wait whose writes come in steps (``write_rate`` writes/s at most,
#      ``step_writes`` a step), (READY) with the pending bytes under the threshold, and (EMPTY)
#      with nothing pending;
#   3. send one chunk (kernel.draw_then_send) until ``min(now + max_wait, t_cap)``, counted in
#      ``totals = (transferred, pre-copy bytes)`` and the window.
@njit(cache=True)
def cruise_turns(now, bound, own_stop, t_cap, rate, budget, window_s, max_wait, stall, pay,
                 write_rate, step_writes, guest_page, downtime_limit, avail_bw, dirty_rate,
                 dirty_bytes_last_sync, win, totals, stats, rows, row0, fill, c0, until, scale,
                 count,
                 w_next, cursor, n_pending, round_done, generation, overhead, count_versions,
                 raw, at, params, t_buf, p_buf,
                 dirty_bits, dirty_words, dirty_count, zero_bits, version, mem, mem64,
                 pending_bits, block_count, chunk_cleared, clear_shift,
                 seed, zero_pattern, pattern, write_size, word_size, row, content_rows,
                 raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero,
                 address, age, cache_version, content, content64, xb_sizes, xb_changed,
                 xbzrle_on, cache_on, pl_flags, pl_sizes, pl_counts,
                 cpu_costs, counters, dest_mem, enc_out, received, masks):
    """Live-loop turns from ``now``, as the comment above says. A status of
    :func:`~sim.engine.kernel.draw_and_send`'s other than ``SENT`` comes back as is (the
    caller makes room and calls again: the turn starts over, its steps done so far are not
    repeated). Returns ``(status, rows used, now, start of the last turn run, draws' clock
    count, until, count, w_next, cursor, n_pending, round_done, stall left)``."""
    n_rows = 0
    first = True
    last = now
    # The argument groups, built once, of arrays whose references are not counted (see
    # kernel.borrowed): a chunk's inlined calls copy and unpack them.
    b = kernel.borrowed
    draws = (b(raw), b(at), b(params), b(t_buf), b(p_buf))
    guest = (b(dirty_bits), b(dirty_words), b(dirty_count), b(zero_bits), b(version), b(mem),
             b(mem64))
    bitmap = (b(pending_bits), b(block_count), b(chunk_cleared), clear_shift)
    content_args = (b(seed), zero_pattern, count_versions, pattern, write_size, word_size,
                    b(row), b(content_rows))
    wire = (raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero)
    cache = (b(address), b(age), b(cache_version), b(content), b(content64), b(xb_sizes),
             b(xb_changed))
    flags = (xbzrle_on, cache_on)
    plugins = (b(pl_flags), b(pl_sizes), b(pl_counts))
    dest = (b(dest_mem), b(enc_out), b(received), b(masks))
    cpu_costs, counters, win, totals, stats, rows = (b(cpu_costs), b(counters), b(win),
                                                    b(totals), b(stats), b(rows))
    while True:
        if not first and now >= bound:
            # before the window closes: at ``bound`` something else happens first (a
            # ``query-migrate``, a new ``downtime-limit``...) and this turn comes after it
            status = BOUND
            break
        if now - win[0] >= window_s - 1e-12:
            if row0 + n_rows >= rows.shape[1]:
                status = ROWS_FULL
                break
            row = rows[:, row0 + n_rows]
            _close_window(now, win, stats, row, avail_bw, downtime_limit, dirty_rate,
                          dirty_bytes_last_sync, n_pending * guest_page, totals[0])
            row[6], row[7], row[8] = fill
            n_rows += 1
        # A wait of the Python loop's: the stall a sync left, or the window's budget spent.
        waiting = stall > 0 and (pay or not first)
        t_wait = now + stall
        if not waiting:
            if now >= own_stop:
                status = OWN
                break
            if win[1] >= budget:
                waiting = True
                t_wait = min(win[0] + window_s, t_cap)
                if t_wait <= now:
                    status = IDLE
                    break
        if waiting:
            # The wait's writes are drawn up to its end and land, as the Python loop's idle
            # draws and applies them (where a draw ends decides its values, and the next sync
            # reads the log): a chunk at the wait's end with no budget sends nothing. A wait
            # whose writes the Python loop would draw in steps is left to it.
            if t_wait > until and (t_wait - until) * write_rate > step_writes:
                status = OWN if stall > 0 else IDLE
                break
            t_start = t_limit = t_wait
            room = 0.0
        else:
            if n_pending * guest_page < stats[2]:
                status = READY
                break
            if n_pending == 0:
                status = EMPTY
                break
            t_start, t_limit = now, min(now + max_wait, t_cap)
            room = budget - win[1]
            last = now
        # One call site for both: each inlined copy of the chunk costs a minute of compiling.
        status, count, w_next, c1, t_end, cursor, n_pending, round_done, sent, pages = \
            kernel.draw_then_send(
                t_limit, c0, until, scale, count, w_next, cursor, n_pending, round_done,
                t_start, rate, room, t_limit, False, generation, overhead,
                draws, guest, bitmap, content_args, wire, cache, flags, plugins, cpu_costs,
                counters, dest)
        if status == kernel.SENT:
            if t_limit > until:  # the writes up to t_limit are drawn: the clock moved
                c0 = c1
                until = t_limit
        if status != kernel.SENT:
            break
        if waiting:  # nothing was sent: the wait is over
            now = t_wait
            if stall > 0 and (pay or not first):
                stall = 0.0
            first = False
            continue
        whole = np.int64(sent)
        totals[0] += whole
        totals[1] += whole
        win[1] += sent
        win[2] += pages
        now = t_end
        first = False
    return (status, n_rows, now, last, c0, until, count, w_next, cursor, n_pending, round_done,
            stall)


@njit(cache=True)
def nonzero_to_send(pending_bits, dirty_bits, zero_bits):
    """Pages pending or dirtied since the last sync that are not zero now (popcount of
    ``(B | D) & ~Z``): each must be sent (a sync moves D into B) before the pending bytes
    can be small enough to switch over."""
    n = 0
    for i in range(pending_bits.shape[0]):
        n += bits.popcount((pending_bits[i] | dirty_bits[i]) & ~zero_bits[i])
    return n


class _Rider:
    """A migration in the coordinator: where its next turn starts, and what bounds it."""

    __slots__ = ("mig", "event", "t", "rate", "cancel_at", "deadline", "next_periodic",
                 "quiet", "nonzero", "seq", "fresh", "window_s")

    def __init__(self, mig: Migration, event: simpy.Event, cancel_at: float, deadline: float,
                 next_periodic: float, window_s: float = WINDOW_S) -> None:
        self.mig = mig
        self.event = event
        self.t = mig.env.now
        self.rate = 0.0
        self.cancel_at, self.deadline, self.next_periodic = cancel_at, deadline, next_periodic
        self.quiet = self.t
        self.nonzero = -1  # pages it must still send raw, as of its quiet time (-1: unknown)
        self.seq = 0
        self.fresh = True  # its first turn comes straight from the Python loop
        self.window_s = window_s  # the Python loop's window (a test may change it)

_COORDINATORS: weakref.WeakKeyDictionary[Network, Cruise] = weakref.WeakKeyDictionary()


class Cruise:
    """The cruising migrations of one network, advanced in time order (module docstring)."""

    def __init__(self, env: simpy.Environment, network: Network) -> None:
        self.env = env
        self.network = network
        self._by_time: list[tuple[float, int, _Rider]] = []
        self._by_quiet: list[tuple[float, int, _Rider]] = []
        self._held: list[tuple[float, int, _Rider]] = []  # stopped: their Python turn's time
        self._riders: set[_Rider] = set()
        self._seq = 0
        self._version = network.version
        self._wake_at = math.inf

    @classmethod
    def of(cls, mig: Migration) -> Cruise:
        """The coordinator of the network ``mig``'s route runs over."""
        network = mig.link.network  # type: ignore[attr-defined]
        coordinator = _COORDINATORS.get(network)
        if coordinator is None or coordinator.env is not mig.env:
            coordinator = _COORDINATORS[network] = cls(mig.env, network)
        return coordinator

    def ride(self, mig: Migration, cancel_at: float, deadline: float, next_periodic: float,
             window_s: float = WINDOW_S) -> simpy.Event | None:
        """Run ``mig``'s turns from now, its first one at once; the event fires when (and at
        the sim time) a turn needs the Python loop. None: this turn cannot cruise (a deadline
        or a change is near); the Python loop sends it."""
        rider = _Rider(mig, self.env.event(), cancel_at, deadline, next_periodic, window_s)
        if not self._advance(rider, new=True):
            return None
        self._arm()
        return rider.event

    # --- the coordinator ----------------------------------------------------------------------

    def _advance(self, rider: _Rider, new: bool = False) -> bool:
        """Cruise ``rider`` from its time to the bound; then queue it again, or hold it until
        its Python turn is due. False if it could not run a turn (nothing done, nothing
        scheduled)."""
        if self.network.version != self._version:
            self._version = self.network.version
            self._requiet()
        bound = self.env.peek()
        first = _live_first(self._by_quiet)
        if first is not None:
            bound = min(bound, first[0])
        start = rider.t
        status = self._run(rider, bound)
        if status != BOUND:
            if new and rider.t == start:
                return False  # it ran nothing: the Python loop takes this turn
            if rider.t <= self.env.now:
                rider.seq = -1
                rider.event.succeed()
                return True
        self._seq += 1
        rider.seq = self._seq
        rider.nonzero = -1  # counted afresh: its pages moved
        rider.quiet = self._quiet(rider)
        self._riders.add(rider)
        heapq.heappush(self._by_quiet, (rider.quiet, rider.seq, rider))
        # Cruising again at its time, or its Python turn then: held here, not as a SimPy
        # timeout, so that the others are bounded by its quiet time rather than by that turn.
        heapq.heappush(self._by_time if status == BOUND else self._held,
                       (rider.t, rider.seq, rider))
        return True

    def _arm(self) -> None:
        """Wake (before anything else due then) when the earliest rider's next turn or held
        Python turn is due."""
        t = math.inf
        for queue in (self._by_time, self._held):
            first = _live_first(queue)
            if first is not None:
                t = min(t, first[0])
        if t >= self._wake_at:
            return
        self._wake_at = t
        wake = simpy.Event(self.env)
        wake._ok, wake._value = True, None  # a timeout with urgent priority
        wake.callbacks.append(self._wake)
        self.env.schedule(wake, URGENT, max(0.0, t - self.env.now))

    def _wake(self, _event: simpy.Event) -> None:
        if self.env.now >= self._wake_at:
            self._wake_at = math.inf
        now = self.env.now
        # Python turns due now of migrations that something reacts to at once (a controller
        # may act at the turn's time): released first, so that the others stop at now.
        self._release(now, reactive=True)
        while (first := _live_first(self._by_time)) is not None and first[0] <= now:
            rider = heapq.heappop(self._by_time)[2]
            rider.seq = 0  # out of both queues while it runs
            self._riders.discard(rider)
            self._advance(rider)
        # The other Python turns due now (a sync, say) change nothing another migration sees
        # but through the network, which their quiet times bound: they are released after the
        # others have cruised (released first, each would stop every other at now).
        self._release(now, reactive=False)
        self._arm()

    def _release(self, now: float, reactive: bool) -> None:
        """Start the held Python turns due by ``now`` (those of reactive migrations, or the
        others)."""
        kept = []
        while (first := _live_first(self._held)) is not None and first[0] <= now:
            entry = heapq.heappop(self._held)
            rider = entry[2]
            if _reactive(rider.mig) != reactive:
                kept.append(entry)
                continue
            rider.seq = -1  # out of the quiet queue: its Python turn comes now
            self._riders.discard(rider)
            rider.event.succeed()
        for entry in kept:
            heapq.heappush(self._held, entry)

    def _requiet(self) -> None:
        """A flow joined, left or changed its cap: every quiet time assumed the old shares.
        Each waiting migration's is computed again at its share under the new flows (its pages
        have not changed since: it has not run). Bounding each by its own time instead made a
        fleet's every leave cost a call per other guest: O(guests²) calls."""
        for r in sorted(self._riders, key=lambda r: r.t):  # few re-solves across link changes
            rate = self.network.solution(r.t, stamp=False).share.get(r.mig, 0.0)
            r.quiet = self._quiet(r, rate, r.nonzero) if rate > 0 and r.nonzero >= 0 else r.t
        self._by_quiet = [(r.quiet, r.seq, r) for r in self._riders]
        heapq.heapify(self._by_quiet)

    def _quiet(self, rider: _Rider, rate: float | None = None, nonzero: int = -1) -> float:
        """A lower bound on when ``rider``'s migration can next change the network (module
        docstring): leave at a deadline, a cancel or a fault, see a link change, or leave after
        its switchover. Before that, every page pending or dirtied since the last sync that is
        not zero must go, in this pass or in the stop-and-copy (which sends at the same share),
        at ``raw`` bytes at its share; nothing bounds it if a cheaper record (XBZRLE) could
        carry them or a write can make a page zero.

        ``rate``: its share (default: the one its last turns read); ``nonzero``: the pages
        left to send raw, if known (else counted and kept on the rider)."""
        mig, t = rider.mig, rider.t
        rate = rider.rate if rate is None else rate
        quiet = min(rider.cancel_at, rider.deadline, mig.next_change(t),
                    _next_link_change(self.network, t))
        pipe = mig.pipeline
        if pipe.xbzrle_on or mig.writes.zero_pattern:
            return min(quiet, t)
        if nonzero < 0:
            nonzero = rider.nonzero = int(nonzero_to_send(
                mig.bitmap.pending_bits, mig.guest.dirty_bits, mig.guest.zero_bits))
        return min(quiet, t + nonzero * pipe.raw_bytes / rate)

    def _own_stop(self, rider: _Rider) -> float:
        """Where the Python loop must take over whatever the others do: a fault or a link
        change (the share may change), a periodic sync, a deadline near."""
        mig, t = rider.mig, rider.t
        change = min(mig.next_change(t), _next_link_change(self.network, t))
        slack = kernel_slack(mig, rider.rate)
        return min(change, rider.next_periodic, rider.cancel_at - slack, rider.deadline - slack)

    def _run(self, rider: _Rider, bound: float) -> int:
        """Cruise ``rider`` until a stop; returns why it stopped."""
        mig = rider.mig
        if mig.cancel_requested or not mig.pipeline.drawn:
            return OWN  # the Python loop's checks come first
        rider.rate = rate = mig.link.share(mig, rider.t)
        if rate <= 0:
            return OWN
        spec, state, writes, bitmap, pipe = mig.spec, mig.state, mig.writes, mig.bitmap, \
            mig.pipeline
        change = mig.next_change(rider.t)
        own_stop = self._own_stop(rider)
        t_cap = min(rider.cancel_at, rider.deadline, change)
        window = mig.window
        win = np.array([window.start, window.bytes, window.pages], np.float64)
        totals = np.array([state.transferred, state.precopy_bytes], np.int64)
        stats = np.array([state.bandwidth, state.pages_per_second, state.threshold,
                          state.expected_downtime], np.float64)
        budget = mig.window_budget()
        attempt = 0
        avail = spec.avail_switchover_bandwidth or 0.0
        while True:
            # the windows it closes go straight into the recorder's samples block
            block, row0, fill = mig.rec.sample_block(state.dirty_pages_rate, state.throttle_pct,
                                                     state.status)
            flat = pipe.drawn_args()
            draws = writes.draws
            assert draws is not None
            status, n_rows, now, last, c, until, count, w_next, cursor, n_pending, \
                round_done, mig.stall = cruise_turns(  # type: ignore[call-arg]
                    rider.t, bound, own_stop, t_cap, rate, budget, rider.window_s, MAX_WAIT_S,
                    mig.stall, not rider.fresh,
                    writes.workload.peak_writes_per_s * writes.scale(), STEP_WRITES,
                    mig.page_size, spec.downtime_limit, avail, state.dirty_pages_rate,
                    state.dirty_bytes_last_sync, win, totals, stats, block, row0, fill,
                    writes.workload.clock_count, writes.until, writes.scale(), writes.count,
                    writes.next, bitmap.cursor, bitmap.n_pending, bitmap.round_done,
                    state.sync_count, pipe.wire.chunk_overhead, mig.guest.counts_versions,
                    draws.raw, *flat,
                    state.passes[-1].counters.array, *pipe.dest_args)
            writes.set_count(count, w_next)
            if until > writes.until:
                writes.workload.advance_clock(until, c)
                writes.until = until
            bitmap.cursor, bitmap.n_pending, bitmap.round_done = cursor, n_pending, round_done
            if n_rows:
                mig.rec.samples_written(n_rows)
                if mig.progress is not None:
                    mig.progress(float(block[0, row0 + n_rows - 1]),
                                 spec.start + spec.max_sim_time)
            if last > rider.t:
                self.network.solution(last)  # the share was read there (stamps joins/leaves)
            if now != rider.t:
                attempt = 0
                rider.fresh = False  # a turn ran: the next one starts at the loop's top
            rider.t = now
            ahead = min(now + _draw_ahead(writes), t_cap)
            if status == kernel.DRAWS_SHORT:
                writes.pull_draws(ahead, attempt)
                attempt += 1
            elif status == kernel.WRITES_FULL:
                writes.room_for(ahead)
            elif status != ROWS_FULL:
                break
        window.start, window.bytes, window.pages = float(win[0]), float(win[1]), int(win[2])
        state.transferred, state.precopy_bytes = int(totals[0]), int(totals[1])
        state.bandwidth, state.pages_per_second, state.threshold, state.expected_downtime = (
            float(v) for v in stats)
        return status


#: how far ahead a cruise draws its writes' random numbers and makes room for them: 8 s (the
#: turns' own 50 ms would bring it back to Python every few chunks; at 1 s, a thousand slow
#: writers came back 157 k times for draws), but at most about this many writes (memory: 24
#: bytes a write)
DRAW_AHEAD_S, DRAW_AHEAD_WRITES = 8.0, 16384


def _draw_ahead(writes: WriteBuffer) -> float:
    rate = writes.workload.peak_writes_per_s * writes.scale()
    return min(DRAW_AHEAD_S, max(MAX_WAIT_S, DRAW_AHEAD_WRITES / rate)) if rate > 0 \
        else DRAW_AHEAD_S


def kernel_slack(mig: Migration, rate: float) -> float:
    """How far before a deadline the cruise hands over: a chunk may run a page past its 50 ms
    (and the Python loop stops a chunk that would end past a deadline)."""
    return MAX_WAIT_S + 1.0 + 2.0 * (mig.pipeline.raw_bytes + mig.pipeline.wire.chunk_overhead) \
        / rate


def _reactive(mig: Migration) -> bool:
    """Whether something subscribed to ``mig``'s events may act at their time (a controller, a
    cluster's runner): any subscriber not marked :func:`~sim.engine.state.passive`."""
    return any(getattr(cb, "acts_at_once", True) for cb in mig.state.subscribers)


def _live_first(queue: list[tuple[float, int, _Rider]]) -> tuple[float, int, _Rider] | None:
    """The first entry of a coordinator's heap that is still its rider's (a rider queued again
    leaves its old entries behind, told apart by ``seq``), dropping the stale ones before it."""
    while queue and queue[0][1] != queue[0][2].seq:
        heapq.heappop(queue)
    return queue[0] if queue else None


def _next_link_change(network: Network, t: float) -> float:
    """The next capacity or cross-traffic change on any link of ``network`` after ``t``: a
    change off a migration's path can still move its max-min share."""
    changes = network.table.changes
    i = bisect.bisect_right(changes, t)
    return changes[i] if i < len(changes) else math.inf
