"""Running scenarios: ``run(scenario) -> Result``, one SimPy environment and one RNG per run.

A :class:`Testbed` is one simulation: a SimPy environment, the shared link, and per guest a
source/destination :class:`~sim.endpoints.Pair` around its migration. Guests run from sim time 0;
a migration starts when its source's ``migrate`` is called (by the negotiation's operator, or a
QMP client). :meth:`Testbed.result` builds the tables, the runs row among them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np
import simpy

from . import controllers
from .endpoints import Endpoint, Pair
from .engine.profiles import resolve
from .link import Link, Route
from .negotiation import operate
from .recorder import Recorder
from .result import Result
from .spec import FaultSpec, GuestSpec, Scenario
from .summary import migration_row

Progress = Callable[[float, float], None]


def run(scenario: Scenario, progress: Progress | None = None) -> Result:
    """Run a scenario (every member, for a sweep) and return its tables.

    The same scenario and seed always give identical tables: each run owns one
    ``numpy.random.Generator`` seeded from ``scenario.seed`` and nothing reads global state.
    """
    from .scenario import expand

    if scenario.sweep is None:
        return run_one(scenario, progress)
    results = [run_one(member, progress, scenario_name=scenario.name)
               for member in expand(scenario)]
    result = Result.concat(results)
    result.scenario = scenario  # the sweep itself, so scenario.yaml reproduces all members
    return result


def run_one(scenario: Scenario, progress: Progress | None = None,
            scenario_name: str | None = None) -> Result:
    """Run a single (non-sweep) scenario; ``scenario_name`` is the sweep's name for a member.

    Every guest's operator negotiates by ``scenario.negotiation`` and starts its migration at
    ``migration.start`` (:mod:`sim.negotiation`); a ``controller:`` runs beside each migration
    (:mod:`sim.controllers`); the run ends when every migration has ended.
    """
    if scenario.cluster is not None:
        from .cluster.runner import run_cluster
        return run_cluster(scenario, scenario_name)
    testbed = Testbed(scenario, progress, scenario_name)
    managed = scenario.controller is not None and controllers.start(
        testbed.env, testbed.pairs, scenario.controller, scenario.negotiation,
        fleet=bool(scenario.vms))
    for pair in testbed.pairs if not managed else ():
        testbed.env.process(operate(pair, scenario.negotiation))
    testbed.run()
    return testbed.result()


class Testbed:
    """One simulation: a SimPy environment, the link, and a source/destination pair per guest."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, scenario: Scenario, progress: Progress | None = None,
                 scenario_name: str | None = None,
                 routes: Mapping[str, Route] | None = None) -> None:
        """``routes`` gives a guest (by name) its own route instead of the scenario's link,
        e.g. a :class:`sim.network.PathLink`; the link's faults act only on the shared link."""
        self.scenario = scenario
        self.negotiation = scenario.negotiation
        self.env = simpy.Environment()
        self.link = Link(scenario.link)
        guests = scenario.vms or (GuestSpec("", scenario.vm, scenario.workload,
                                            scenario.migration, scenario.endpoints),)
        fleet = bool(scenario.vms)
        self.pairs: list[Pair] = []
        for i, guest in enumerate(guests):
            view = dataclasses.replace(scenario, vm=guest.vm, workload=guest.workload,
                                       migration=resolve(guest.migration),
                                       endpoints=guest.endpoints, vms=())
            # A single guest draws from the scenario's seed; a fleet's guest i from (seed, i).
            rng = (np.random.default_rng([scenario.seed, 1000 + i]) if fleet
                   else np.random.default_rng(scenario.seed))
            rec = Recorder(scenario.name, scenario_name or scenario.name,
                           vm=(guest.name or f"vm{i}") if fleet else None)
            name = guest.name or (f"vm{i}" if fleet else None)
            faults = [f for f in scenario.link.faults if f.vm in (None, name)]
            route = (routes or {}).get(name or "", self.link)
            self.pairs.append(Pair(self.env, route, view, rng, rec,
                                   progress if i == 0 else None, name, faults))
        for fault in scenario.link.faults:
            self.env.process(self._log_fault(fault))

    def _log_fault(self, fault: FaultSpec) -> Generator[simpy.Event, None, None]:
        """Every fault is an event, at its time, in the tables of the guests it hits."""
        yield self.env.timeout(fault.at)
        where = {"link_down": "link", "bandwidth_drop": "link",
                 "destination_crash": "destination", "cancel": "management"}[fault.kind]
        detail: dict[str, Any] = {"kind": fault.kind}
        if fault.kind in ("link_down", "bandwidth_drop"):
            detail["duration_s"] = fault.duration if fault.duration > 0 else None  # None: for good
        if fault.kind == "bandwidth_drop":
            detail["bandwidth_bytes_per_s"] = fault.bandwidth
        for pair in self.pairs:
            if fault.vm in (None, pair.name):
                pair.recorder.event(self.env.now, where, "fault", detail)
        if fault.kind == "link_down":
            yield self.env.timeout(fault.duration)
            for pair in self.pairs:
                pair.recorder.event(self.env.now, "link", "fault-end", "link up")

    @property
    def source(self) -> Endpoint:
        return self.pairs[0].source

    @property
    def destination(self) -> Endpoint:
        return self.pairs[0].destination

    @property
    def now(self) -> float:
        return float(self.env.now)

    def advance(self, until: float, wall_budget: float | None = None) -> None:
        """Run the simulation up to sim time ``until`` (nothing if it is not later than now).

        A guest with no migration running has its writes applied as time passes whenever more
        than :data:`sim.engine.writes.STEP_WRITES` of them wait, one step at a time, so a long
        idle wait costs bounded memory (shorter waits are applied at the migration's start, as
        in a scenario run). With ``wall_budget`` (seconds of wall time) it returns once that
        much has passed, possibly short of ``until``: the next call goes on from there. One
        step costs at most a chunk (50 ms of sim time) or one step of writes.
        """
        deadline = time.monotonic() + wall_budget if wall_budget is not None else math.inf
        env = self.env
        while env.now < until:
            idle = self._idle()
            step = min([until, *(p.migration.writes.step_end(until) for p in idle)])
            if step > env.now:
                # An event at the step's end: a cruising migration runs ahead of the clock up
                # to the next event (sim.engine.cruise), and must not run past what the caller
                # may look at next (query-migrate at ``until`` saw the state of an hour later).
                env.timeout(step - env.now)
            while env.peek() < step:
                env.step()
                if time.monotonic() >= deadline:
                    return
                if len(self._idle()) != len(idle):
                    # A migration ended: its guest's writes now bound the step (otherwise the
                    # clock would jump to ``until`` and leave them all to apply at once).
                    break
            else:
                if step > env.now:
                    env.run(until=step)
            for pair in self._idle():
                writes = pair.migration.writes
                if writes.step_end(until) < until:  # more than a step waits: apply this one
                    writes.apply_until(env.now)
            if time.monotonic() >= deadline:
                return

    def _idle(self) -> list[Pair]:
        """The pairs whose source runs its guest with no migration in progress (before the
        first, or after a failed or cancelled one): nothing else applies their writes."""
        return [p for p in self.pairs
                if p.migration.state.status in ("none", "failed", "cancelled")]

    def run(self) -> None:
        """Run until nothing is left to happen (every migration has ended)."""
        self.env.run()

    def result(self) -> Result:
        """The tables so far: a run that has not ended shows its current status."""
        for pair in self.pairs:
            if not pair.recorder.finished:
                pair.recorder.finish(params=dict(self.scenario.params), **_summary(pair, self))
        # Guests whose runs rows have the same columns (all of a fleet, as a rule) build their
        # tables together; a guest with other columns (exact mode's memory_match) starts a group.
        groups: list[list[Recorder]] = []
        for pair in self.pairs:
            if groups and groups[-1][0].same_columns(pair.recorder):
                groups[-1].append(pair.recorder)
            else:
                groups.append([pair.recorder])
        results = []
        for group in groups:
            frames = Recorder.frames_of(group)
            results.append(Result(frames["runs"], frames["passes"], frames["samples"],
                                  frames["events"], self.scenario))
        # One group (a single guest, a fleet): its tables are new, so no copy (Result.concat
        # copies one result's tables: a thousand guests' samples are gigabytes).
        result = results[0] if len(results) == 1 else Result.concat(results)
        result.scenario = self.scenario
        return result


def _summary(pair: Pair, testbed: Testbed) -> dict[str, Any]:
    """The runs row of one guest's migration (DESIGN §6), from its named state."""
    return migration_row(pair, testbed.scenario.seed, testbed.negotiation, testbed.env.now)
