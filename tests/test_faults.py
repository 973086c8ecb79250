"""Faults as part of the model (link down, bandwidth drop, destination crash, cancel), checked by
closed forms on idle guests (nothing re-dirtied: the migration sends the RAM once, so time is
bytes / rate plus whatever the fault adds) and by the rule that pre-copy never loses the guest."""

from __future__ import annotations

import dataclasses

import pytest
from builders import closed_form_scenario, idle_guest, single_guest_scenario

from sim.recorder import event_field
from sim.run import run_one
from sim.spec import FaultSpec, LinkSpec, Scenario
from sim.units import MiB

RATE = 100e6  # bytes/s
SIZE = 64 * MiB
ALONE = SIZE / RATE  # 0.671 s to send the idle guest's RAM


def idle(*faults: FaultSpec, latency: float = 0.0, device: int = 0, **migration) -> Scenario:
    return single_guest_scenario(idle_guest(memory=SIZE, device_state=device, **migration), "f",
                                 link=LinkSpec(bandwidth=RATE, latency=latency, faults=faults))


def events(res, event):
    e = res.events
    return e[e.event == event]


def test_link_down_stalls_then_resumes():
    res = run_one(idle(FaultSpec(kind="link_down", at=0.3, duration=2.0)))
    run = res.runs.iloc[0]
    assert run.status == "completed"
    assert run.total_time_s == pytest.approx(ALONE + 2.0, rel=1e-3)
    assert run.transferred_bytes == SIZE
    assert list(events(res, "fault").detail) == ['{"kind":"link_down","duration_s":2.0}']
    assert events(res, "fault-end").t_s.iloc[0] == pytest.approx(2.3)
    # The windows of the outage measured no bandwidth.
    stalled = res.samples[(res.samples.t_s > 0.45) & (res.samples.t_s < 2.25)]
    assert (stalled.bandwidth_bytes_per_s == 0).all() and len(stalled) >= 15


def test_link_down_past_the_deadline_is_cancelled_and_the_source_runs_on():
    res = run_one(idle(FaultSpec(kind="link_down", at=0.3, duration=100.0), max_time=5.0))
    run = res.runs.iloc[0]
    assert (run.status, run.failure_reason) == ("cancelled", "max_time")
    assert run.total_time_s == pytest.approx(5.0, abs=0.06)
    assert run.pages_lost == 0


def test_bandwidth_drop_follows_the_piecewise_closed_form():
    # 0.2 s at full rate, then a quarter of it for 0.3 s, then full rate again.
    res = run_one(idle(FaultSpec(kind="bandwidth_drop", at=0.2, duration=0.3,
                                 bandwidth=RATE / 4)))
    left = SIZE - 0.2 * RATE - 0.3 * RATE / 4
    assert res.runs.total_time_s.iloc[0] == pytest.approx(0.5 + left / RATE, rel=1e-3)


def test_destination_crash_during_precopy_fails_and_loses_nothing():
    res = run_one(idle(FaultSpec(kind="destination_crash", at=0.25), latency=0.01))
    run = res.runs.iloc[0]
    assert (run.status, run.failure_reason) == ("failed", "destination crashed")
    assert run.pages_lost == 0
    e = res.events[res.events.event == "MIGRATION"]
    dest = e[e.endpoint == "destination"]
    src = e[e.endpoint == "source"]
    assert event_field(dest, "status").iloc[-1] == "failed" and dest.t_s.iloc[-1] == pytest.approx(0.25, abs=1e-4)
    # The source learns of it when the reset arrives, one latency later (times are exact to the
    # send time of one page: a chunk ends at the first page boundary past the fault).
    assert event_field(src, "status").iloc[-1] == "failed" and src.t_s.iloc[-1] == pytest.approx(0.26, abs=1e-4)
    assert run.transferred_bytes == pytest.approx((0.25 - 0.02) * RATE, rel=0.01)


def test_destination_crash_during_stop_and_copy_restarts_the_source():
    # 64 MiB of device state takes 0.67 s at the end: crash in the middle of it.
    sc = idle(FaultSpec(kind="destination_crash", at=ALONE + 0.3), device=SIZE)
    from sim.negotiation import operate
    from sim.run import Testbed

    tb = Testbed(sc)
    tb.env.process(operate(tb.pairs[0], sc.negotiation))
    tb.run()
    mig = tb.pairs[0].migration
    statuses = list(event_field(events(tb.result(), "MIGRATION").query("endpoint == 'source'"),
                                "status"))
    assert statuses[-2:] == ["device", "failed"]
    assert mig.guest.running  # QEMU restarts the guest it had stopped
    assert tb.result().runs.pages_lost.iloc[0] == 0


def test_crashed_before_the_start_refuses_the_connection():
    run = run_one(idle(FaultSpec(kind="destination_crash", at=0.0), start=1.0)).runs.iloc[0]
    assert run.status == "failed" and run.total_time_s == 0
    assert run.transferred_bytes == 0


def test_cancel_at_a_time():
    res = run_one(idle(FaultSpec(kind="cancel", at=0.4)))
    run = res.runs.iloc[0]
    assert (run.status, run.failure_reason) == ("cancelled", "migrate_cancel")
    ends = events(res, "MIGRATION").query("endpoint == 'source'")
    assert list(event_field(ends, "status")[-2:]) == ["cancelling", "cancelled"]
    assert ends.t_s.iloc[-2] == pytest.approx(0.4, abs=1e-4)  # within a page's send time
    assert run.pages_lost == 0


def test_a_fault_hits_only_its_guest_in_a_fleet():
    guest = idle_guest(memory=SIZE)
    sc = closed_form_scenario("fleet", link=LinkSpec(bandwidth=RATE, faults=(
        FaultSpec(kind="destination_crash", at=0.2, vm="b"),)),
        vms=(dataclasses.replace(guest, name="a"), dataclasses.replace(guest, name="b")))
    runs = run_one(sc).runs.set_index("vm")
    assert runs.loc["b", "status"] == "failed"
    assert runs.loc["a", "status"] == "completed"
    # a had half the link until b's failure, then all of it.
    t_fail = 0.2
    assert runs.loc["a", "total_time_s"] == pytest.approx(
        t_fail + (SIZE - t_fail * RATE / 2) / RATE, rel=0.02)
