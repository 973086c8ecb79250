"""Post-copy (REF §5.1): when to switch, the switch, and the phase after it.

:class:`PostcopyTrigger` says when management asks for the switch: by command
(``migrate-start-postcopy``), at a time, after some passes, or when a pass left no less dirty
than the one before. It is chosen once; without ``postcopy-ram`` in force it never fires.

Model notes (departures from QEMU):
* Only writes fault; reads are not modelled. The guest's write clock is not delayed by its
  stalls, so the fault count is an upper bound.
* Exact mode does not apply the guest's writes after the switch: ``memory_match`` compares the
  destination with the source's RAM at the switch.
* Without ``postcopy-preempt`` an urgent page waits behind :data:`POSTCOPY_QUEUE` bytes of
  background data (a socket's worth of send buffer; an assumption).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ..capabilities import InForce
from . import kernel
from .migration import MAX_WAIT_S
from .switchover import stop_guest

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


def run(mig: Migration) -> Generator[simpy.Event, None, None]:
    """The switch and the post-copy phase.

    Stop the guest, sync, send the discard list (8 bytes per page the destination holds a stale
    copy of) and the device state; the destination runs the guest one latency later (the
    downtime ends). Then the source pushes the missing pages while each guest write to a
    missing page faults it over the return path: a round trip plus the page, and without
    ``postcopy-preempt`` the wait behind ``POSTCOPY_QUEUE`` bytes of background data already in
    the socket. A destination crash now loses the guest.
    """
    env, state, bitmap = mig.env, mig.state, mig.bitmap
    t_stop = yield from stop_guest(mig, "guest stopped (postcopy)", "postcopy")
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
    yield from mig.push(sent_at_switch)
    state.transferred += sent_at_switch
    state.downtime_bytes += sent_at_switch
    t_run = env.now + mig.link.latency_s
    yield env.timeout(mig.link.latency_s)
    state.downtime = t_run - t_stop
    state.set_status("postcopy-active", env.now)
    state.set_dest_status("postcopy-active", env.now)
    # The guest runs on the destination from now on; its write clock restarts here.
    mig.guest.running = True
    mig.writes.restart_at(env.now)
    mig.dest_written = np.zeros(mig.guest.pages, np.bool_)
    yield from _push_missing(mig)
    if state.ended:
        return
    mig.complete(env.now + mig.link.latency_s)


def _push_missing(mig: Migration) -> Generator[simpy.Event, None, None]:
    """The background push and the remote faults, until no page is missing (or the
    destination dies, which loses the guest)."""
    env, state, bitmap, writes = mig.env, mig.state, mig.bitmap, mig.writes
    assert mig.dest_written is not None
    page_bytes = mig.scenario.wire.page_header + mig.scenario.vm.page_size
    while bitmap.n_pending > 0:
        now = env.now
        if mig.due_fault(now) == "destination_crash":
            lose_guest(mig)
            return
        rate = mig.link.share(mig, now)
        cap = mig.spec.max_postcopy_bandwidth
        rate = min(rate, cap) if cap > 0 else rate
        until = min(now + MAX_WAIT_S, mig.next_change(now))
        if rate <= 0:
            yield env.timeout(until - now)
            continue
        queue = 0.0 if mig.in_force.is_enabled("postcopy-preempt") else POSTCOPY_QUEUE
        fault_cost = 2 * mig.link.latency_s + (page_bytes + queue) / rate
        writes.generate_until(until)
        before = state.postcopy_stats[3]
        t_end, bitmap.cursor, writes.next, bitmap.n_pending = kernel.postcopy_chunk(
            bitmap.kernel_args(), mig.guest.zero_bits, writes.kernel_args(),
            (writes.next, bitmap.cursor, bitmap.n_pending), (now, rate, until),
            (page_bytes, mig.scenario.wire.zero_page, page_bytes, fault_cost),
            mig.dest_written, state.postcopy_stats)
        sent = int(state.postcopy_stats[3] - before)
        state.transferred += sent
        state.postcopy_bytes += sent
        mig.window.bytes += sent
        yield env.timeout(max(t_end, now) - now)


def lose_guest(mig: Migration) -> None:
    """A crash after the switch: the guest ran only on the destination, which is gone."""
    state, now = mig.state, mig.env.now
    state.set_dest_status("failed", now)
    state.total_time = now - state.t_migrate
    state.close_pass(now)
    state.failure_reason = ("destination crashed during postcopy: the guest is lost "
                            "(no postcopy recovery modelled)")
    state.source_error = "Detected IO failure for postcopy. Migration paused."
    mig.rec.event(now, "source", "error", state.failure_reason)
    mig.guest.running = False
    state.set_status("failed", now)
