"""Integrity sweep: random exact-content scenarios (workload, write pattern, capabilities, faults,
negotiation, destination) must never lie about the guest's memory.

completed ⇒ the destination's RAM equals the source's byte for byte (``memory_match``) and
``pages_lost`` is 0; failed or cancelled in pre-copy ⇒ the source still runs and ``pages_lost`` is
0. The cases are drawn from a fixed seed, so a failure names a reproducible case.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.negotiation import operate
from sim.run import Testbed
from sim.spec import (
    EndpointSpec,
    EndpointsSpec,
    FaultSpec,
    LinkSpec,
    MigrationSpec,
    Scenario,
    VmSpec,
    WorkloadSpec,
)
from sim.units import MiB

CASES = 50


def random_scenario(i: int) -> Scenario:
    rng = np.random.default_rng([2026, i])
    memory = int(rng.choice([4, 8, 16])) * MiB
    kind = str(rng.choice(["uniform", "hotspot", "zipf", "sequential", "idle"]))
    pattern = str(rng.choice(["clustered", "scattered", "counter", "full", "zero"]))
    workload = WorkloadSpec(
        kind=kind, writes_per_s=float(rng.choice([500, 2000, 8000])),
        hot_set=memory // 8, write_size=int(rng.choice([8, 64, 512])),
        write_pattern=pattern)
    caps = tuple(c for c in ("xbzrle", "return-path") if rng.random() < 0.5)
    faults = []
    if rng.random() < 0.3:
        faults.append(FaultSpec(kind="link_down", at=float(rng.uniform(0.01, 0.3)),
                                duration=float(rng.uniform(0.05, 0.5))))
    if rng.random() < 0.2:
        faults.append(FaultSpec(kind="destination_crash", at=float(rng.uniform(0.01, 0.3))))
    if rng.random() < 0.2:
        faults.append(FaultSpec(kind="cancel", at=float(rng.uniform(0.01, 0.3))))
    if rng.random() < 0.2:
        faults.append(FaultSpec(kind="bandwidth_drop", at=float(rng.uniform(0.0, 1.0)),
                                bandwidth=float(rng.uniform(1e6, 5e6))))
    destination = EndpointSpec(version=str(rng.choice(["1.1", "7.2", "10.2"])))
    return Scenario(
        name=f"integrity-{i}", seed=i,
        vm=VmSpec(memory=memory, content="exact", zero_fraction=float(rng.uniform(0, 0.5)),
                  device_state=int(rng.choice([0, 64 * 1024]))),
        workload=workload,
        link=LinkSpec(bandwidth=float(rng.choice([20e6, 50e6, 125e6])),
                      latency=float(rng.choice([0.0, 1e-3])), faults=tuple(faults)),
        migration=MigrationSpec(capabilities=caps, xbzrle_cache_size=int(memory // 4),
                                max_bandwidth=0, downtime_limit=float(rng.choice([0.05, 0.3])),
                                max_time=5.0),
        endpoints=EndpointsSpec(destination=destination),
        negotiation=str(rng.choice(["none", "qemu", "management", "inband"])))


@pytest.fixture(scope="module")
def outcomes():
    """Every case run once: (scenario, the source guest still running, its runs row)."""
    done = {}
    for i in range(CASES):
        sc = random_scenario(i)
        tb = Testbed(sc)
        tb.env.process(operate(tb.pairs[0], sc.negotiation))
        tb.run()
        done[i] = (sc, tb.pairs[0].migration.guest.running, tb.result().runs.iloc[0])
    return done


@pytest.mark.parametrize("i", range(CASES))
def test_never_a_silent_loss(outcomes, i):
    _, source_running, run = outcomes[i]
    assert run.status in ("completed", "failed", "cancelled")
    assert run.pages_lost == 0
    if run.status == "completed":
        assert bool(run.memory_match), "destination RAM differs from the source's"
        assert not source_running  # the guest now runs on the destination
    else:
        assert source_running, "a failed or cancelled pre-copy must leave the source running"
        assert run.failure_reason != ""


def test_the_sweep_exercises_every_outcome(outcomes):
    """The drawn cases are not all alike (guards the sweep itself)."""
    reasons = {run.failure_reason.split(":")[0] for _, _, run in outcomes.values()}
    assert {"", "destination crashed", "load of migration failed", "migrate_cancel"} <= reasons
