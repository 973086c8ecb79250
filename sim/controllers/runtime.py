"""Running controllers beside migrations: :func:`supervise` (one pair's controller as a SimPy
process), :class:`OutboundSlots` (a fleet's outbound limit) and :func:`start` (see
:mod:`sim.controllers`)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from ..engine.state import ENDED
from ..errors import PluginError
from ..negotiation import operate
from ..spec import ControllerSpec
from .base import Client, call, resolve

if TYPE_CHECKING:
    from ..endpoints import Pair


def supervise(pair: Pair, spec: ControllerSpec) -> Generator[simpy.Event, Any, None]:
    """The controller of one pair, as a SimPy process: from the migration's start to its end,
    deliver the source's events and poll ``query-migrate``; stop on a controller failure."""
    env, mig = pair.env, pair.migration
    cls = resolve(spec.kind, pair.scenario.source_file)
    interval = spec.poll_interval or cls.poll_interval
    queue: list[tuple[str, dict[str, Any]]] = []
    wake: list[simpy.Event] = [env.event()]

    def on_event(t: float, side: str, event: str, data: dict[str, Any]) -> None:
        if side == "source" and event in ("MIGRATION", "MIGRATION_PASS"):
            queue.append((event, dict(data)))
            if not wake[0].triggered:
                wake[0].succeed()

    mig.state.subscribers.append(on_event)
    while mig.state.status == "none":  # the operator (or an outbound slot) starts it
        yield wake[0]
        wake[0] = env.event()
    client = Client(pair, cls.name)
    try:
        ctl = call(cls.name, "__init__", cls, spec)
        call(cls.name, "start", ctl.start, client)
        next_poll = env.now
        while True:
            while queue:
                name, data = queue.pop(0)
                call(cls.name, "event", ctl.event, client, name, data)
            if mig.state.status in ENDED:
                break
            while client.timers and client.timers[0][0] <= env.now:
                _, _, callback = client.timers.pop(0)
                call(cls.name, "timer", callback)
            if env.now >= next_poll - 1e-12:
                call(cls.name, "poll", ctl.poll, client, client.query_migrate())
                next_poll = env.now + interval
            if mig.state.status in ENDED:
                continue  # deliver the final events first
            t_next = min(next_poll, client.timers[0][0] if client.timers else math.inf)
            wake[0] = env.event() if wake[0].triggered else wake[0]
            if not queue:
                yield env.any_of([env.timeout(max(0.0, t_next - env.now)), wake[0]])
    except PluginError as err:
        client.note("error", error=str(err))
        if mig.state.status in ("setup", "active", "device", "pre-switchover", "wait-unplug"):
            mig.request_cancel(str(err))
    finally:
        mig.state.subscribers.remove(on_event)
    if mig.paused_at is not None and mig.state.status != "completed":
        # libvirt restores the source domain's state when a migration it paused for ends
        client.cont()


class OutboundSlots:
    """A fleet's outbound migrations from one source host, at most ``limit`` at a time
    (KubeVirt's parallelOutboundMigrationsPerNode): an operator waits for a slot before it
    starts its migration, and the slot frees when that migration ends."""

    def __init__(self, env: simpy.Environment, limit: int) -> None:
        self.env = env
        self.resource = simpy.Resource(env, capacity=limit)

    def operate(self, pair: Pair, mode: str, name: str,
                ) -> Generator[simpy.Event, Any, None]:
        env = pair.env
        yield env.timeout(pair.scenario.migration.start)
        request = self.resource.request()
        if not request.triggered:
            Client(pair, name).note("queued", running=self.resource.count)
            yield request
            Client(pair, name).note("admitted", waited_s=env.now - pair.scenario.migration.start)
        else:
            yield request

        def release(t: float, side: str, event: str, data: dict[str, Any]) -> None:
            if side == "source" and event == "MIGRATION" and data.get("status") in ENDED:
                pair.migration.state.subscribers.remove(release)
                self.resource.release(request)

        pair.migration.state.subscribers.append(release)
        yield from operate(pair, mode)


def start(env: simpy.Environment, pairs: list[Pair], spec: ControllerSpec, mode: str,
          fleet: bool) -> bool:
    """Start the operators and controllers of a run with ``controller:``; False when its kind
    is ``none`` (the caller starts the operators as usual)."""
    if spec.kind == "none":
        return False
    cls = resolve(spec.kind, pairs[0].scenario.source_file)
    limit = cls.outbound_limit(spec) if fleet else None
    slots = OutboundSlots(env, limit) if limit is not None else None
    for pair in pairs:
        if slots is not None:
            env.process(slots.operate(pair, mode, cls.name))
        else:
                env.process(operate(pair, mode))
        env.process(supervise(pair, spec))
    return True
