"""The switchover: when to stop the guest (two policies), and stop-and-copy (REF §1.6).

* :class:`QemuDrain` is QEMU's test (REF §1.8): sync only when the pending bytes drop *below*
  the threshold, switch over when they are at or under it.
* :class:`ClassicRounds` is the classic policy of the papers and SimGrid: sync at the end of
  each full pass, stop-and-copy when pending ≤ threshold or after ``max_passes`` live passes.

:func:`stop_and_copy` stops the guest, syncs a last time and sends the rest plus the device
state at full speed; downtime is measured, not assumed.

Model notes: the rest goes out in pieces that end where the link's rate changes or a fault is
due, so a link that drops or dies during the downtime stretches it; a crash or cancel in this
phase fails or cancels the migration and restarts the source's guest. Downtime ends when the
last byte has been written to the link, plus one round trip for the destination's SHUT message
when ``return-path`` is in force (REF §1.6 step 6); the destination's load-and-start time is not
modelled. Device state is one block of ``vm.device_state`` bytes (QEMU's EOF and VM description
records are folded into it). The fixed stop cost is ``switchover_cost.stop``, or
``switchover_cost.paced_stop`` when the host profile has one and ``max-bandwidth`` paced the
live phase (:func:`paced`): a model of hosts whose idle CPUs wake slowly, not a QEMU rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import simpy

from ..encoders import ENCODERS
from ..spec import MigrationSpec
from .profiles import max_bandwidth, profile

if TYPE_CHECKING:
    from .migration import Migration

#: a window that moved this share of its budget was paced by it (QEMU's windows overshoot the
#: budget by up to a record and end on the timer, so a paced window can fall a little short)
PACED_SHARE = 0.9
#: added to the ``switchover`` event's detail when ``switchover_cost.paced_stop`` was charged
PACED_DETAIL = "; paced stop"

# QEMU's RAM_SAVE_FLAG_XBZRLE: a destination that predates it reports the unknown flag (REF §8.2)
XBZRLE_FLAG = 0x40


class QemuDrain:
    """QEMU's drain-driven switchover test (migration_iteration_run, REF §1.8)."""

    def ready(self, mig: Migration) -> bool:
        if mig.pending_bytes < mig.state.threshold:
            mig.sync("drain")
        return mig.pending_bytes <= mig.state.threshold


class ClassicRounds:
    """Sync after every full pass; switch when pending ≤ threshold or after ``max_passes``."""

    def __init__(self) -> None:
        self.live_passes = 0

    def ready(self, mig: Migration) -> bool:
        if mig.bitmap.n_pending != 0:
            return False
        self.live_passes += 1
        mig.sync("round")
        cap = mig.spec.max_passes
        return mig.pending_bytes <= mig.state.threshold or (
            cap is not None and self.live_passes >= cap)


#: ``migration.switchover`` -> policy
POLICIES: dict[str, type[QemuDrain | ClassicRounds]] = {"qemu": QemuDrain,
                                                        "rounds": ClassicRounds}


def choose(spec: MigrationSpec) -> QemuDrain | ClassicRounds:
    return POLICIES[spec.switchover]()


def stop_guest(mig: Migration, detail: str, sync_reason: str, deadline: float = math.inf,
               ) -> Generator[simpy.Event, None, float]:
    """The switchover's start, for stop-and-copy and post-copy alike: the thread finishes the
    sync that decided it, the vCPUs stop (no more writes, no more throttle), the state goes to
    ``device`` (QEMU 10.0+, REF §7.5) and a last sync collects what was dirtied. With
    ``pause-before-switchover`` it first waits in ``pre-switchover`` for ``migrate-continue``,
    the guest stopped (the wait counts in the downtime). Returns when the guest stopped."""
    yield from mig.pay_stall()
    t_stop = mig.env.now
    mig.end_pause(t_stop)  # a management pause, if any, becomes the switchover's stop
    mig.writes.apply_until(t_stop)
    mig.throttle.end(t_stop)
    mig.guest.running = False
    mig.writes.drop()  # writes buffered beyond the stop never happen: the vCPUs are stopped
    # The fixed cost (vCPUs stopped, block devices inactivated), decided now: no window closes
    # while the guest is stopped.
    cost = mig.scenario.switchover_cost
    stop_cost = cost.stop
    if cost.paced_stop is not None and paced(mig):
        stop_cost = cost.paced_stop
        detail += PACED_DETAIL
    mig.rec.event(t_stop, "source", "switchover", detail)
    yield from wait_before_switchover(mig)
    if mig.cancel_requested:
        return t_stop  # cancelled in pre-switchover: the caller cancels
    if profile(mig.spec.qemu_version).device_state:
        mig.state.set_status("device", mig.env.now)
    if stop_cost > 0:  # not past the run's hard cap: the caller ends the run there
        yield mig.env.timeout(max(0.0, min(stop_cost, deadline - mig.env.now)))
    mig.sync(sync_reason)
    yield from mig.pay_stall()
    return t_stop


def paced(mig: Migration) -> bool:
    """Whether ``max-bandwidth`` paced the live phase at the stop: the last closed 100 ms
    window moved (nearly) its whole budget, so QEMU's migration thread slept out the rest of
    it, and the destination with it. An XBZRLE stream whose small records never reach the
    budget, an unlimited one, or one on a link no faster than the budget (it waits on the link,
    never on the limiter) kept its threads busy up to the stop."""
    limit = max_bandwidth(mig.spec)
    return (0 < limit < math.inf and mig.state.bandwidth >= PACED_SHARE * limit
            and mig.link.share(mig, mig.env.now) > limit)


