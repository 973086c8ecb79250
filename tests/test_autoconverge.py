"""Auto-converge and dirty-limit (REF §4), checked against an oracle that replays QEMU's rule
from the observable sync events (each `dirty-sync` event carries the bytes newly dirtied and sent
so far), not against the engine's own bookkeeping."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sim.capabilities import check_set
from sim.recorder import event_field
from sim.run import run_one
from sim.spec import LinkSpec, MigrationSpec, RegionSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import MiB

# 60k uniform writes/s into 128 MiB: ~245 MB/s of dirtying against a 125 MB/s link.
BASE = Scenario(
    name="ac", seed=1, vm=VmSpec(memory=512 * MiB, vcpus=2),
    workload=WorkloadSpec(kind="uniform", writes_per_s=60000,
                          region=RegionSpec(offset=0, size=128 * MiB)),
    link=LinkSpec(bandwidth=1e9 / 8),
    migration=MigrationSpec(max_bandwidth=0, max_sim_time=120.0))


def run(caps=("auto-converge",), **migration):
    mig = dataclasses.replace(BASE.migration, capabilities=caps, **migration)
    return run_one(dataclasses.replace(BASE, migration=mig))


def syncs(res):
    """(t, newly dirty bytes, transferred bytes) per sync, from the events table."""
    out = []
    for t, event, detail in zip(res.events.t_s, res.events.event, res.events.detail,
                                strict=True):
        d = json.loads(detail)  # events.detail is one JSON object
        if event == "dirty-sync" and d["reason"] != "completion":
            before, after, sent = (d["pending_before_bytes"], d["pending_after_bytes"],
                                   d["transferred_bytes"])
            out.append((t, after - before, sent))
    return out


def oracle(res, spec: MigrationSpec) -> list[tuple[float, float]]:
    """REF §4.1–4.2 replayed: (time, throttle %) of every step."""
    steps: list[tuple[float, float]] = []
    (t0, _, x0), rest = syncs(res)[0], syncs(res)[1:]
    period_start, xfer_prev, dirty, count, pct = t0, x0, 0, 0, 0.0
    for t, newly, sent in rest:
        dirty += newly
        if t - period_start < 1.0:
            continue
        thr = (sent - xfer_prev) * spec.throttle_trigger_threshold / 100
        if dirty > thr:
            count += 1
            if count == 2:
                count = 0
                if pct == 0:
                    pct = spec.cpu_throttle_initial
                else:
                    inc = float(spec.cpu_throttle_increment)
                    if spec.cpu_throttle_tailslow:
                        inc = min(inc, (100 - pct) - (100 - pct) * thr / dirty)
                    pct = min(pct + inc, spec.max_cpu_throttle)
                steps.append((t, pct))
        period_start, xfer_prev, dirty = t, sent, 0
    return steps


def throttle_events(res) -> list[tuple[float, float]]:
    e = res.events[res.events.event == "throttle"]
    return [(t, float(json.loads(d)["pct"])) for t, d in zip(e.t_s, e.detail, strict=True)]


def test_raw_does_not_converge_auto_converge_does():
    raw = run(()).runs.iloc[0]
    assert (raw.status, raw.max_throttle_pct) == ("cancelled", 0.0)
    res = run()
    ac = res.runs.iloc[0]
    assert ac.status == "completed"
    steps = throttle_events(res)
    assert [p for _, p in steps] == [20.0, 30.0, 40.0][:len(steps)] and len(steps) >= 2
    assert ac.max_throttle_pct == steps[-1][1]


@pytest.mark.parametrize("params", [
    {},
    {"cpu_throttle_initial": 30, "cpu_throttle_increment": 25, "max_cpu_throttle": 70},
    {"cpu_throttle_tailslow": True, "cpu_throttle_increment": 30},
    {"throttle_trigger_threshold": 90},
])
def test_steps_follow_qemus_rule(params):
    res = run(**params)
    spec = dataclasses.replace(BASE.migration, **params)
    expected = oracle(res, spec)
    got = throttle_events(res)
    assert len(got) == len(expected) >= 2
    for (t, p), (te, pe) in zip(got, expected, strict=True):
        assert t == pytest.approx(te)
        assert p == pytest.approx(pe)


def test_throttle_in_every_table_and_the_cpu_it_cost():
    res = run()
    steps = throttle_events(res)
    ac = res.runs.iloc[0]
    t_stop = res.events[(res.events.event == "MIGRATION")
                        & (event_field(res.events, "status") == "device")].t_s.iloc[0]
    # vCPU-seconds lost: each step's share of CPU, from its time to the next step or the stop.
    bounds = [t for t, _ in steps[1:]] + [t_stop]
    lost = sum((b - t) * p / 100 for (t, p), b in zip(steps, bounds, strict=True)) * 2
    assert ac.guest_cpu_lost_s == pytest.approx(lost)
    assert res.samples.throttle_pct.max() == steps[-1][1]
    assert set(res.passes.throttle_pct) >= {0.0, steps[0][1]}


def test_periodic_sync_in_long_rounds_only_from_9_2():
    # A 2 GiB guest rewritten all over: the second round lasts ~20 s without a drain sync.
    big = dataclasses.replace(
        BASE, vm=VmSpec(memory=2048 * MiB),
        workload=WorkloadSpec(kind="uniform", writes_per_s=100000),
        migration=dataclasses.replace(BASE.migration, capabilities=("auto-converge",),
                                      max_sim_time=40.0))

    def periodic(version):
        sc = dataclasses.replace(big, migration=dataclasses.replace(big.migration,
                                                                     qemu_version=version))
        return int((event_field(run_one(sc).events, "reason") == "periodic").sum())

    assert periodic("10.2") >= 2
    assert periodic("7.2") == 0


def test_dirty_limit_caps_the_write_rate():
    res = run(caps=("dirty-limit",), vcpu_dirty_limit=16 * MiB)
    run_ = res.runs.iloc[0]
    assert run_.status == "completed"
    e = res.events[res.events.event == "throttle"]
    # 2 vCPUs × 16 MiB/s = 8192 pages/s of the guest's 60000 writes/s.
    assert [json.loads(d) for d in e.detail] == [
        {"kind": "dirty-limit", "pct": pytest.approx(100 * (1 - 8192 / 60000), rel=1e-5)}]
    assert run_.guest_cpu_lost_s == 0.0  # only the writers are slowed, not reported as CPU
    with pytest.raises(ValueError, match="dirty-limit conflicts with auto-converge"):
        check_set(["dirty-limit", "auto-converge"])


@pytest.mark.parametrize(("pct", "tick", "share"), [
    (70.0, None, 0.3),  # CPU-bound: runs 30% of the time
    (30.0, 0.010, 1.0),  # sleeps 4.3 ms < a tick: no tick lost
    (50.0, 0.010, 1.0),  # sleeps one tick: the one that fell asleep is served at the wake
    (70.0, 0.010, 0.6),  # cycle 33 ms = 3.33 ticks: 1 in the run + 1 pending = 2 served
    (90.0, 0.010, 0.2),  # cycle 100 ms = 10 ticks: 2 served
    (90.0, 0.001, 0.11),  # 1 ms ticks: 10 in the run + 1 pending of 100
    (0.0, 0.010, 1.0),
    (99.0, None, 0.01),
])
def test_a_timer_paced_guest_loses_only_ticks_under_the_throttle(pct, tick, share):
    from sim.engine.throttle import paced_share

    assert paced_share(pct, tick) == pytest.approx(share)


def test_a_timer_paced_guest_dirties_twice_as_fast_at_70_percent():
    """The same throttle step (0 -> 70%, held there): a CPU-bound guest keeps 30% of its
    writes, a guest paced by a 10 ms timer 60%, so the pages it newly dirties in the first period
    after the step are about twice as many (not exactly: more writes land on pages already
    dirty)."""
    base = dataclasses.replace(
        BASE, vm=VmSpec(memory=1024 * MiB, vcpus=2),
        workload=WorkloadSpec(kind="uniform", writes_per_s=20000,
                              region=RegionSpec(offset=0, size=1024 * MiB)),
        link=LinkSpec(bandwidth=40 * MiB),
        migration=MigrationSpec(max_bandwidth=0, max_sim_time=45.0,
                                capabilities=("auto-converge",),
                                cpu_throttle_initial=70, max_cpu_throttle=70))

    def first_period_after_step(tick):
        res = run_one(dataclasses.replace(
            base, workload=dataclasses.replace(base.workload, timer_tick=tick)))
        step = throttle_events(res)[0][0]
        after = [(t, n) for t, n, _ in syncs(res) if t > step]
        return after[0][1] / (after[0][0] - step)

    ratio = first_period_after_step(0.010) / first_period_after_step(None)
    assert ratio == pytest.approx(0.6 / 0.3, rel=0.08)
