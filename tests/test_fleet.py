"""Several guests on one link (DESIGN §3 "Link"): max-min fair sharing, checked by closed forms."""

from __future__ import annotations

import math

import pytest
from builders import closed_form_scenario, idle_guest, single_guest_scenario

from sim.link import Link
from sim.run import run_one
from sim.spec import GuestSpec, LinkSpec, Scenario
from sim.units import MiB


def test_water_filling():
    link = Link(LinkSpec(bandwidth=100.0))
    a, b, c = object(), object(), object()
    assert link.share(a, 0.0) == 100.0  # not a flow: the whole link
    link.join(a)
    assert link.share(a, 0.0) == 100.0
    link.join(b)
    link.join(c, cap=10.0)
    assert link.share(c, 0.0) == 10.0
    assert link.share(a, 0.0) == pytest.approx(45.0)
    link.set_cap(b, 20.0)
    assert link.share(a, 0.0) == pytest.approx(70.0)
    link.leave(c)
    link.leave(b)
    assert link.share(a, 0.0) == 100.0
    assert link.flows == 1


def fleet(*guests: GuestSpec) -> Scenario:
    return closed_form_scenario("fleet", link=LinkSpec(bandwidth=100e6), vms=guests)


def test_two_idle_guests_share_the_link_equally():
    """Idle guests send their RAM once: alone, 64 MiB at 100 MB/s; together, each at half."""
    alone = run_one(fleet(idle_guest("a"))).runs.iloc[0]
    assert alone.total_time_s == pytest.approx(64 * MiB / 100e6, rel=1e-3)
    both = run_one(fleet(idle_guest("a"), idle_guest("b"))).runs
    assert list(both.vm) == ["a", "b"]
    assert list(both.total_time_s) == pytest.approx([2 * 64 * MiB / 100e6] * 2, rel=0.02)


def test_a_late_guest_slows_the_first_only_while_both_send():
    """b joins at t=0.3 s: a sends 30 MB alone, then both at 50 MB/s until a is done."""
    runs = run_one(fleet(idle_guest("a"), idle_guest("b", start=0.3))).runs.set_index("vm")
    size = 64 * MiB
    t_a = 0.3 + (size - 0.3 * 100e6) / 50e6
    assert runs.loc["a", "total_time_s"] == pytest.approx(t_a, rel=0.02)
    # b: at half rate until a finishes, then alone.
    sent_b = (t_a - 0.3) * 50e6
    t_b = (t_a - 0.3) + (size - sent_b) / 100e6
    assert runs.loc["b", "total_time_s"] == pytest.approx(t_b, rel=0.02)


def test_every_table_carries_the_vm_and_runs_are_deterministic():
    sc = fleet(idle_guest("a"), idle_guest("b", start=0.1))
    first, second = run_one(sc), run_one(sc)
    for table in ("runs", "passes", "samples", "events"):
        frame = getattr(first, table)
        assert list(frame.columns[:2]) == ["run_id", "vm"], table
        assert set(frame.vm) == {"a", "b"}, table
        assert frame.equals(getattr(second, table)), table


def test_one_guest_is_the_single_guest_run():
    """A fleet of one guest and the same guest given at top level are the same migration."""
    g = idle_guest("solo")
    single = single_guest_scenario(g, "fleet", link=LinkSpec(bandwidth=100e6))
    a = run_one(single).runs.iloc[0]
    b = run_one(fleet(g)).runs.iloc[0]
    assert a.total_time_s == b.total_time_s and a.transferred_bytes == b.transferred_bytes
    assert math.isclose(a.downtime_s, b.downtime_s)
