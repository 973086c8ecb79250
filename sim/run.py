"""Running scenarios: ``run(scenario) -> Result``, one SimPy environment and one RNG per run."""

from __future__ import annotations

from collections.abc import Callable

from .endpoints import Testbed
from .negotiation import operate
from .result import Result
from .spec import Scenario

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
    ``migration.start`` (:mod:`sim.negotiation`); the run ends when every migration has ended.
    """
    testbed = Testbed(scenario, progress, scenario_name)
    for pair in testbed.pairs:
        testbed.env.process(operate(pair, scenario.negotiation))
    testbed.run()
    return testbed.result()
