"""The host's other costs (issue 15, item 1): the destination's load path paces the stream with
the source and the link (the slowest sets it; on one shared core source and destination add),
and the switchover's fixed costs add to the downtime, beyond what QEMU's threshold test knows.
Checked against closed forms on an idle guest (its RAM is sent once, in one pass)."""

from __future__ import annotations

import dataclasses

import pytest
from builders import FREE_CPU, IDLE_MEMORY, closed_form_scenario

from sim.run import run_one
from sim.scenario import loads_scenario
from sim.spec import (
    DestinationCpuSpec,
    LinkSpec,
    MigrationSpec,
    RegionSpec,
    SourceCpuSpec,
    SwitchoverCostSpec,
    VmSpec,
    WorkloadSpec,
)
from sim.units import MiB

PAGES = IDLE_MEMORY // 4096
FAST = 100e9 / 8  # 100 Gbit/s: the link never sets the pace here


def _idle(**fields) -> object:
    base = dict(vm=VmSpec(memory=IDLE_MEMORY, device_state=0), workload=WorkloadSpec(kind="idle"),
                link=LinkSpec(bandwidth=FAST, latency=0.0),
                migration=MigrationSpec(max_bandwidth=0.0))
    return closed_form_scenario(**{**base, **fields})


def _bulk_s(sc) -> float:
    """The time to send an idle guest's RAM once (live, then the rest stopped: the same pace)."""
    run = run_one(sc).runs.iloc[0]
    assert run.status == "completed"
    assert run.normal_pages + run.zero_pages == PAGES
    return float(run.total_time_s)


def test_a_slow_destination_sets_the_pace():
    per_page = 4096 / 100e6 + 1e-6  # a 100 MB/s copy plus 1 us a record
    sc = _idle(destination_cpu=DestinationCpuSpec(per_page=1e-6, copy_rate=100e6))
    assert _bulk_s(sc) == pytest.approx(PAGES * per_page, rel=1e-3)


def test_the_slower_end_wins_unless_they_share_a_core():
    src = SourceCpuSpec(**{**dataclasses.asdict(FREE_CPU), "per_page": 30e-6})
    dst = DestinationCpuSpec(per_page=20e-6)
    apart = _idle(source_cpu=src, destination_cpu=dst)
    shared = _idle(source_cpu=src, destination_cpu=dataclasses.replace(dst, shares_source_cpu=True))
    assert _bulk_s(apart) == pytest.approx(PAGES * 30e-6, rel=1e-3)
    assert _bulk_s(shared) == pytest.approx(PAGES * 50e-6, rel=1e-3)


def test_zero_pages_cost_their_own_load():
    sc = _idle(vm=VmSpec(memory=IDLE_MEMORY, device_state=0, zero_fraction=1.0),
               destination_cpu=DestinationCpuSpec(zero_page=5e-6, copy_rate=1e6))
    assert _bulk_s(sc) == pytest.approx(PAGES * 5e-6, rel=1e-3)


@pytest.mark.parametrize("return_path", [False, True])
def test_switchover_costs_add_to_the_downtime(return_path):
    """stop is downtime on the source; start (device load, guest start) counts in the source's
    downtime only when it waits for the destination's reply over the return path."""
    caps = ("return-path",) if return_path else ()
    link = LinkSpec(bandwidth=1e9 / 8, latency=1e-3)
    base = _idle(link=link, migration=MigrationSpec(max_bandwidth=0.0, capabilities=caps))
    costly = dataclasses.replace(base, switchover_cost=SwitchoverCostSpec(stop=4e-3, start=7e-3))
    before = run_one(base).runs.iloc[0]
    after = run_one(costly).runs.iloc[0]
    assert after.status == before.status == "completed"
    added = 4e-3 + (7e-3 if return_path else 0.0)
    assert after.downtime_s - before.downtime_s == pytest.approx(added, abs=1e-9)
    # the threshold test does not know them: downtime now exceeds the 300 ms limit's estimate
    assert after.downtime_s > before.downtime_s


@pytest.mark.parametrize(("max_bandwidth", "paced"), [
    (64 * MiB, True),  # the link does 125 MB/s: the 64 MiB/s budget paces every window
    (0.0, False),  # unlimited: the link sets the pace, the thread never sleeps on a budget
    (512 * MiB, False),  # a budget above what the link moves is never spent
    (128 * MiB, False),  # 134 MB/s: the 125 MB/s link moves 93% of it, waiting on the link
])
def test_the_paced_stop_cost_is_charged_only_after_a_paced_live_phase(max_bandwidth, paced):
    link = LinkSpec(bandwidth=1e9 / 8, latency=1e-3)
    base = _idle(link=link, migration=MigrationSpec(max_bandwidth=max_bandwidth),
                 switchover_cost=SwitchoverCostSpec(stop=4e-3))
    plain = run_one(base)
    costly = run_one(dataclasses.replace(
        base, switchover_cost=SwitchoverCostSpec(stop=4e-3, paced_stop=9e-3)))
    added = costly.runs.iloc[0].downtime_s - plain.runs.iloc[0].downtime_s
    assert added == pytest.approx(5e-3 if paced else 0.0, abs=1e-9)
    detail = costly.events[costly.events.event == "switchover"].detail.iloc[0]
    assert ("paced stop" in detail) is paced


