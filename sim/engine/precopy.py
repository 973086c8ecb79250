"""The pre-copy migration process: QEMU's migration thread as a SimPy process (REF §1.8).

Setup sets every page pending and syncs once. Then, turn by turn: close the 100 ms bandwidth
window when due (bandwidth → threshold = bandwidth × downtime-limit), idle to the window's end
when its ``max-bandwidth`` budget is spent, ask the switchover policy whether to stop
(:mod:`sim.engine.switchover`: QEMU's drain-driven test, or classic rounds), else send one chunk
of at most 50 ms. The policies (throttle, switchover, post-copy trigger) are chosen once, when
the migration starts, from what is in force; the loop never asks a capability's name.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import simpy

from ..capabilities import InForce
from ..spec import MigrationSpec
from . import postcopy, switchover, throttle
from .cruise import Cruise
from .migration import MAX_WAIT_S, WINDOW_S, DirtyRatePeriod, Handshake, Migration, rate_cap
from .profiles import max_bandwidth

#: run uneventful turns in compiled code (:mod:`sim.engine.cruise`); False: every turn here,
#: one chunk per SimPy step (the tests compare the two)
CRUISING = True


def migrate(mig: Migration, spec: MigrationSpec, in_force: InForce,
            handshake: Handshake | None = None) -> Generator[simpy.Event, None, None]:
    """The migration, as a SimPy process started at ``migrate`` time.

    ``handshake`` (in-band negotiation) runs after the connection is up; it yields SimPy events
    and returns what it agreed (an :class:`~sim.capabilities.InForce`) or an error text that
    fails the migration in setup.
    """
    env, state = mig.env, mig.state
    mig.spec = spec
    mig.in_force = in_force
    mig.writes.apply_until(env.now)
    state.t_migrate = env.now
    state.set_status("setup", env.now)
    if mig.due_fault(env.now) == "destination_crash":
        mig.fail("destination crashed", "Failed to connect to the destination: "
                                        "Connection refused")
        return
    # The deadlines count from the ``migrate`` command, setup included.
    deadline = env.now + spec.max_sim_time
    cancel_at = env.now + spec.max_time if spec.max_time is not None else math.inf
    mig.link.join(mig, max_bandwidth(spec))
    try:
        if (yield from _setup(mig, handshake)):
            yield from _live(mig, cancel_at, deadline)
    finally:
        mig.link.leave(mig)


def _setup(mig: Migration, handshake: Handshake | None) -> Generator[simpy.Event, None, bool]:
    """Connect (one round trip), negotiate in-band if asked, every page pending, the first sync
    (REF §1.1). Returns whether the migration goes on."""
    env, state = mig.env, mig.state
    setup = 2 * mig.link.latency_s
    if setup > 0:
        yield env.timeout(setup)
        mig.writes.apply_until(env.now)
    state.set_dest_status("setup", env.now - mig.link.latency_s)
    if handshake is not None:
        agreed = yield from handshake(mig)
        mig.writes.apply_until(env.now)
        if isinstance(agreed, str):
            mig.fail(agreed, agreed)
            return False
        mig.in_force = agreed
    try:
        mig.pipeline.configure(mig.spec, mig.in_force)
    except MemoryError:
        # ram_save_setup cannot allocate the page cache: the migration fails, the source runs.
        mig.fail("cannot allocate the XBZRLE cache",
                 "Parameter 'cache size' expects Failed to allocate page cache")
        return False
    cap = rate_cap(mig)
    if cap != max_bandwidth(mig.spec):  # multifd: the limit counts whole packets
        mig.link.set_cap(mig, cap)
    mig.throttle = throttle.choose(mig.in_force)(mig.state, mig.scenario.vm, mig.workload,
                                                 lambda: mig.spec, mig.rec)
    mig.bitmap.set_all()
    mig.guest.clear_dirty_log()
    mig.guest.versions_unread = not mig.pipeline.reads_versions  # until it ends
    mig.period = DirtyRatePeriod(env.now, 0, state.transferred)
    mig.sync("setup")
    yield from mig.pay_stall()
    state.setup_time = env.now - state.t_migrate
    state.set_status("active", env.now)
    state.set_dest_status("active", env.now + mig.link.latency_s)
    mig.throttle.start(env.now)
    return True


def _live(mig: Migration, cancel_at: float, deadline: float,
          ) -> Generator[simpy.Event, None, None]:
    """The live loop (migration_iteration_run), until a switchover, a cancel or a failure."""
    env, state, bitmap = mig.env, mig.state, mig.bitmap
    policy = switchover.choose(mig.spec)
    trigger = postcopy.PostcopyTrigger.for_(mig.in_force)
    next_periodic = mig.throttle.periodic_sync_at(env.now)
    cruise = (Cruise.of(mig) if CRUISING and isinstance(policy, switchover.QemuDrain)
              and not trigger.enabled and hasattr(mig.link, "network") else None)
    syncs_at_tick = 0
    mig.window.start = env.now
    while True:
        now = env.now
        if now - mig.window.start >= WINDOW_S - 1e-12:
            close_window(mig, now)
        if mig.due_fault(now) == "destination_crash":
            yield from switchover.destination_crashed(mig)
            return
        if mig.stall > 0:
            yield from mig.pay_stall()
            continue
        if now >= next_periodic:
            # QEMU 9.2+: with auto-converge a 5 s timer forces a sync when none happened since
            # its last tick, so the throttle check runs in long rounds too (REF §4.2).
            if state.sync_count == syncs_at_tick and state.sync_count >= 2:
                mig.sync("periodic")
            syncs_at_tick = state.sync_count
            next_periodic += throttle.PERIODIC_SYNC_S
        if mig.cancel_requested or now >= cancel_at or now >= deadline:
            mig.cancel(mig.cancel_reason if mig.cancel_requested
                       else "max_time" if now >= cancel_at else "not converged")
            return
        if trigger.wants(mig, now):
            yield from postcopy.run(mig, deadline)
            return
        budget = mig.window_budget()
        change = mig.next_change(now)
        idle_to = min(mig.window.start + WINDOW_S, cancel_at, deadline, change)
        if mig.window.bytes >= budget:
            yield from mig.idle_until(idle_to)
            continue
        # With switchover-ack on the source only, the destination's ACK never comes: the loop
        # keeps iterating until a cancel (REF §6.1).
        if policy.ready(mig) and not mig.in_force.switchover_blocked:
            yield from switchover.stop_and_copy(mig, cancel_at, deadline)
            return
        if bitmap.n_pending == 0:
            # Nothing to send and no switchover yet (threshold still 0): wait for the window.
            yield from mig.idle_until(idle_to)
            continue
        rate = mig.link.share(mig, now)
        if rate <= 0:
            # The link is down: nothing moves until it is back (or a deadline).
            yield from mig.idle_until(idle_to)
            continue
        if cruise is not None and mig.pipeline.drawn:
            # This turn's send and the turns after it, in one compiled call, until a turn
            # needs this loop (:mod:`sim.engine.cruise`: the same tables, far fewer steps).
            ridden = cruise.ride(mig, cancel_at, deadline, next_periodic, WINDOW_S)
            if ridden is not None:
                yield ridden
                continue
        t_limit = min(now + MAX_WAIT_S, cancel_at, deadline, change)
        chunk = mig.send(t_limit, budget - mig.window.bytes, False, rate)
        stop = min(cancel_at, deadline)
        if chunk.t_end > stop:
            # A page that would end past a deadline (a slow link): the run ends at the deadline.
            yield from mig.idle_until(stop)
            mig.cancel("max_time" if stop == cancel_at else "not converged")
            return
        yield env.timeout(chunk.t_end - now)
        if chunk.broken_encoder is not None:
            yield from switchover.fail_at_destination(mig, chunk.broken_encoder)
            return


def close_window(mig: Migration, now: float) -> None:
    """The 100 ms window ends (REF §1.4): bandwidth, the threshold, the expected downtime, and
    one samples row."""
    state, window, spec = mig.state, mig.window, mig.spec
    length = now - window.start
    state.bandwidth = window.bytes / length if length > 0 else 0.0
    state.pages_per_second = window.pages / length if length > 0 else 0.0
    expected_bw = spec.avail_switchover_bandwidth or state.bandwidth
    state.threshold = expected_bw * spec.downtime_limit
    if state.dirty_pages_rate > 0 and window.bytes > 10000 and expected_bw > 0:
        state.expected_downtime = state.dirty_bytes_last_sync / expected_bw
    mig.rec.sample(
        t_s=now, bandwidth_bytes_per_s=state.bandwidth, threshold_bytes=state.threshold,
        pending_bytes=mig.pending_bytes, expected_downtime_s=state.expected_downtime,
        dirty_pages_rate=state.dirty_pages_rate, transferred_bytes=float(state.transferred),
        throttle_pct=state.throttle_pct, status=state.status)
    window.start, window.bytes, window.pages = now, 0.0, 0
    if mig.progress is not None:
        mig.progress(now, spec.start + spec.max_sim_time)
