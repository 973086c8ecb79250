"""A vMotion-like controller: a switchover goal and short vCPU pauses when the guest outruns the
link (VMware's "Stun During Page Send", as VMware's public vMotion papers describe it).

vSphere's vMotion aims at a switchover of at most about 500 ms; when the guest dirties memory
faster than the network sends it, it slows the vCPUs down by injecting short pauses so that
pre-copy converges. This is not VMware's code (which is closed): it is that idea on QEMU's
commands. At the start it sets ``downtime-limit`` to the goal (``downtime``, 500 ms). Every poll
(100 ms) it compares the guest's dirty rate (``dirty-pages-rate`` × page size, scaled up by the
stun share in force, which held the guest back when it was measured) with the link's rate
(``mbps``); when the guest outruns the link it stuns it for a share ``1 - link / dirty`` of the
next interval, at most ``max_stun`` (0.5): ``stop`` now, ``cont`` that much later.

Model notes: QEMU updates ``dirty-pages-rate`` at syncs at least 1 s apart, so the stun follows
the rate of the last such period; every stun is a ``stop`` and a ``cont`` row in the events.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Client, Controller, register_controller

GOAL_MS = 500
MAX_STUN = 0.5
MIN_STUN_S = 0.001  # shorter pauses are not worth a stop


@register_controller
class VmotionLike(Controller):
    """A 500 ms switchover goal, with vCPU stuns while the guest outruns the link."""

    name = "vmotion-like"
    keys: ClassVar[tuple[str, ...]] = ("downtime", "max_stun")
    poll_interval: ClassVar[float] = 0.1

    def start(self, client: Client) -> None:
        self.goal_ms = int(round(self.option("downtime", GOAL_MS / 1000) * 1000))
        self.max_stun = float(self.option("max_stun", MAX_STUN))
        self.share = 0.0  # the stun share in force
        self.interval = float(self.spec.poll_interval or self.poll_interval)
        client.migrate_set_parameters(**{"downtime-limit": self.goal_ms})

    def poll(self, client: Client, info: dict[str, Any]) -> None:
        if info.get("status") != "active":
            return
        ram = info.get("ram", {})
        link = float(ram.get("mbps", 0.0)) * 1e6 / 8
        dirty = float(ram.get("dirty-pages-rate", 0)) * float(ram.get("page-size", 4096))
        dirty /= max(1e-9, 1.0 - self.share)  # what the guest would dirty unstunned
        share = min(self.max_stun, 1.0 - link / dirty) if dirty > link > 0 else 0.0
        self.share = share
        pause = share * self.interval
        if pause >= MIN_STUN_S:
            client.stop()
            client.call_at(client.now + pause, client.cont)
