"""The time budget (sim.budget.time_refusal): a scenario whose worst case (a migration that
never converges, run to its deadline) would take longer than the limit to simulate is refused
at load with one line naming the key that drives it; the estimate is checked against a real run."""

from __future__ import annotations

import dataclasses
import os
import time
from unittest import mock

import pytest

from sim import budget
from sim.errors import ScenarioError
from sim.run import run_one
from sim.scenario import loads_scenario

NONCONVERGING = """\
name: busy
vm: {memory: 64MiB}
workload: {kind: uniform, writes_per_s: 1000000}
link: {bandwidth: 1Gbit/s}
migration: {max_sim_time: 100000h}
"""


def _refused(text: str) -> str:
    with pytest.raises(ScenarioError) as err:
        loads_scenario(text)
    return str(err.value)


def test_a_deadline_too_far_for_the_write_rate_is_refused():
    line = _refused(NONCONVERGING)
    assert line.startswith("<string>:3: workload.writes_per_s: a migration that does not "
                           "converge would take about"), line
    assert "1e+06 writes/s for up to 100,000 h" in line and "(got 1000000)" in line


def test_an_idle_guest_with_an_endless_deadline_names_the_deadline():
    """No writes: the work is the chunks of the live loop up to max_sim_time."""
    line = _refused(NONCONVERGING.replace("uniform, writes_per_s: 1000000", "idle")
                    .replace("{max_sim_time: 100000h}", "{max_sim_time: 1000000h, "
                                                        "max_bandwidth: 1KiB/s}"))
    assert "migration.max_sim_time: a migration that does not converge" in line, line


def test_a_saturated_link_counts_its_pages():
    """A fast link kept busy to the deadline sends pages all along, as many as the guest has plus
    one per write: a 4 TiB guest rewritten 10^6 times a second over 1 Tbit/s for 4 hours."""
    busy = (NONCONVERGING.replace("64MiB", "4TiB").replace("1Gbit/s", "1Tbit/s")
            .replace("{max_sim_time: 100000h}", "{max_sim_time: 4h, max_bandwidth: 0}"))
    line = _refused(busy)
    assert "link.bandwidth:" in line and "pages sent in up to 4 h" in line, line
    # an idle guest sends its pages once, however fast the link and far the deadline
    idle = NONCONVERGING.replace("uniform, writes_per_s: 1000000", "idle").replace(
        "1Gbit/s", "1Tbit/s").replace("100000h", "2h")
    assert loads_scenario(idle).link.bandwidth == pytest.approx(1e12 / 8)


def test_a_late_start_counts_its_writes():
    line = _refused(NONCONVERGING.replace("max_sim_time: 100000h", "start: 100000h"))
    assert "workload.writes_per_s" in line and "100,001 h" in line, line


def test_the_limit_can_be_raised_and_the_fleet_adds_up():
    with mock.patch.dict(os.environ, {budget.TIME_LIMIT_ENV: "1000000h"}):
        assert loads_scenario(NONCONVERGING).migration.max_sim_time == 100000 * 3600.0
    one = loads_scenario(NONCONVERGING.replace("100000h", "10min"))
    alone = next(w for w in budget.work(one) if w.key.startswith("workload"))
    fleet = loads_scenario(
        "name: f\nlink: {bandwidth: 1Gbit/s}\nvms:\n"
        + "".join(f"  - {{name: g{i}, vm: {{memory: 64MiB}}, workload: {{kind: uniform, "
                  "writes_per_s: 1000000}, migration: {max_sim_time: 10min}}\n"
                  for i in range(3)))
    writers = [w for w in budget.work(fleet) if w.key.endswith("writes_per_s")]
    assert sum(w.seconds for w in writers) == pytest.approx(3 * alone.seconds)


def test_the_estimate_bounds_a_real_nonconverging_run():
    """The worst case is what a run that never converges costs: measured, within a factor the
    machine's noise allows (the constants were measured on a 2-core machine)."""
    sc = loads_scenario(NONCONVERGING.replace("100000h", "20s"))
    est = sum(w.seconds for w in budget.work(sc))
    t0 = time.process_time()
    row = run_one(dataclasses.replace(sc)).runs.iloc[0]
    took = time.process_time() - t0
    assert row.status == "cancelled" and row.failure_reason == "not converged"
    assert est / 5 <= took <= est * 3, (took, est)
