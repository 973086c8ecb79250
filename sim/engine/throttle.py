"""Throttle policies (REF §4): what slows the guest when it dirties faster than the link drains.

One policy is chosen when the migration starts, from the capabilities in force
(:func:`choose`): :class:`NoThrottle`, :class:`AutoConverge` (QEMU's CPU throttle) or
:class:`DirtyLimit` (a per-vCPU dirty-rate quota). QEMU refuses both at once (they exclude each
other in :mod:`sim.capabilities`). The engine calls :meth:`Throttle.on_period` at every
dirty-rate period (a sync at least 1 s after the last), and :meth:`Throttle.end` when the guest
stops or the migration ends. The policy writes the throttle in force, its maximum and the guest
CPU time it cost into the :class:`~sim.engine.state.MigrationState`.

Model note: dirty-limit spreads writes evenly over vCPUs, so the guest's write rate is capped at
``vcpus × vcpu-dirty-limit``; it costs no guest CPU time in the tables (QEMU sleeps the vCPU in
the dirty-ring-full exit, which migsim does not count as throttle time).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..capabilities import InForce
from ..recorder import Recorder
from ..spec import MigrationSpec, VmSpec
from ..workloads import Workload
from .profiles import profile
from .state import MigrationState

PERIODIC_SYNC_S = 5.0  # auto-converge's periodic sync timer (QEMU 9.2+)


class Throttle:
    """No throttle: the guest runs at its nominal rate (the base of the other policies)."""

    kind = "none"

    def __init__(self, state: MigrationState, vm: VmSpec, workload: Workload,
                 spec: Callable[[], MigrationSpec], recorder: Recorder) -> None:
        self.state = state
        self.vm = vm
        self.workload = workload
        self.spec = spec  # the parameters in force now (they may change during a migration)
        self.recorder = recorder
        self._trigger_count = 0  # QEMU's dirty_rate_high_cnt: never reset but by a step
        self._since = 0.0  # when the throttle last changed (for the CPU time it costs)

    def start(self, now: float) -> None:
        self._since = now

    def write_share(self) -> float:
        """The share of its nominal write rate the running guest keeps under this throttle."""
        return 1.0 - self.state.throttle_pct / 100

    def periodic_sync_at(self, now: float) -> float:
        """When the first periodic sync is due (never, but for auto-converge on QEMU 9.2+)."""
        return math.inf

    def on_period(self, now: float, bytes_dirty: int, bytes_xfer: int) -> None:
        """QEMU's migration_trigger_throttle (REF §4.1): a period that dirtied more than
        ``throttle-trigger-threshold`` % of what it sent counts; every second count (the counter
        never resets otherwise) takes a step."""
        threshold = bytes_xfer * self.spec().throttle_trigger_threshold / 100
        if bytes_dirty <= threshold:
            return
        self._trigger_count += 1
        if self._trigger_count < 2:
            return
        self._trigger_count = 0
        self._step(now, bytes_dirty, threshold)

    def _step(self, now: float, bytes_dirty: int, threshold: float) -> None:
        pass

    def set(self, now: float, pct: float) -> None:
        state = self.state
        self.account(now)
        state.throttle_pct = pct
        state.max_throttle_pct = max(state.max_throttle_pct, pct)
        self.recorder.event(now, "source", "throttle", f"{self.kind} {pct:g}%")

    def account(self, now: float) -> None:
        """Add the guest CPU time the throttle took since its last change (vCPU-seconds)."""
        self._since = now

    def end(self, now: float) -> None:
        """Throttling stops when the guest stops or the migration ends (REF §4.2)."""
        self.account(now)
        self.state.throttle_pct = 0.0


class NoThrottle(Throttle):
    def on_period(self, now: float, bytes_dirty: int, bytes_xfer: int) -> None:
        return


class AutoConverge(Throttle):
    """QEMU's CPU throttle: initial, then + increment per step, at most max (REF §4.2)."""

    kind = "cpu-throttle"

    def write_share(self) -> float:
        """A CPU-bound guest keeps ``1 - pct``; a timer-paced one loses only ticks."""
        return paced_share(self.state.throttle_pct, self.workload.spec.timer_tick)

    def periodic_sync_at(self, now: float) -> float:
        return now + PERIODIC_SYNC_S if profile(self.spec().qemu_version).periodic_sync \
            else math.inf

    def _step(self, now: float, bytes_dirty: int, threshold: float) -> None:
        """mig_throttle_guest_down: initial, then + increment (tail-slow: no more than the step
        to the CPU share whose dirty rate meets the threshold), at most max."""
        spec, pct = self.spec(), self.state.throttle_pct
        if pct == 0:
            self.set(now, float(spec.cpu_throttle_initial))
            return
        increment = float(spec.cpu_throttle_increment)
        if spec.cpu_throttle_tailslow:
            cpu_now = 100.0 - pct
            cpu_ideal = cpu_now * threshold / bytes_dirty
            increment = min(increment, cpu_now - cpu_ideal)
        self.set(now, min(pct + increment, float(spec.max_cpu_throttle)))

    def account(self, now: float) -> None:
        state = self.state
        if state.throttle_pct > 0:
            state.guest_cpu_lost_s += (now - self._since) * state.throttle_pct / 100 \
                * self.vm.vcpus
        self._since = now