def test_a_host_profile_sets_the_new_sections():
    s = loads_scenario("host:\n  destination_cpu: {copy_rate: 2GB/s, shares_source_cpu: true}\n"
                       "  switchover_cost: {stop: 2ms, start: 5ms}\n"
                       "switchover_cost: {start: 3ms}\n")
    assert s.destination_cpu.copy_rate == pytest.approx(2e9)
    assert s.destination_cpu.shares_source_cpu is True
    assert s.switchover_cost.stop == pytest.approx(2e-3)
    assert s.switchover_cost.start == pytest.approx(3e-3)  # the scenario's own key wins


@pytest.mark.parametrize(("pct", "vcpus", "wait"), [
    (50.0, 2, 2 * 0.5 * 0.010 / 2),  # sleeps one timeslice, asleep half the time
    (99.0, 1, 0.99 * (0.99 / 0.01 * 0.010) / 2),  # sleeps 0.99 s: about half a second a sync
    (0.0, 4, 0.0),
])
def test_under_tcg_a_sync_waits_for_throttled_vcpus(pct, vcpus, wait):
    from sim.engine.throttle import tcg_sync_wait

    assert tcg_sync_wait("tcg", vcpus, pct, True) == pytest.approx(wait)
    assert tcg_sync_wait("tcg", vcpus, pct, False) == 0.0  # stopped vCPUs answer at once
    assert tcg_sync_wait("kvm", vcpus, pct, True) == 0.0


def test_tcg_syncs_slow_a_throttled_migration():
    """A guest that only converges under a deep throttle: under TCG every sync then stalls the
    migration thread, so the same migration takes longer than under KVM."""
    base = _idle(vm=VmSpec(memory=512 * MiB, vcpus=2),
                 workload=WorkloadSpec(kind="uniform", writes_per_s=60_000,
                                       region=RegionSpec(offset=0, size=256 * MiB)),
                 link=LinkSpec(bandwidth=1e9 / 8),
                 migration=MigrationSpec(max_bandwidth=0.0, capabilities=("auto-converge",),
                                         max_sim_time=300.0),
                 source_cpu=FREE_CPU)
    kvm = run_one(base).runs.iloc[0]
    tcg = run_one(dataclasses.replace(base, accelerator="tcg")).runs.iloc[0]
    assert kvm.max_throttle_pct >= 20
    assert tcg.total_time_s > kvm.total_time_s


def test_the_first_touch_of_a_destination_page_costs_once():
    """A fresh page on the destination (a page fault) costs first_touch once; zero pages never
    touch it. Idle guest: every raw page is a first touch."""
    sc = _idle(destination_cpu=DestinationCpuSpec(first_touch=10e-6))
    assert _bulk_s(sc) == pytest.approx(PAGES * 10e-6, rel=1e-3)
    zero = _idle(vm=VmSpec(memory=IDLE_MEMORY, device_state=0, zero_fraction=1.0),
                 destination_cpu=DestinationCpuSpec(first_touch=10e-6))
    assert _bulk_s(zero) < PAGES * 1e-6


def test_a_page_sent_again_does_not_touch_fresh_memory():
    """A hot region rewritten during the migration is sent in every pass; only the bulk pass
    touches fresh destination pages, so later passes go at link speed (a closed form per pass).
    A 1 ms downtime limit keeps the migration iterating until max_time."""
    writer = WorkloadSpec(kind="uniform", writes_per_s=20_000,
                          region=RegionSpec(offset=0, size=1 * MiB))
    sc = _idle(workload=writer, link=LinkSpec(bandwidth=1e9 / 8, latency=0.0),
               migration=MigrationSpec(max_bandwidth=0.0, downtime_limit=1e-3, max_time=5.0),
               destination_cpu=DestinationCpuSpec(first_touch=200e-6))
    passes = run_one(sc).passes
    busy = passes[passes.pages_sent > 0]
    per_page = (busy.t_end_s - busy.t_start_s) / busy.pages_sent
    assert len(busy) >= 5
    assert per_page.iloc[0] == pytest.approx(200e-6, rel=0.02)  # the bulk: fresh pages
    wire = 4096 / (1e9 / 8)
    later = per_page.iloc[2:-1]  # whole passes over the hot pages (not the cut-off last one)
    assert (later < 1.5 * wire).all(), list(per_page)
