"""One cluster run: every migration of a plan, page-level through the engine, in ONE SimPy
environment, started by the scheduler and negotiated by the operator's policy.

Each attempt is a :class:`~sim.endpoints.Pair` built when it starts: the guest's kind (its
``vm``, ``workload``, ``migration``), the source and destination hosts' QEMU as its endpoints
(``version`` and ``supports``), and the path between them as its link.

Model choices (where this departs from a real cluster):

* A guest is simulated only while it migrates: its guest model starts fresh at each attempt's
  start (fresh workload state, nothing dirtied before), from an RNG seeded with
  ``(seed, guest index, the guest's migration count)``. Guests that never migrate cost nothing.
* The behaviour profile of the engine (:mod:`sim.engine.profiles`) is the guest kind's
  ``migration.qemu_version``; the hosts' versions decide what each side supports.
* The operator enables on each source what it wishes (``migration.capabilities`` and
  ``endpoints.source.enabled`` of the guest kind) and the source's QEMU supports, as a per-host
  configuration would. Then per policy: a negotiation mode (:mod:`sim.negotiation`) for every
  migration, or ``whole-cluster``: XBZRLE only when every host of the cluster supports it at the
  attempt's start, QEMU's own rules (mode ``qemu``) otherwise.
* A completed migration moves the guest to its destination; a failed one leaves it running on
  its source (the engine loses nothing in pre-copy), to be retried or reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from .. import controllers
from ..capabilities import CAPABILITIES
from ..endpoints import Pair
from ..engine.profiles import resolve
from ..negotiation import operate
from ..recorder import Recorder, runs_row
from ..result import Result
from ..spec import EndpointSpec, EndpointsSpec, Scenario
from ..summary import migration_row
from . import tables
from .inventory import Cluster, Host, expand_guests, expand_hosts
from .paths import Paths
from .plans import Move, steps
from .scheduler import Job, Scheduler
from .spec import supports_of


def run_cluster(scenario: Scenario, scenario_name: str | None = None) -> Result:
    """Run a scenario with a ``cluster:`` section (one sweep member) and return its tables."""
    run = ClusterRun(scenario, scenario_name)
    run.env.process(run.conduct())
    run.env.run()
    return run.result()


class ClusterRun:
    """The simulation of one cluster plan (see the module docstring)."""

    def __init__(self, scenario: Scenario, scenario_name: str | None = None) -> None:
        spec = scenario.cluster
        assert spec is not None
        self.scenario = scenario
        self.spec = spec
        self.scenario_name = scenario_name or scenario.name  # a sweep's name, for its members
        self.env = simpy.Environment()
        hosts = expand_hosts(spec)
        self.cluster = Cluster(hosts, expand_guests(scenario, hosts))
        self.paths = Paths(self.env, spec, self.cluster.hosts)
        self.scheduler = Scheduler(self.env, spec.scheduler, self.cluster, self.launch,
                                   self.paths.names)
        self.records: list[tables.Attempt] = []
        self.plan_events: list[tables.PlanEvent] = []
        self._migrations: dict[str, int] = {}  # migrations per guest so far

    # --- the plan -------------------------------------------------------------------------------

    def conduct(self) -> Generator[simpy.Event, Any, None]:
        """Run the plan's steps in order, each to its end."""
        env, plan = self.env, self.spec.plan
        yield env.timeout(plan.start)
        for step in steps(plan, self.cluster):
            self.plan_events.append((env.now, "step", step.label))
            if step.upgrade is not None:
                yield env.timeout(plan.upgrade_time)
                self._upgrade(self.cluster.hosts[step.upgrade])
                continue
            placed = [m for m in step.moves if m.destination is not None]
            for move in step.moves:
                if move.destination is None:
                    self._unplaced(move)
            if placed:
                yield env.process(self.scheduler.run(placed))
        self.plan_events.append((env.now, "done", self.spec.plan.kind))

    def _upgrade(self, host: Host) -> None:
        plan = self.spec.plan
        host.version = plan.to_version
        host.supports = supports_of(plan.to_version, plan.to_supports)
        host.upgraded_at = float(self.env.now)
        self.plan_events.append((self.env.now, "upgraded",
                                 f"{host.name}: " + ",".join(sorted(host.supports))))

    # --- one attempt ----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The negotiation mode of every migration: the policy's (``whole-cluster`` runs with
        QEMU's own rules), or the scenario's ``negotiation`` when the cluster sets no policy."""
        policy = self.spec.policy or self.scenario.negotiation
        return "qemu" if policy == "whole-cluster" else policy

    def wishes(self, kind_caps: set[str], source: Host) -> tuple[str, ...]:
        """What the operator enables on ``source`` (see the module docstring), registry order."""
        policy = self.spec.policy or self.scenario.negotiation
        wished = {c for c in kind_caps if c in source.supports}
        if policy == "whole-cluster":
            wished = {c for c in wished
                      if not CAPABILITIES[c].on_wire or self.cluster.all_support(c)}
        return tuple(c for c in CAPABILITIES if c in wished)

    def launch(self, job: Job) -> simpy.Event:
        """Start one attempt of ``job``; the event fires with whether it completed."""
        env, guest = self.env, job.move.guest
        source, destination = self.cluster.hosts[job.source], self.cluster.hosts[job.destination]
        kind = guest.kind
        mode = self.mode
        wished = self.wishes(set(kind.migration.capabilities)
                             | set(kind.endpoints.source.enabled), source)
        count = self._migrations.get(guest.name, 0)
        self._migrations[guest.name] = count + 1
        view = dataclasses.replace(
            self.scenario, vm=kind.vm, workload=kind.workload, vms=(), cluster=None,
            negotiation=mode, migration=resolve(dataclasses.replace(
                kind.migration, start=float(env.now), capabilities=wished)),
            endpoints=EndpointsSpec(_endpoint(source), _endpoint(destination)))
        mid = len(self.records)
        recorder = Recorder(f"{self.scenario.name}.m{mid}", self.scenario_name, vm=guest.name)
        rng = np.random.default_rng([self.scenario.seed, 1000 + guest.index, count])
        pair = Pair(env, self.paths.link(job.source, job.destination), view, rng, recorder,
                    None, guest.name)
        pair.migration.writes.restart_at(float(env.now))  # a fresh guest from now
        record = tables.Attempt(mid, recorder, job.move.step, job.attempt, job.source,
                                job.destination, job.links, float(env.now) - job.queued_at,
                                float(env.now), source.supports, destination.supports)
        self.records.append(record)
        done = env.event()

        def on_event(t: float, side: str, event: str, data: dict[str, Any]) -> None:
            state = pair.migration.state
            if side == "source" and state.ended and not done.triggered:
                self._ended(pair, record, mode)
                done.succeed(state.status == "completed")

        pair.migration.state.subscribers.append(on_event)
        env.process(operate(pair, mode))
        controller = self.scenario.controller
        if controller is not None and controller.kind != "none":
            env.process(controllers.supervise(pair, controller))
        return done

    def _ended(self, pair: Pair, record: tables.Attempt, mode: str) -> None:
        record.end_s = float(self.env.now)
        pair.recorder.finish(params=dict(self.scenario.params),
                             **migration_row(pair, self.scenario.seed, mode, self.env.now))
        guest = self.cluster.guests[pair.name or ""]
        self.cluster.reserved[record.destination_host] -= guest.memory
        if pair.migration.state.status == "completed":
            self.cluster.move(guest, record.destination_host)
        elif record.attempt <= self.spec.scheduler.retries:
            self.cluster.reserved[record.destination_host] += guest.memory  # retried

    def _unplaced(self, move: Move) -> None:
        """A move no host had room for: a failed runs row, and the guest stays."""
        guest = move.guest
        mid = len(self.records)
        recorder = Recorder(f"{self.scenario.name}.m{mid}", self.scenario_name, vm=guest.name)
        recorder.finish(params=dict(self.scenario.params), **runs_row(
            seed=self.scenario.seed, status="failed", negotiation=self.mode, pages_lost=0,
            failure_reason=f"placement: no host has room for {guest.memory} bytes"))
        now = float(self.env.now)
        supports = self.cluster.hosts[guest.host].supports
        record = tables.Attempt(mid, recorder, move.step, 0, guest.host, "", (), 0.0, now,
                                supports, frozenset())
        record.end_s = now
        self.records.append(record)

    def result(self) -> Result:
        return tables.result(self.scenario, self.scenario.name, self.records, self.plan_events,
                             self.scheduler.queue_rows,
                             self.paths.links_table(float(self.env.now)))


def _endpoint(host: Host) -> EndpointSpec:
    return EndpointSpec(version=host.version,
                        supports=tuple(c for c in CAPABILITIES if c in host.supports))
