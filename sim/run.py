"""Running scenarios: ``run(scenario) -> Result``, one SimPy environment and one RNG per run."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from . import kernel
from .errors import ScenarioError
from .precopy import InForce, Migration
from .recorder import Recorder
from .result import Result
from .spec import EndpointsSpec, Scenario

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


def _refuse_unmodelled(scenario: Scenario) -> None:
    """Keys the schema accepts but the engine does not model yet fail loudly, never silently."""
    where = scenario.source_file
    if scenario.negotiation != "qemu":
        raise ScenarioError(f"mode {scenario.negotiation!r} is not modelled yet; only 'qemu' "
                            "(the source's capabilities are used as given)", key="negotiation",
                            file=where)
    if scenario.endpoints != EndpointsSpec():
        raise ScenarioError("per-endpoint supports/enabled are not modelled yet",
                            key="endpoints", file=where)
    if scenario.link.faults:
        raise ScenarioError("faults are not modelled yet", key="link.faults", file=where)


def _in_force(scenario: Scenario) -> InForce:
    caps = frozenset(scenario.migration.capabilities)
    sizes = None
    if "xbzrle" in caps:
        from .content import xbzrle_size_table

        sizes = xbzrle_size_table(scenario.workload, scenario.vm.page_size)
    return InForce(capabilities=caps, xbzrle_sizes=sizes)


def run_one(scenario: Scenario, progress: Progress | None = None,
            scenario_name: str | None = None) -> Result:
    """Run a single (non-sweep) scenario; ``scenario_name`` is the sweep's name for a member."""
    _refuse_unmodelled(scenario)
    rng = np.random.default_rng(scenario.seed)
    env = simpy.Environment()
    rec = Recorder(scenario.name, scenario_name or scenario.name)
    in_force = _in_force(scenario)
    mig = Migration(env, scenario, rec, rng, in_force, progress)
    env.process(mig.process())
    env.run()
    _finish(rec, scenario, mig)
    frames = rec.frames()
    return Result(frames["runs"], frames["passes"], frames["samples"], frames["events"],
                  scenario)


def _finish(rec: Recorder, scenario: Scenario, mig: Migration) -> None:
    c = mig.totals
    hits = int(c[kernel.C_XBZRLE])
    xb_bytes = int(c[kernel.C_XBZRLE_BYTES])
    sent_pages = int(c[kernel.C_PAGES_SENT])
    live = mig.total_time - mig.setup_time
    lost = mig.pages_lost()
    extra = {"memory_match": mig.pages_differing() == 0} if mig.exact else {}
    rec.finish(
        params=dict(scenario.params),
        seed=scenario.seed,
        status=mig.status,
        failure_reason=mig.failure_reason,
        negotiation=scenario.negotiation,
        capabilities=",".join(sorted(mig.caps)),
        total_time_s=mig.total_time,
        setup_time_s=mig.setup_time,
        downtime_s=mig.downtime if mig.status == "completed" else float("nan"),
        expected_downtime_s=mig.expected_downtime,
        transferred_bytes=mig.transferred,
        precopy_bytes=mig.precopy_bytes,
        downtime_bytes=mig.downtime_bytes,
        normal_pages=int(c[kernel.C_NORMAL]),
        zero_pages=int(c[kernel.C_ZERO]),
        xbzrle_pages=hits,
        xbzrle_bytes=xb_bytes,
        xbzrle_cache_miss=int(c[kernel.C_CACHE_MISS]),
        xbzrle_cache_miss_rate=(c[kernel.C_CACHE_MISS] / sent_pages) if sent_pages else 0.0,
        xbzrle_encoding_rate=(hits * scenario.vm.page_size / xb_bytes) if xb_bytes else 0.0,
        xbzrle_overflow=int(c[kernel.C_OVERFLOW]),
        dirty_sync_count=mig.sync_count,
        mbps=(mig.transferred * 8 / live / 1e6) if live > 0 else 0.0,
        max_throttle_pct=0.0,
        pages_lost=lost,
        **extra,
    )
