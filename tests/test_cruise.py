"""The cruise (:mod:`sim.engine.cruise`) runs the live loop's uneventful turns in compiled code
and steps a fleet's migrations in time order: every table must be what the one-turn-a-step
loop gives, value for value, where shares change (a fleet whose guests end at different times),
commands arrive (a controller's new downtime limit and stop/cont) and the link changes."""

from __future__ import annotations

import pandas as pd
import pytest

import sim.engine.precopy as precopy
from sim import bits
from sim.engine.cruise import nonzero_to_send
from sim.run import run_one
from sim.scenario import loads_scenario

FLEET = """
name: fleet
seed: 3
vms:
  - {name: a, vm: {memory: 64MiB}, workload: {kind: uniform, writes_per_s: 400}}
  - {name: b, vm: {memory: 32MiB, zero_fraction: 0.3}, workload: {kind: hotspot, writes_per_s: 2000, hot_set: 4MiB}}
  - {name: c, vm: {memory: 48MiB}, workload: {kind: uniform, writes_per_s: 100}, migration: {start: 0.7s}}
link: {bandwidth: 200Mbit/s, schedule: [{at: 1.3s, bandwidth: 120Mbit/s}]}
"""

#: a fleet whose guests wait out their window budgets (max-bandwidth under the share)
CAPPED = """
name: capped
seed: 4
vms:
  - {name: a, vm: {memory: 64MiB}, workload: {kind: uniform, writes_per_s: 400},
     migration: {max_bandwidth: 2MiB/s}}
  - {name: b, vm: {memory: 32MiB, zero_fraction: 0.3}, workload: {kind: hotspot, writes_per_s: 2000, hot_set: 4MiB}}
  - {name: c, vm: {memory: 48MiB}, workload: {kind: uniform, writes_per_s: 100},
     migration: {start: 0.7s, max_bandwidth: 5MiB/s}}
link: {bandwidth: 200Mbit/s, schedule: [{at: 1.3s, bandwidth: 120Mbit/s}]}
"""

CONTROLLED = """
name: controlled
vm: {memory: 256MiB}
workload: {kind: hotspot, writes_per_s: 60000, hot_set: 100MiB, write_pattern: full}
link: {bandwidth: 1Gbit/s}
migration: {max_bandwidth: 0, max_time: 20s}
controller: {kind: KIND}
"""


def _both(text: str) -> tuple[object, object]:
    scenario = loads_scenario(text, file="t.yaml")
    results = []
    for cruising in (True, False):
        precopy.CRUISING = cruising
        try:
            results.append(run_one(scenario))
        finally:
            precopy.CRUISING = True
    return results[0], results[1]


#: a fleet whose controller reacts to each guest's passes at once (its Python turns then come
#: before the other guests' later turns)
CONTROLLED_FLEET = FLEET.replace("name: fleet", "name: controlled-fleet") + \
    "controller: {kind: kubevirt}\n"


@pytest.mark.parametrize("text", [FLEET, CAPPED, CONTROLLED.replace("KIND", "kubevirt"),
                                  CONTROLLED.replace("KIND", "vmotion-like"), CONTROLLED_FLEET],
                         ids=["fleet", "capped-fleet", "kubevirt", "vmotion-like",
                              "controlled-fleet"])
def test_cruise_gives_the_same_tables(text: str) -> None:
    cruised, stepped = _both(text)
    for name in ("runs", "passes", "samples", "events"):
        pd.testing.assert_frame_equal(getattr(cruised, name), getattr(stepped, name),
                                      check_exact=True, obj=name)
    assert len(stepped.samples) > 20  # the runs closed windows: the cruise had turns to run


def test_nonzero_to_send_counts_pending_or_dirty_pages_that_are_not_zero() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    pending, dirty = rng.random(10_000) < 0.3, rng.random(10_000) < 0.2
    zero = rng.random(10_000) < 0.25
    expected = int(((pending | dirty) & ~zero).sum())
    assert nonzero_to_send(bits.pack(pending), bits.pack(dirty), bits.pack(zero)) == expected


def test_only_a_controller_makes_a_migration_reactive() -> None:
    """The coordinator lets other guests cruise past a guest's Python turn (a sync) unless
    something subscribed to that guest's events acts at once: a controller does, the
    endpoints' own bookkeeping and the operator's migrate-continue do not."""
    from sim.engine.cruise import _reactive
    from sim.run import Testbed

    plain = Testbed(loads_scenario(FLEET, file="t.yaml"))
    assert not any(_reactive(p.migration) for p in plain.pairs)
    from sim import controllers
    scenario = loads_scenario(CONTROLLED_FLEET, file="t.yaml")
    managed = Testbed(scenario)
    assert scenario.controller is not None
    controllers.start(managed.env, managed.pairs, scenario.controller, scenario.negotiation,
                      fleet=True)
    managed.env.run(until=0.5)
    assert all(_reactive(p.migration) for p in managed.pairs)


def test_a_testbed_sees_the_migration_at_its_own_time() -> None:
    """A cruising migration runs ahead of SimPy's clock only up to the next event: a testbed
    advanced to t shows the state at t (query-migrate once showed the state of the deadline,
    an hour ahead, since nothing else was due)."""
    from sim.run import Testbed
    from sim.spec import Scenario, VmSpec, WorkloadSpec
    from sim.units import GiB

    tb = Testbed(Scenario(name="tb", seed=9, vm=VmSpec(memory=1 * GiB),
                          workload=WorkloadSpec(kind="uniform", writes_per_s=10_000.0)))
    tb.advance(1.0)
    tb.source.migrate_set_parameters({"max-bandwidth": 1 << 20})
    tb.source.migrate()
    for t in (2.0, 3.5):
        tb.advance(t)
        transferred = tb.source.query_migrate()["ram"]["transferred"]
        # 1 MiB/s from t = 1 s (each 100 ms window may go a page over its budget)
        assert transferred == pytest.approx((t - 1.0) * 2**20, rel=0.05)
