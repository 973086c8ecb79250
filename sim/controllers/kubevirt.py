"""KubeVirt's migration monitor (virt-launcher, pkg/virt-launcher/virtwrap/live-migration-source.go)
with the dynamic downtime ramp described in issue 17.

From KubeVirt's public source and docs (the MigrationConfiguration of the KubeVirt CR):
``completionTimeoutPerGiB`` (150 s per GiB of the VM's migrated data: here its RAM) bounds the
migration's time; when it is exceeded, a migration that may use post-copy (``allowPostCopy``)
switches to it, any other is aborted (``migrate_cancel``). ``parallelOutboundMigrationsPerNode``
(2) limits the migrations leaving one node at a time. The monitor polls libvirt's job info every
400 ms.

The downtime ramp and the stall detection follow the issue's description, not a KubeVirt release
I know the source of (I was unsure of its exact constants): the downtime limit starts at 150 ms
(``downtime_start``); ``cooldown`` (2 s) after the bulk pass ends (the second ``MIGRATION_PASS``)
it rises linearly, one of ``steps`` (9) equal steps every ``step_delay`` (1 s), to the ceiling
(``downtime``, 1050 ms). Stall detection: after the bulk pass, the controller samples the
remaining bytes once per iteration (at the first poll after ``dirty-sync-count`` grew: what the
last sync left); 3 samples in a row with no new minimum are a stall. At the next sample within
10 % of that minimum (near a local minimum), it asks for the switchover: it raises the downtime
limit to what sending the rest takes at the measured bandwidth (``mbps``) with 25 % headroom,
when the ceiling allows it, else it starts post-copy if permitted, else the ramp goes on.

Model notes: every guest of a fleet (``vms:``) leaves the same source node, so the outbound
limit applies to the whole fleet; KubeVirt's progress timeout (abort after 150 s without
progress) is not modelled.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..spec import ControllerSpec, Scenario
from .base import Client, Controller, postcopy_asked, register_controller

START_MS, CEILING_MS = 150, 1050
STEPS, STEP_DELAY_S, COOLDOWN_S = 9, 1.0, 2.0
COMPLETION_PER_GIB_S = 150
PARALLEL_OUTBOUND = 2
STALL_SAMPLES = 3  # iterations in a row without a new minimum of remaining bytes
NEAR_MINIMUM = 1.10  # within 10 % of the minimum
HEADROOM = 1.25  # the switchover's downtime limit over what the rest needs


def ramp(start_ms: int, ceiling_ms: int, steps: int, t_bulk: float, cooldown: float,
         step_delay: float) -> list[tuple[float, int]]:
    """The downtime ramp: ``(sim time, downtime-limit ms)`` of each step after the start."""
    return [(t_bulk + cooldown + k * step_delay,
             int(round(start_ms + (ceiling_ms - start_ms) * k / steps)))
            for k in range(1, steps + 1)]


@register_controller
class KubeVirt(Controller):
    """KubeVirt: a downtime ramp after the bulk pass, stall detection, completion timeout."""

    name = "kubevirt"
    keys: ClassVar[tuple[str, ...]] = ("downtime_start", "downtime", "steps", "step_delay",
                                       "cooldown", "completion_timeout_per_gib",
                                       "permit_postcopy", "parallel_outbound")
    poll_interval: ClassVar[float] = 0.4  # monitorSleepPeriodMS

    @classmethod
    def refusal(cls, spec: ControllerSpec, scenario: Scenario) -> tuple[str, str] | None:
        start = spec.downtime_start if spec.downtime_start is not None else START_MS / 1000
        ceiling = spec.downtime if spec.downtime is not None else CEILING_MS / 1000
        if ceiling < start:
            return "downtime", f"the ceiling must be at least downtime_start ({start * 1000:g}ms)"
        if spec.permit_postcopy and not postcopy_asked(scenario):
            return ("permit_postcopy", "post-copy needs postcopy-ram in migration.capabilities "
                                       "(allowPostCopy)")
        return None

    @classmethod
    def outbound_limit(cls, spec: ControllerSpec) -> int | None:
        return spec.parallel_outbound or PARALLEL_OUTBOUND

    def start(self, client: Client) -> None:
        self.start_ms = int(round(self.option("downtime_start", START_MS / 1000) * 1000))
        self.ceiling_ms = int(round(self.option("downtime", CEILING_MS / 1000) * 1000))
        self.n_steps = int(self.option("steps", STEPS))
        self.step_delay = float(self.option("step_delay", STEP_DELAY_S))
        self.cooldown = float(self.option("cooldown", COOLDOWN_S))
        self.permit_postcopy = bool(self.option("permit_postcopy", False))
        self.completion_timeout = (float(self.option("completion_timeout_per_gib",
                                                     COMPLETION_PER_GIB_S)) * client.ram_gib)
        self.schedule: list[tuple[float, int]] = []
        self.downtime = self.start_ms
        self.minimum = math.inf
        self.since_minimum = 0
        self.last_sync = -1
        self.stalled = False
        self.switching = False
        self.timed_out = False
        client.migrate_set_parameters(**{"downtime-limit": self.start_ms})

    def event(self, client: Client, name: str, data: dict[str, Any]) -> None:
        if name == "MIGRATION_PASS" and data.get("pass") == 2 and not self.schedule:
            self.schedule = ramp(self.start_ms, self.ceiling_ms, self.n_steps, client.now,
                                 self.cooldown, self.step_delay)
            client.note("bulk-pass-done", ramp_from_s=round(self.schedule[0][0], 6))

    def set_downtime(self, client: Client, ms: int) -> None:
        if ms > self.downtime:
            client.migrate_set_parameters(**{"downtime-limit": ms})
            self.downtime = ms

    def poll(self, client: Client, info: dict[str, Any]) -> None:
        if info.get("status") != "active":
            return
        if self.completion_timeout and not self.timed_out \
                and client.elapsed > self.completion_timeout:
            self.timed_out = True
            client.note("completion-timeout", elapsed_s=round(client.elapsed, 6),
                        timeout_s=self.completion_timeout)
            if self.permit_postcopy:
                client.migrate_start_postcopy()
            else:
                client.migrate_cancel()
            return
        due = [ms for t, ms in self.schedule if t <= client.now + 1e-9]
        if due:
            self.set_downtime(client, due[-1])
        if self.schedule and not self.switching:
            self.watch_stall(client, info)

    def watch_stall(self, client: Client, info: dict[str, Any]) -> None:
        ram = info.get("ram", {})
        syncs = int(ram.get("dirty-sync-count", 0))
        if syncs == self.last_sync:
            return  # one sample per iteration: what the last sync left
        self.last_sync = syncs
        remaining = float(ram.get("remaining", 0))
        if remaining < self.minimum:
            self.minimum, self.since_minimum = remaining, 0
            return
        self.since_minimum += 1
        if self.since_minimum >= STALL_SAMPLES and not self.stalled:
            self.stalled = True
            client.note("stall", remaining_bytes=int(remaining), minimum_bytes=int(self.minimum))
            return
        if not self.stalled or remaining > NEAR_MINIMUM * self.minimum:
            return
        mbps = float(ram.get("mbps", 0.0))
        needed_ms = (math.ceil(remaining / (mbps * 1e6 / 8) * 1000 * HEADROOM) if mbps > 0
                     else math.inf)
        if needed_ms <= self.ceiling_ms:
            self.switching = True
            client.note("switchover", remaining_bytes=int(remaining),
                        minimum_bytes=int(self.minimum), mbps=mbps, needed_ms=needed_ms)
            self.set_downtime(client, int(needed_ms))
        elif self.permit_postcopy:
            self.switching = True
            client.note("switchover", remaining_bytes=int(remaining),
                        minimum_bytes=int(self.minimum), mbps=mbps, postcopy=True)
            client.migrate_start_postcopy()
