"""Post-copy (REF §5.1): when to switch, the switch, and the phase after it.

:class:`PostcopyTrigger` says when management asks for the switch: by command
(``migrate-start-postcopy``), at a time, after some passes, or when a pass left no less dirty
than the one before. It is chosen once; without ``postcopy-ram`` in force it never fires.

Model notes (departures from QEMU):
* Only writes fault; reads are not modelled. The guest's write clock is not delayed by its
  stalls, so the fault count is an upper bound. Writes go to the ``vm.vcpus`` vCPUs in turn; a
  vCPU's stall is the union of its faults' stalls, cut at the end of the phase, so
  ``postcopy_stall_s`` is at most ``vcpus`` x the post-copy phase's duration.
* Exact mode does not apply the guest's writes after the switch: ``memory_match`` compares the
  destination with the source's RAM at the switch.
* Without ``postcopy-preempt`` an urgent page waits behind :data:`POSTCOPY_QUEUE` bytes of
  background data (a socket's worth of send buffer; an assumption), and, as in QEMU
  (``get_queued_page`` in ``migration/ram.c`` hands the requested page to the one page search),
  the background scan then continues from the page after the faulted one: a guest writing
  sequentially faults a few times, then finds its next pages already pushed. With a preempt
  channel the urgent page has its own search, and the background scan stays where it was.
* A link outage after the switch pauses post-copy (``postcopy-paused`` on both sides, as QEMU's
  ``postcopy_pause``). QEMU then waits for management to run ``migrate-recover`` on the
  destination and ``migrate`` with ``resume`` on the source; the model assumes management does
  so as soon as the link is back (``postcopy-recover`` for one round trip, then
  ``postcopy-active``). While paused the guest on the destination is taken as stalled: its
  vCPUs would block on the first missing page, and the model does not know which write that
  is, so the pause writes nothing.
* ``max_sim_time`` bounds post-copy too: a post-copy phase still running then ends the run as
  ``failed``, with the pages still on the source named in ``failure_reason``. Nothing is lost
  (the source holds them), but the guest could not run on without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ..capabilities import InForce
from . import kernel
from .migration import MAX_WAIT_S
from .switchover import push, stop_guest

if TYPE_CHECKING:
    from .migration import Migration

POSTCOPY_QUEUE = 256 * 1024


class PostcopyTrigger:
    """When to switch to post-copy (REF §5.1); the switch then happens at once (with RAM
    postcopiable, must-precopy bytes are under the threshold)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_(cls, in_force: InForce) -> PostcopyTrigger:
        return cls(in_force.is_enabled("postcopy-ram"))

    def wants(self, mig: Migration, now: float) -> bool:
        if not self.enabled:
            return False
        spec = mig.spec
        after = mig.state.pending_after_syncs[1:]  # the passes after the setup sync
        return (mig.postcopy_requested
                or (spec.postcopy_after is not None
                    and now - mig.state.t_migrate >= spec.postcopy_after)
                or (spec.postcopy_after_passes is not None
                    and len(after) >= spec.postcopy_after_passes)
                or (spec.postcopy_on_stall and len(after) >= 2 and after[-1] >= after[-2]))


def run(mig: Migration, deadline: float = math.inf) -> Generator[simpy.Event, None, None]:
    """The switch and the post-copy phase.

    Stop the guest, sync, send the discard list (8 bytes per page the destination holds a stale
    copy of) and the device state; the destination runs the guest one latency later (the
    downtime ends). Then the source pushes the missing pages while each guest write to a
    missing page faults it over the return path: a round trip plus the page, and without
    ``postcopy-preempt`` the wait behind ``POSTCOPY_QUEUE`` bytes of background data already in
    the socket. A destination crash now loses the guest. ``deadline`` (``max_sim_time``) ends
    the run if post-copy has not finished by then.
    """
    env, state, bitmap = mig.env, mig.state, mig.bitmap
    t_stop = yield from stop_guest(mig, "guest stopped (postcopy)", "postcopy", deadline)
    if mig.cancel_requested:  # cancelled while waiting in pre-switchover
        mig.restart_source_guest()
        mig.cancel("migrate_cancel")
        return
    if mig.guest.exact:
        # The source is stopped: what it pushes or serves from now on is its RAM as of now.
        pending = bitmap.pending
        mig.dest[pending] = mig.guest.memory[pending]
    # The discard list names the pages the destination holds stale copies of.
    sent_at_switch = 8 * bitmap.stale_behind_cursor() + mig.scenario.vm.device_state
    if (yield from push(mig, sent_at_switch, deadline, _past(deadline))) is not None:
        state.downtime = env.now - t_stop
        _out_of_time(mig)
        return
    state.transferred += sent_at_switch
    state.downtime_bytes += sent_at_switch
    start = mig.scenario.switchover_cost.start  # the destination loads the devices, starts
    t_run = env.now + mig.link.latency_s + start
    yield env.timeout(mig.link.latency_s + start)
    state.downtime = t_run - t_stop
    state.set_status("postcopy-active", env.now)
    state.set_dest_status("postcopy-active", env.now)
    # The guest runs on the destination from now on; its write clock restarts here.
    mig.guest.running = True
    mig.writes.restart_at(env.now)
    mig.dest_written = np.zeros(mig.guest.pages, np.bool_)
    state.vcpu_stalled_until = np.zeros(mig.scenario.vm.vcpus, np.float64)
    yield from _push_missing(mig, deadline)
    if state.ended:
        return
    state.end_postcopy_stalls(env.now)
    mig.complete(env.now + mig.link.latency_s)


