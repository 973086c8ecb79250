"""The source thread's CPU time (DESIGN §3): on a fast link it, not the link, sets the pace.

Closed forms on an idle guest (every page sent once, raw): the migration takes
max(bytes / link rate, pages × per-page CPU time), and each bitmap sync stalls the thread for
pages × sync_per_page.
"""

from __future__ import annotations

import pytest

from sim.run import run_one
from sim.spec import LinkSpec, MigrationSpec, Scenario, SourceCpuSpec, VmSpec, WorkloadSpec
from sim.units import GiB

PAGES = GiB // 4096
CPU = SourceCpuSpec()  # the calibrated defaults
PER_PAGE = CPU.per_page + 4096 / CPU.scan_rate + 4096 / CPU.copy_rate


def idle(bandwidth: float, cpu: SourceCpuSpec = CPU) -> Scenario:
    return Scenario(name="cpu", vm=VmSpec(memory=GiB, device_state=0),
                    workload=WorkloadSpec(kind="idle"), link=LinkSpec(bandwidth=bandwidth),
                    migration=MigrationSpec(max_bandwidth=0), source_cpu=cpu)


@pytest.mark.parametrize("gbit", [1, 10, 100])
def test_time_is_the_slower_of_link_and_cpu(gbit):
    rate = gbit * 1e9 / 8
    run = run_one(idle(rate)).runs.iloc[0]
    wire = PAGES * (4096 + 8) / rate
    cpu = PAGES * PER_PAGE
    sync = PAGES * CPU.sync_per_page
    live = run.total_time_s - run.setup_time_s
    assert run.setup_time_s == pytest.approx(sync)
    # completion adds one more sync stall; chunk records add 18 B per 50 ms chunk
    assert live == pytest.approx(max(wire, cpu) + sync, rel=2e-3)


def test_free_cpu_leaves_the_pace_to_the_link():
    rate = 100e9 / 8
    run = run_one(idle(rate, SourceCpuSpec.free())).runs.iloc[0]
    assert run.total_time_s == pytest.approx(PAGES * (4096 + 8) / rate, rel=2e-3)
    assert run.setup_time_s == 0.0
