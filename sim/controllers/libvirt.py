"""libvirt's ``virsh migrate --timeout N [--timeout-suspend | --timeout-postcopy]``.

virsh (tools/virsh-domain.c, cmdMigrate and its job watcher) starts a timer of N seconds with the
migration job; when it fires while the job still runs, virsh suspends the guest
(``virDomainSuspend``, QMP ``stop``: the default, ``--timeout-suspend``) or asks for post-copy
(``virDomainMigrateStartPostCopy``, QMP ``migrate-start-postcopy``: ``--timeout-postcopy``, which
virsh accepts only with ``--postcopy``). A suspended guest then migrates as in a non-live
migration: its pages stop changing, the rest drains, QEMU switches over. While it waits virsh
polls the job's progress every 500 ms (its ``--verbose`` display); the timeout itself is a timer,
not a poll. When the migration fails after the suspend, libvirt resumes the guest on the source
(src/qemu/qemu_migration.c restores the domain's state).

Model notes: ``timeout`` defaults to 30 s here so that ``controller: libvirt`` does something;
virsh has no default (without ``--timeout`` it only watches). QEMU's reported ``downtime`` counts
from its own switchover; the time the guest spent suspended before it is in ``guest_cpu_lost_s``.
"""

from __future__ import annotations

from typing import ClassVar

from ..spec import ControllerSpec, Scenario
from .base import Client, Controller, postcopy_asked, register_controller

DEFAULT_TIMEOUT_S = 30.0  # migsim's default; virsh has none


@register_controller
class Libvirt(Controller):
    """virsh migrate --timeout: suspend the guest (or switch to post-copy) after N seconds."""

    name = "libvirt"
    keys: ClassVar[tuple[str, ...]] = ("timeout", "timeout_action")
    poll_interval: ClassVar[float] = 0.5  # virsh's progress poll

    @classmethod
    def refusal(cls, spec: ControllerSpec, scenario: Scenario) -> tuple[str, str] | None:
        action = spec.timeout_action
        if action not in (None, "suspend", "postcopy"):
            return ("timeout_action", f"the libvirt controller's actions are suspend and postcopy "
                                      f"(virsh --timeout-suspend, --timeout-postcopy), not {action}")
        if action == "postcopy" and not postcopy_asked(scenario):
            return ("timeout_action", "--timeout-postcopy needs --postcopy: add postcopy-ram to "
                                      "migration.capabilities")
        return None

    def start(self, client: Client) -> None:
        self.timeout = float(self.option("timeout", DEFAULT_TIMEOUT_S))
        self.action = self.option("timeout_action", "suspend")
        client.call_at(client.t_start + self.timeout, lambda: self.fire(client))

    def fire(self, client: Client) -> None:
        status = client.query_migrate().get("status")
        if status not in ("setup", "active"):
            return  # the job has ended or is already switching over
        if self.action == "postcopy":
            client.migrate_start_postcopy()
        else:
            client.stop()
