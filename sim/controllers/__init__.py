"""Management controllers: the policies a management stack runs on top of QMP, as plug-ins.

A scenario's ``controller:`` section (:class:`sim.spec.ControllerSpec`) puts one
:class:`Controller` beside each guest's migration, as a SimPy process (:func:`supervise`). It sees
what a management client sees: the source's ``query-migrate`` reply every ``poll_interval``, and
the source's ``MIGRATION`` / ``MIGRATION_PASS`` events. It acts only through :class:`Client`, whose
commands are the endpoint's own: ``migrate-set-parameters``, ``migrate-start-postcopy``,
``migrate_cancel``, ``stop`` and ``cont``. Every command is an ``events`` row (endpoint
``management``, event ``controller``, detail a JSON object naming the controller, the action and
its QMP arguments), so the parameter schedule can be replayed from the tables.

``CONTROLLERS`` is the registry (name -> class): the built-ins (:mod:`.libvirt`, :mod:`.nova`,
:mod:`.kubevirt`, :mod:`.vmotion`) and what :func:`register_controller` adds. A ``kind`` of the form
``module:Class`` imports ``module`` (as ``plugins:`` modules are imported) and registers ``Class``.

Failures: whatever a controller's code raises is one :class:`~sim.errors.PluginError` line naming
it; the migration is then cancelled with that line as its ``failure_reason`` (the source's guest
keeps running; a migration already in post-copy cannot be cancelled and runs on unmanaged).

Model notes: the controller runs in sim time with no latency of its own (a command takes effect
as the endpoint's commands do, between chunks); ``stop`` pauses the source's vCPUs until ``cont``
or the switchover, and the paused time counts in ``guest_cpu_lost_s`` (every vCPU). When a
migration the controller paused the guest for fails or is cancelled, the guest is resumed, as
libvirt restores the source domain's state. The QMP server (``migsim serve``) runs no controller:
its client is the management.
"""

from __future__ import annotations

from . import kubevirt, libvirt, nova, vmotion
from .base import (
                   CONTROLLERS,
                   OPTION_KEYS,
                   Client,
                   Controller,
                   NoController,
                   postcopy_asked,
                   refusal,
                   register_controller,
                   resolve,
)
from .runtime import OutboundSlots, start, supervise

#: the built-in controllers, in the docs' order
BUILT_IN: tuple[str, ...] = (NoController.name, libvirt.Libvirt.name, nova.Nova.name,
                             kubevirt.KubeVirt.name, vmotion.VmotionLike.name)

__all__ = ["BUILT_IN", "CONTROLLERS", "OPTION_KEYS", "Client", "Controller", "OutboundSlots",
           "postcopy_asked", "refusal", "register_controller", "resolve", "start", "supervise"]
