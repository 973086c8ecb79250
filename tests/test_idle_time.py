"""Time before a migration starts costs memory independent of its length: the writes of a long
wait are drawn and applied in steps of at most ``STEP_WRITES`` (sim.engine.writes), every write is
still applied (the write count is the closed form rate x time), and the memory estimate does not
refuse a late ``migration.start``."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from builders import track_buffer

from sim import bits, budget
from sim.engine import writes as writes_module
from sim.run import Testbed
from sim.spec import MigrationSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import MiB

RATE = 2000.0


def late_scenario(start: float, kind: str = "uniform", content: str = "modelled") -> Scenario:
    return Scenario(name="late", seed=5, vm=VmSpec(memory=16 * MiB, content=content),
                    workload=WorkloadSpec(kind=kind, writes_per_s=RATE),
                    migration=MigrationSpec(start=start))


def wait_before(testbed: Testbed, t: float) -> int:
    """Apply the guest's writes up to ``t`` as the migration's start does; returns the most
    writes the buffer held at once."""
    longest = track_buffer(testbed)
    testbed.advance(t)
    testbed.pairs[0].migration.writes.apply_until(t)
    return longest()


@pytest.mark.parametrize("content", ["modelled", "exact"])
def test_long_wait_is_applied_in_bounded_steps(monkeypatch: pytest.MonkeyPatch,
                                               content: str) -> None:
    monkeypatch.setattr(writes_module, "STEP_WRITES", 20_000)
    for start in (50.0, 400.0):
        tb = Testbed(late_scenario(start, content=content))
        longest = wait_before(tb, start)
        assert 0 < longest <= 20_000
        guest = tb.pairs[0].migration.guest
        # Every write happened: write k of the steady clock is at k / rate, k = 0, 1, ...
        assert int(guest.version.sum()) == math.ceil(RATE * start)
        # The dirty log lists each of its words that is not empty once, whatever the wait,
        # and holds each written page.
        count = int(guest.dirty_count[0])
        listed = guest.dirty_words[:count]
        assert np.unique(listed).size == count
        assert set(listed) == set(np.flatnonzero(guest.dirty_bits))
        dirty = bits.unpack(guest.dirty_bits, guest.pages)
        assert (dirty == (guest.version > 0)).all()


def test_short_interval_is_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below STEP_WRITES an interval is drawn in one piece (so existing results stand)."""
    tb = Testbed(late_scenario(10.0))
    assert wait_before(tb, 10.0) == math.ceil(RATE * 10.0)


def test_phased_workload_steps_by_its_fastest_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.spec import PhaseSpec

    monkeypatch.setattr(writes_module, "STEP_WRITES", 5_000)
    phases = (PhaseSpec(duration=1.0, workload=WorkloadSpec(kind="uniform", writes_per_s=100.0)),
              PhaseSpec(duration=1.0, workload=WorkloadSpec(kind="uniform", writes_per_s=8000.0)))
    scenario = Scenario(name="late", seed=5, vm=VmSpec(memory=16 * MiB),
                        workload=WorkloadSpec(kind="phased", phases=phases),
                        migration=MigrationSpec(start=40.0))
    tb = Testbed(scenario)
    assert wait_before(tb, 40.0) <= 5_000
    assert int(tb.pairs[0].migration.guest.version.sum()) == 20 * (100 + 8000)


@pytest.mark.slow
def test_a_day_of_waiting_costs_no_more_memory_than_an_hour() -> None:
    """``migration.start: 24h`` at 2000 writes/s (173 M writes): the peak of traced memory is
    that of a 1 h wait (7.2 M writes), within a few MiB, and far below the writes' own size."""
    peaks = {}
    for start in (3600.0, 86400.0):
        tb = Testbed(late_scenario(start))
        tracemalloc.start()
        try:
            tb.advance(start)
            tb.pairs[0].migration.writes.apply_until(start)
            peaks[start] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[86400.0] < peaks[3600.0] + 8 * MiB
    assert peaks[86400.0] < 24 * writes_module.STEP_WRITES * 4  # not 173 M x 24 bytes


def test_budget_does_not_count_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(budget.LIMIT_ENV, "1GiB")
    assert budget.refusal(late_scenario(86400.0)) is None
    need = {n.what: n.bytes for n in budget.needs(late_scenario(86400.0))}
    assert need["write buffer"] == {n.what: n.bytes
                                    for n in budget.needs(late_scenario(0.0))}["write buffer"]


def test_advance_with_a_wall_budget_falls_behind_then_catches_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Testbed.advance(until, wall_budget) does bounded work per call (one step with a zero
    budget), applies an idle guest's writes as it goes (never more than a step waiting), and
    successive calls reach ``until`` with every write applied."""
    monkeypatch.setattr(writes_module, "STEP_WRITES", 10_000)
    tb = Testbed(late_scenario(1e9))
    buffer = tb.pairs[0].migration.writes
    tb.advance(100.0, wall_budget=0.0)
    assert 0 < tb.now < 100.0  # one step: 5 s of writes at 2000/s
    calls = 1
    while tb.now < 100.0:
        tb.advance(100.0, wall_budget=0.0)
        assert RATE * (tb.now - buffer.until) <= 10_000  # what waits is at most a step
        calls += 1
    assert calls >= 100 * RATE / 10_000
    buffer.apply_until(100.0)
    assert int(tb.pairs[0].migration.guest.version.sum()) == math.ceil(RATE * 100.0)


def test_a_migration_that_ends_mid_advance_does_not_jump_the_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration cancelled (max_time) while advance() runs towards a far ``until``: from then
    on its guest's writes bound the steps. Before, the clock jumped to ``until`` at once and the
    next call had to apply every write up to it (the QMP server at a high --speed hung)."""
    from sim.negotiation import operate

    monkeypatch.setattr(writes_module, "STEP_WRITES", 10_000)
    sc = Scenario(name="cut", seed=5, vm=VmSpec(memory=16 * MiB),
                  workload=WorkloadSpec(kind="uniform", writes_per_s=RATE),
                  migration=MigrationSpec(max_time=1.0, downtime_limit=1e-6, max_bandwidth=1e6))
    tb = Testbed(sc)
    tb.env.process(operate(tb.pairs[0], sc.negotiation))
    mig = tb.pairs[0].migration
    far = 1e5  # 2e8 writes away: a call that jumped there would apply them all at once
    while mig.state.status not in ("cancelled", "completed", "failed"):
        tb.advance(far, wall_budget=0.02)
        assert tb.now < far
    assert mig.state.status == "cancelled"
    for _ in range(5):
        tb.advance(far, wall_budget=0.0)
        # what waits to be applied is at most a step, however far ``until`` is
        assert RATE * (tb.now - mig.writes.until) <= 10_000
    assert tb.now < far