def _push_missing(mig: Migration, deadline: float) -> Generator[simpy.Event, None, None]:
    """The background push and the remote faults, until no page is missing (or the
    destination dies, which loses the guest, or the ``deadline`` passes)."""
    env, state, bitmap, writes = mig.env, mig.state, mig.bitmap, mig.writes
    assert mig.dest_written is not None
    page_bytes = mig.scenario.wire.page_header + mig.scenario.vm.page_size
    while bitmap.n_pending > 0:
        now = env.now
        if mig.due_fault(now) == "destination_crash":
            lose_guest(mig)
            return
        if now >= deadline:
            _out_of_time(mig)
            return
        rate = mig.link.share(mig, now)
        cap = mig.spec.max_postcopy_bandwidth
        rate = min(rate, cap) if cap > 0 else rate
        if rate <= 0:
            yield from _pause(mig, deadline)
            continue
        until = min(now + MAX_WAIT_S, mig.next_change(now), deadline)
        preempt = mig.in_force.is_enabled("postcopy-preempt")
        queue = 0.0 if preempt else POSTCOPY_QUEUE
        fault_cost = 2 * mig.link.latency_s + (page_bytes + queue) / rate
        writes.generate_until(until)
        before = state.postcopy_stats[3]
        t_end, bitmap.cursor, writes.next, bitmap.n_pending = kernel.postcopy_chunk(
            bitmap.kernel_args(), mig.guest.zero_bits, writes.kernel_args(),
            (writes.next, bitmap.cursor, bitmap.n_pending), (now, rate, until),
            (page_bytes, mig.scenario.wire.zero_page, page_bytes, fault_cost, not preempt),
            mig.dest_written, state.postcopy_stats, state.vcpu_stalled_until)
        sent = int(state.postcopy_stats[3] - before)
        state.transferred += sent
        state.postcopy_bytes += sent
        mig.window.bytes += sent
        yield env.timeout(max(t_end, now) - now)


def _pause(mig: Migration, deadline: float) -> Generator[simpy.Event, None, None]:
    """The link is down after the switch: ``postcopy-paused`` until it is back (one wait, not a
    step per chunk, so an outage of any length costs the same), then the recovery handshake."""
    env, state = mig.env, mig.state
    now = env.now
    state.set_status("postcopy-paused", now)
    state.set_dest_status("postcopy-paused", now)
    mig.rec.event(now, "source", "error", "Detected IO failure for postcopy. Migration paused.")
    back = min(_link_back(mig, now), deadline)
    yield env.timeout(back - now)
    if env.now >= deadline:
        return
    # Management's migrate-recover / migrate resume=true: one round trip, then the push goes on.
    state.set_status("postcopy-recover", env.now)
    state.set_dest_status("postcopy-recover", env.now)
    yield env.timeout(min(2 * mig.link.latency_s, deadline - env.now))
    # The stalled guest wrote nothing during the pause (module notes).
    mig.writes.restart_at(env.now)
    state.set_status("postcopy-active", env.now)
    state.set_dest_status("postcopy-active", env.now)


def _link_back(mig: Migration, now: float) -> float:
    """When the link carries this migration again (inf if never): the rate changes it knows."""
    t = now
    while mig.link.share(mig, t) <= 0:
        nxt = mig.next_change(t)
        if not math.isfinite(nxt) or nxt <= t:
            return math.inf
        t = nxt
    return t


def _past(deadline: float) -> Callable[[float], str | None]:
    return lambda now: "deadline" if now >= deadline else None


def _out_of_time(mig: Migration) -> None:
    """``max_sim_time`` passed in post-copy: the run ends; the source still holds the pages the
    destination lacks, so none is lost, but the guest cannot run on without them."""
    state, now = mig.state, mig.env.now
    left = mig.bitmap.n_pending
    state.end_postcopy_stalls(now)
    state.total_time = now - state.t_migrate
    state.close_pass(now)
    state.failure_reason = (f"post-copy did not finish within max_sim_time: {left} pages still "
                            "on the source")
    state.source_error = state.failure_reason
    mig.rec.event(now, "source", "error", state.failure_reason)
    mig.encoder_stats()
    state.set_dest_status("failed", now)
    state.set_status("failed", now)


def lose_guest(mig: Migration) -> None:
    """A crash after the switch: the guest ran only on the destination, which is gone."""
    state, now = mig.state, mig.env.now
    mig.guest_lost = True
    state.end_postcopy_stalls(now)
    state.set_dest_status("failed", now)
    state.total_time = now - state.t_migrate
    state.close_pass(now)
    state.failure_reason = ("destination crashed during postcopy: the guest is lost "
                            "(no postcopy recovery modelled)")
    state.source_error = "Detected IO failure for postcopy. Migration paused."
    mig.rec.event(now, "source", "error", state.failure_reason)
    mig.guest.running = False
    state.set_status("failed", now)
