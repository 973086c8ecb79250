"""Post-copy (REF §5.1): the switch, remote faults over the return path, the background push,
and the guest lost if the destination dies after the switch."""

from __future__ import annotations

import dataclasses

import pytest

from sim.negotiation import operate
from sim.recorder import event_field
from sim.run import Testbed, run_one
from sim.spec import (
    FaultSpec,
    LinkSpec,
    MigrationSpec,
    RegionSpec,
    Scenario,
    SourceCpuSpec,
    VmSpec,
    WireSpec,
    WorkloadSpec,
)
from sim.units import MiB

RATE = 1e9 / 8
BASE = Scenario(
    name="pc", seed=1, vm=VmSpec(memory=256 * MiB, device_state=4 * MiB),
    workload=WorkloadSpec(kind="idle"),
    link=LinkSpec(bandwidth=RATE, latency=1e-3),
    migration=MigrationSpec(max_bandwidth=0, capabilities=("postcopy-ram",), postcopy_after=0.0,
                            max_sim_time=60.0),
    source_cpu=SourceCpuSpec.free(),
    wire=WireSpec(page_header=0, chunk_overhead=0))


def busy(writes: float, **changes) -> Scenario:
    sc = dataclasses.replace(BASE, workload=WorkloadSpec(
        kind="uniform", writes_per_s=writes, region=RegionSpec(offset=0, size=64 * MiB)))
    return dataclasses.replace(sc, **changes)


def test_idle_guest_downtime_is_the_device_state():
    """Switch at once: nothing is stale, so the downtime is the device state plus one latency,
    and the RAM follows in the background at link rate."""
    run = run_one(BASE).runs.iloc[0]
    assert run.status == "completed"
    assert run.downtime_s == pytest.approx(4 * MiB / RATE + 1e-3, rel=1e-3)
    assert run.postcopy_faults == 0
    assert run.total_time_s == pytest.approx((260 * MiB) / RATE + 3e-3, rel=2e-3)


def test_faults_and_stall_grow_with_the_write_rate():
    runs = [run_one(busy(w)).runs.iloc[0] for w in (2000, 8000, 32000)]
    faults = [r.postcopy_faults for r in runs]
    stall = [r.postcopy_stall_s for r in runs]
    assert all(r.status == "completed" for r in runs)
    assert 0 < faults[0] < faults[1] < faults[2]
    assert stall[0] < stall[1] < stall[2]


def sparse(**changes) -> Scenario:
    """100 writes/s over 8 vCPUs: 80 ms between two writes of one vCPU, longer than any fault
    below, so no stall overlaps another and each fault costs its closed form."""
    return busy(100, vm=dataclasses.replace(BASE.vm, vcpus=8), **changes)


def test_stall_grows_with_latency_and_preempt_shortens_it():
    near = run_one(sparse()).runs.iloc[0]
    far = run_one(sparse(link=dataclasses.replace(BASE.link, latency=10e-3))).runs.iloc[0]
    assert near.postcopy_faults > 10 and far.postcopy_faults > 10
    # per fault: a round trip plus the page, plus the queue without a preempt channel
    per_fault = near.postcopy_stall_s / near.postcopy_faults
    assert per_fault == pytest.approx(2e-3 + (4096 + 256 * 1024) / RATE)
    assert far.postcopy_stall_s / far.postcopy_faults == pytest.approx(
        20e-3 + (4096 + 256 * 1024) / RATE)
    preempt = run_one(sparse(migration=dataclasses.replace(
        BASE.migration, capabilities=("postcopy-ram", "postcopy-preempt")))).runs.iloc[0]
    assert preempt.postcopy_stall_s / preempt.postcopy_faults == pytest.approx(2e-3 + 4096 / RATE)


def postcopy_phase_s(result) -> float:
    """From the tables alone: the source's completion (or failure) minus its switch to
    postcopy-active (the migration starts at 0 here)."""
    ev = result.events
    active = ev[(ev.event == "MIGRATION") & (ev.endpoint == "source")
                & (event_field(ev, "status") == "postcopy-active")]
    return float(result.runs.total_time_s.iloc[0] - active.t_s.iloc[0])