class DirtyLimit(Throttle):
    """Every vCPU may dirty at most ``vcpu-dirty-limit`` bytes/s, switched on at the first step."""

    kind = "dirty-limit"

    def _step(self, now: float, bytes_dirty: int, threshold: float) -> None:
        if self.state.throttle_pct != 0:
            return
        nominal = self.workload.writes_per_s
        cap = self.vm.vcpus * self.spec().vcpu_dirty_limit / self.vm.page_size
        if nominal > cap:
            self.set(now, 100.0 * (1.0 - cap / nominal))


#: capability -> policy; the first in force wins (QEMU allows at most one of them)
POLICIES: dict[str, type[Throttle]] = {"auto-converge": AutoConverge, "dirty-limit": DirtyLimit}


def choose(in_force: InForce) -> type[Throttle]:
    """The throttle policy of a migration with ``in_force``."""
    for capability, policy in POLICIES.items():
        if in_force.is_enabled(capability):
            return policy
    return NoThrottle


THROTTLE_TIMESLICE_S = 0.01  # CPU_THROTTLE_TIMESLICE_NS (softmmu/cpu-throttle.c)


def tcg_sync_wait(accelerator: str, vcpus: int, throttle_pct: float, running: bool) -> float:
    """What a dirty-bitmap sync waits for throttled vCPUs. Under TCG a sync runs a hook on every
    vCPU (``run_on_cpu``) and waits for it; a vCPU that auto-converge put to sleep answers only
    when it wakes. A throttle of ``pct`` sleeps ``pct / (1 - pct)`` timeslices of 10 ms
    (``cpu_throttle_thread``), asleep a share ``pct`` of the time; the hook arrives at a random
    point of the cycle, so it waits ``pct × sleep / 2`` on average, per vCPU, one after another
    (an expectation, not a draw). Under KVM, and once the guest is stopped, nothing waits."""
    if accelerator != "tcg" or not running:
        return 0.0
    pct = throttle_pct / 100.0
    if pct <= 0.0 or pct >= 1.0:
        return 0.0
    sleep = pct / (1.0 - pct) * THROTTLE_TIMESLICE_S
    return vcpus * pct * sleep / 2.0


def paced_share(throttle_pct: float, tick: float | None) -> float:
    """The share of its nominal write rate a guest keeps under a CPU throttle of ``throttle_pct``.

    A CPU-bound guest (``tick`` None) runs a share ``1 - pct`` of the time and writes that much.
    A guest whose writes are paced by a timer of period ``tick`` (a tick's writes done in a
    burst, little CPU per tick) loses only ticks: ``cpu_throttle_thread`` puts the vCPU to sleep
    for ``pct / (1 - pct)`` timeslices of 10 ms, then lets it run one timeslice. Timer interrupts
    that fall in the run are served; those that fall in the sleep collapse into one pending
    interrupt (an edge-triggered timer line holds one, as the i8254 PIT on the i8259 does), served
    at the wake. Of the ``cycle / tick`` ticks of a cycle, ``run / tick + min(1, sleep / tick)``
    are served, so a throttle whose sleep is no longer than a tick does not slow the guest at
    all. A guest that catches up on lost time (a clock-driven load generator) is not modelled.
    """
    pct = min(max(throttle_pct / 100.0, 0.0), 1.0)
    if tick is None or pct <= 0.0:
        return 1.0 - pct
    if pct >= 1.0:
        return 0.0
    run = THROTTLE_TIMESLICE_S
    sleep = pct / (1.0 - pct) * run
    return min(1.0, (run + min(tick, sleep)) / (run + sleep))