def wait_before_switchover(mig: Migration) -> Generator[simpy.Event, None, None]:
    """With ``pause-before-switchover`` in force: ``pre-switchover`` until ``migrate-continue``
    (or a cancel), the guest already stopped (QEMU's migration_maybe_pause)."""
    if not mig.in_force.pauses_before_switchover or mig.cancel_requested:
        return
    mig.switchover_gate = mig.env.event()
    mig.state.set_status("pre-switchover", mig.env.now)
    yield mig.switchover_gate
    mig.switchover_gate = None


def interrupted(mig: Migration, now: float, cancel_at: float, deadline: float) -> str | None:
    """What ends a stop-and-copy early: a destination crash, or a cancel and its reason."""
    if mig.due_fault(now) == "destination_crash":
        return "destination_crash"
    if mig.cancel_requested:
        return mig.cancel_reason
    if now >= cancel_at:
        return "max_time"
    if now >= deadline:
        return "not converged"
    return None


def stop_and_copy(mig: Migration, cancel_at: float = math.inf, deadline: float = math.inf,
                  ) -> Generator[simpy.Event, None, None]:
    """Stop-and-copy (REF §1.6): stop the guest, last sync, send the rest at full speed."""
    env, state = mig.env, mig.state
    t_stop = yield from stop_guest(mig, "guest stopped", "completion", min(cancel_at, deadline))
    stopped = None
    while mig.bitmap.n_pending > 0:
        now = env.now
        stopped = interrupted(mig, now, cancel_at, deadline)
        if stopped is not None:
            break
        rate = mig.link.share(mig, now)
        until = min(mig.next_change(now), cancel_at, deadline)
        if rate <= 0:
            yield env.timeout(until - now)  # the link is down: wait for it
            continue
        chunk = mig.send(until, math.inf, True, rate)
        if chunk.t_end > min(cancel_at, deadline):
            # The last page would end past a deadline: stop-and-copy is cut off there.
            yield env.timeout(min(cancel_at, deadline) - now)
            stopped = interrupted(mig, env.now, cancel_at, deadline)
            break
        yield env.timeout(chunk.t_end - now)
        if chunk.broken_encoder is not None:
            yield from fail_at_destination(mig, chunk.broken_encoder)
            return
    if stopped is None:
        stopped = yield from push(
            mig, mig.scenario.vm.device_state, min(cancel_at, deadline),
            lambda now: interrupted(mig, now, cancel_at, deadline))
    if stopped == "destination_crash":
        yield from destination_crashed(mig)
        return
    if stopped is not None:
        mig.restart_source_guest()  # QEMU restarts the source's guest (if it ran before)
        mig.cancel(stopped)
        return
    device = mig.scenario.vm.device_state
    state.transferred += device
    state.downtime_bytes += device
    state.passes[-1].counters.add(wire_bytes=device)
    # The destination has the last byte one latency from now, then loads the device state and
    # starts the guest; with a return path the source waits for its reply (REF §1.6 step 6).
    start = mig.scenario.switchover_cost.start
    t_running = env.now + mig.link.latency_s + start
    if mig.return_path:
        yield env.timeout(2 * mig.link.latency_s + start)
    state.downtime = env.now - t_stop
    mig.complete(t_running)


def destination_crashed(mig: Migration) -> Generator[simpy.Event, None, None]:
    """The destination QEMU died: its side fails now; the source sees the connection reset one
    latency later and fails, its guest running (restarted if it was stopped). Nothing is lost:
    the source still has every page."""
    mig.state.set_dest_status("failed", mig.env.now)
    if mig.link.latency_s > 0:
        yield mig.env.timeout(mig.link.latency_s)
    mig.writes.apply_until(mig.env.now)
    mig.fail("destination crashed", "Unable to write to socket: Connection reset by peer")


def fail_at_destination(mig: Migration, encoder: str) -> Generator[simpy.Event, None, None]:
    """The destination met a record of ``encoder`` it cannot parse (REF §8.2): it fails when
    the record arrives; the source learns one latency later and fails too. Its guest keeps
    running (or is restarted, if the failure came during stop-and-copy)."""
    latency = mig.link.latency_s
    flag = XBZRLE_FLAG if encoder == "xbzrle" else ENCODERS[encoder].record_flag
    error = ("load of migration failed: Invalid argument: "
             f"Unknown combination of migration flags: {flag:#x}")
    mig.rec.event(mig.env.now + latency, "destination", "error", error)
    mig.state.set_dest_status("failed", mig.env.now + latency)
    if 2 * latency > 0:
        yield mig.env.timeout(2 * latency)
    mig.writes.apply_until(mig.env.now)
    source_error = ("Sibling indicated error 1" if mig.return_path
                    else "Unable to write to socket: Connection reset by peer")
    mig.fail(error, source_error)


def push(mig: Migration, nbytes: float, horizon: float = math.inf,
         check: Callable[[float], str | None] | None = None,
         ) -> Generator[simpy.Event, None, str | None]:
    """Send a block (device state, a discard list) at the link's share, in pieces that end
    where the rate changes, waiting out outages. Returns what ``check`` reported if it
    stopped the block, else None."""
    env = mig.env
    left = float(nbytes)
    while left > 0:
        now = env.now
        stopped = check(now) if check is not None else None
        if stopped is not None:
            return stopped
        rate = mig.link.share(mig, now)
        until = min(mig.next_change(now), horizon)
        if rate <= 0:
            yield env.timeout(until - now)
            continue
        dt = min(left / rate, until - now)
        left = 0.0 if dt >= left / rate else left - dt * rate
        yield env.timeout(dt)
    return None