@pytest.mark.parametrize("vcpus", [1, 4])
def test_stall_is_at_most_vcpus_times_the_postcopy_phase(vcpus):
    """A stalled vCPU is stalled once: faults far denser than their cost (a write every 31 us,
    a fault costs 4 ms) add up to at most the phase's wall time per vCPU, not to the sum of
    the faults' costs (about 36 s against a 2.1 s phase here)."""
    result = run_one(busy(32000, vm=dataclasses.replace(BASE.vm, vcpus=vcpus)))
    run = result.runs.iloc[0]
    phase = postcopy_phase_s(result)
    per_fault = 2e-3 + (4096 + 256 * 1024) / RATE
    assert run.status == "completed"
    assert run.postcopy_faults * per_fault > vcpus * phase  # the sum of the costs would not fit
    assert 0 < run.postcopy_stall_s <= vcpus * phase * (1 + 1e-12)


@pytest.mark.slow
def test_convergence_toolbox_postcopy_stall_is_bounded():
    """The issue's case: a 4-vCPU guest, ~7 s of post-copy, 169k faults (the sum of their costs
    was 530 s)."""
    from sim.scenario import expand, load_scenario

    sc = load_scenario("scenarios/convergence-toolbox.yaml")
    member = next(m for m in expand(sc) if "postcopy-ram" in m.migration.capabilities)
    result = run_one(member)
    stall = result.runs.postcopy_stall_s.iloc[0]
    assert 0 < stall <= member.vm.vcpus * postcopy_phase_s(result) * (1 + 1e-12)


def test_a_crash_after_the_switch_loses_the_guest():
    sc = busy(8000, link=dataclasses.replace(BASE.link, faults=(
        FaultSpec(kind="destination_crash", at=0.5),)))
    tb = Testbed(sc)
    tb.env.process(operate(tb.pairs[0], sc.negotiation))
    tb.run()
    result = tb.result()
    run = result.runs.iloc[0]
    assert run.status == "failed" and "the guest is lost" in run.failure_reason
    assert 0 < run.postcopy_stall_s <= postcopy_phase_s(result) * (1 + 1e-12)  # cut at the end
    assert run.pages_lost > 0
    assert not tb.pairs[0].migration.guest.running


def test_switch_after_passes_or_on_stall():
    after2 = busy(60000, migration=dataclasses.replace(
        BASE.migration, postcopy_after=None, postcopy_after_passes=2))
    run = run_one(after2)
    syncs = run.events[run.events.event == "dirty-sync"]
    assert list(event_field(syncs, "reason")) == ["setup", "drain", "drain", "postcopy"]
    stall = busy(60000, migration=dataclasses.replace(
        BASE.migration, postcopy_after=None, postcopy_on_stall=True))
    assert run_one(stall).runs.status.iloc[0] == "completed"


def test_exact_mode_destination_matches_the_source_at_the_switch():
    sc = busy(4000, vm=VmSpec(memory=16 * MiB, content="exact", device_state=0),
              workload=WorkloadSpec(kind="uniform", writes_per_s=4000))
    run = run_one(sc).runs.iloc[0]
    assert run.status == "completed" and bool(run.memory_match)


def test_migrate_start_postcopy_by_command():
    sc = busy(8000, migration=dataclasses.replace(BASE.migration, postcopy_after=None))
    tb = Testbed(sc)
    src, dst = tb.source, tb.destination
    from sim.errors import QmpError

    with pytest.raises(QmpError, match="after migration has been started"):
        src.migrate_set_capabilities([{"capability": "postcopy-ram", "state": True}])
        src.migrate_start_postcopy()
    dst.migrate_set_capabilities([{"capability": "postcopy-ram", "state": True}])
    src.migrate()
    tb.advance(0.5)
    assert src.query_migrate()["status"] == "active"
    src.migrate_start_postcopy()
    tb.advance(1.0)
    assert src.query_migrate()["status"] == "postcopy-active"
    with pytest.raises(QmpError, match="Postcopy migration in progress, cannot cancel"):
        src.migrate_cancel()
    tb.run()
    assert src.query_migrate()["status"] == "completed"


def _statuses(run, endpoint: str = "source") -> list[str]:
    from sim.recorder import event_field

    ev = run.events
    return list(event_field(ev[(ev.endpoint == endpoint) & (ev.event == "MIGRATION")], "status"))


def test_an_outage_after_the_switch_pauses_and_recovers():
    """QEMU's postcopy_pause: a link outage after the switch pauses both sides; when the link is
    back (management recovers at once in the model) the push resumes and the run completes, the
    outage added to the total time."""
    base = run_one(busy(8000)).runs.iloc[0]
    down = busy(8000, link=dataclasses.replace(BASE.link, faults=(
        FaultSpec(kind="link_down", at=0.5, duration=3.0),)))
    run = run_one(down)
    row = run.runs.iloc[0]
    assert row.status == "completed" and row.pages_lost == 0
    seq = _statuses(run)
    i = seq.index("postcopy-paused")
    assert seq[i - 1:i + 3] == ["postcopy-active", "postcopy-paused", "postcopy-recover",
                                "postcopy-active"]
    assert _statuses(run, "destination").count("postcopy-paused") == 1
    # the pause lasts the outage; the push then goes on where it stopped
    assert row.total_time_s == pytest.approx(base.total_time_s + 3.0, abs=0.3)


def test_max_sim_time_bounds_post_copy():
    """An outage longer than max_sim_time after the switch: the run ends at the cap (one wait,
    not a loop over the outage, and no writes generated for it), failed, naming the pages the
    source still holds; nothing is lost."""
    sc = busy(20000, link=dataclasses.replace(BASE.link, faults=(
        FaultSpec(kind="link_down", at=0.5, duration=1e9),)),
        migration=dataclasses.replace(BASE.migration, max_sim_time=30.0))
    run = run_one(sc)
    row = run.runs.iloc[0]
    assert row.status == "failed"
    assert row.total_time_s == pytest.approx(30.0)
    assert "did not finish within max_sim_time" in row.failure_reason
    left = int(row.failure_reason.split(": ")[1].split()[0])
    assert 0 < left < 256 * MiB // 4096
    assert row.pages_lost == 0
    assert "postcopy-paused" in _statuses(run)


def test_an_outage_at_the_switch_is_bounded_too():
    """The link goes down while the device state is being sent: the cap still ends the run."""
    sc = dataclasses.replace(BASE, link=dataclasses.replace(BASE.link, faults=(
        FaultSpec(kind="link_down", at=0.01, duration=1e9),)),
        migration=dataclasses.replace(BASE.migration, max_sim_time=20.0))
    row = run_one(sc).runs.iloc[0]
    assert row.status in ("failed", "cancelled")
    assert row.total_time_s <= 20.0 + 1e-9


def test_a_fault_moves_the_background_scan_to_the_faulted_page():
    """QEMU's one page search (no preempt channel) continues after a requested page, so a guest
    writing sequentially ahead of the push faults once and then finds its pages pushed; with
    postcopy-preempt the scan stays put and every page the guest reaches first faults."""
    seq = WorkloadSpec(kind="sequential", writes_per_s=8000,
                       region=RegionSpec(offset=128 * MiB, size=64 * MiB))
    one = dataclasses.replace(BASE, workload=seq)
    run = run_one(one).runs.iloc[0]
    assert run.status == "completed"
    assert 1 <= run.postcopy_faults <= 4
    preempt = run_one(dataclasses.replace(one, migration=dataclasses.replace(
        BASE.migration, capabilities=("postcopy-ram", "postcopy-preempt")))).runs.iloc[0]
    # the push (about 30 000 pages/s) reaches 128 MiB after about 1.1 s: 8000 faults/s until then
    assert preempt.postcopy_faults > 1000
