"""The engine against closed forms (published-results §3) and QEMU's switchover rules (REF §1.5)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sim.recorder import event_field
from sim.run import run_one
from sim.spec import (
    BandwidthChange,
    GiB,
    LinkSpec,
    MiB,
    MigrationSpec,
    Scenario,
    SourceCpuSpec,
    VmSpec,
    WireSpec,
    WorkloadSpec,
)
from sim.workloads import make_workload

NO_OVERHEAD = WireSpec(page_header=0, chunk_overhead=0)
FREE_CPU = SourceCpuSpec.free()  # the closed forms assume pages leave at link rate


def geometric(M: float, R: float, D: float, d_max: float, n_max: int | None = None):
    """The geometric pre-copy model: (live rounds, stop volume, downtime, total time, total bytes)."""
    lam = D / R
    v_thd = R * d_max
    n = max(1, math.ceil(math.log(v_thd / M) / math.log(lam)))
    if n_max is not None:
        n = min(n, n_max)
    v_stop = M * lam**n
    return n, v_stop, v_stop / R, (M / R) * (1 - lam ** (n + 1)) / (1 - lam), \
        M * (1 - lam ** (n + 1)) / (1 - lam)


def rounds_scenario(memory: int, rate: float, writes_per_s: float, d_max: float,
                    max_passes: int | None = None) -> Scenario:
    return Scenario(
        name="rounds", vm=VmSpec(memory=memory, device_state=0),
        workload=WorkloadSpec(kind="sequential", writes_per_s=writes_per_s),
        link=LinkSpec(bandwidth=rate),
        migration=MigrationSpec(max_bandwidth=0, switchover="rounds", downtime_limit=d_max,
                                max_passes=max_passes),
        wire=NO_OVERHEAD, source_cpu=FREE_CPU)


@pytest.mark.parametrize("memory,bandwidth,device", [
    (1 * GiB, 1.25e9, 0), (int(1.25e9) // 4096 * 4096, 1.25e9, 0), (4 * GiB, 10e9 / 8, 4 * MiB),
    (512 * MiB, 100e6 / 8, 1 * MiB),
])
@pytest.mark.parametrize("policy", ["qemu", "rounds"])
def test_idle_guest_takes_memory_over_bandwidth(memory, bandwidth, device, policy):
    """An idle guest of M bytes over rate B takes M/B + device state/B (within 0.5%)."""
    sc = Scenario(name="idle", vm=VmSpec(memory=memory, device_state=device),
                  link=LinkSpec(bandwidth=bandwidth),
                  migration=MigrationSpec(max_bandwidth=0, switchover=policy), wire=NO_OVERHEAD, source_cpu=FREE_CPU)
    run = run_one(sc).runs.iloc[0]
    assert run.status == "completed"
    assert run.total_time_s == pytest.approx((memory + device) / bandwidth, rel=0.005)
    assert run.transferred_bytes == memory + device


@pytest.mark.parametrize("d_max,live_rounds", [(0.3, 5), (0.03, 9)])
def test_sequential_rounds_reproduce_geometric_model_exactly(d_max, live_rounds):
    """published-results V2/V3: 1 GiB, 128 MiB/s, 64 MiB/s of new pages, binary fractions."""
    M, R, D = 1 * GiB, 128 * MiB, 64 * MiB
    n, v_stop, t_down, t_mig, v_mig = geometric(M, R, D, d_max)
    assert n == live_rounds
    res = run_one(rounds_scenario(M, R, D / 4096, d_max))
    run = res.runs.iloc[0]
    sent = res.passes.loc[res.passes.pages_sent > 0, "pages_sent"].to_numpy()
    assert list(sent) == [int(M / 4096 * 0.5**i) for i in range(n)] + [int(v_stop / 4096)]
    assert run.downtime_s == pytest.approx(t_down, rel=1e-9)
    assert run.total_time_s == pytest.approx(t_mig, rel=1e-9)
    assert run.transferred_bytes == pytest.approx(v_mig, rel=1e-9)


def test_sequential_rounds_decimal_case_within_one_percent():
    """published-results V4: 1 GiB over 1.25e8 B/s with 2.5e7 B/s dirtied (λ = 0.2)."""
    M, R, D, d_max = 1 * GiB, 1.25e8, 2.5e7, 0.3
    n, v_stop, t_down, t_mig, v_mig = geometric(M, R, D, d_max)
    res = run_one(rounds_scenario(M, R, D / 4096, d_max))
    run = res.runs.iloc[0]
    assert (res.passes.pages_sent > 0).sum() == n + 1
    assert run.downtime_s == pytest.approx(t_down, rel=0.01)
    assert run.total_time_s == pytest.approx(t_mig, rel=0.01)
    assert run.transferred_bytes == pytest.approx(v_mig, rel=0.01)


def test_max_passes_caps_the_classic_policy():
    """With λ ≥ 1 the rounds policy stops after max_passes live passes (the Xen rule)."""
    M, R = 256 * MiB, 64 * MiB
    res = run_one(rounds_scenario(M, R, 2 * R / 4096, 0.3, max_passes=4))
    run = res.runs.iloc[0]
    assert run.status == "completed"
    live = res.passes[res.passes.pages_sent > 0]
    assert len(live) == 5  # 4 live passes and the stop-and-copy
    # The writer covers all of RAM in every pass: each later pass re-sends all of it.
    assert list(live.pages_sent) == [M // 4096] * 5
    assert run.downtime_s == pytest.approx(M / R, rel=1e-6)


@pytest.mark.parametrize("t", [0.5, 2.0, 8.0])
def test_uniform_dirtied_pages_follow_occupancy_formula(t):
    """Distinct pages dirtied by w uniform writes/s in t seconds: P(1 − e^(−wt/P)) within 1%."""
    P, w = 262_144, 50_000.0
    spec = WorkloadSpec(kind="uniform", writes_per_s=w)
    counts = []
    for seed in range(5):
        wl = make_workload(spec, P, 4096)
        batch = wl.writes(0.0, t, np.random.default_rng(seed))
        assert len(batch) == int(w * t)
        counts.append(np.unique(batch.page).size)
    assert np.mean(counts) == pytest.approx(P * (1 - math.exp(-w * t / P)), rel=0.01)


def test_uniform_rounds_match_published_v6():
    """published-results V6: uniform writes, n = 3 live rounds, T_down ≈ 106.9 ms (±1%)."""
    P, w, R = 262_144, 8192.0, 32_768 * 4096.0
    downtimes, totals = [], []
    for seed in range(4):
        sc = Scenario(name="v6", seed=seed, vm=VmSpec(memory=P * 4096, device_state=0),
                      workload=WorkloadSpec(kind="uniform", writes_per_s=w),
                      link=LinkSpec(bandwidth=R),
                      migration=MigrationSpec(max_bandwidth=0, switchover="rounds"),
                      wire=NO_OVERHEAD, source_cpu=FREE_CPU)
        res = run_one(sc)
        assert (res.passes.pages_sent > 0).sum() == 4  # 3 live rounds + stop-and-copy
        downtimes.append(res.runs.downtime_s.iloc[0])
        totals.append(res.runs.total_time_s.iloc[0])
    assert np.mean(downtimes) == pytest.approx(0.1069, rel=0.01)
    assert np.mean(totals) == pytest.approx(10.307, rel=0.01)


def _syncs(events: pd.DataFrame) -> pd.DataFrame:
    rows = events[events.event == "dirty-sync"].detail.map(json.loads)  # one JSON object
    return pd.DataFrame(list(rows))


QEMU_CASES = [
    WorkloadSpec(kind="hotspot", writes_per_s=50_000, hot_set=128 * MiB),
    WorkloadSpec(kind="uniform", writes_per_s=20_000),
    WorkloadSpec(kind="zipf", writes_per_s=80_000),
    WorkloadSpec(kind="sequential", writes_per_s=30_000),
]


@pytest.mark.parametrize("workload", QEMU_CASES, ids=lambda w: w.kind)
@pytest.mark.parametrize("max_bandwidth", [0.0, 128 * MiB])
def test_qemu_policy_syncs_only_below_threshold(workload, max_bandwidth):
    """Under switchover: qemu a sync happens at setup, at completion, or when pending < threshold."""
    sc = Scenario(name="q", seed=2, vm=VmSpec(memory=2 * GiB, zero_fraction=0.2),
                  workload=workload, link=LinkSpec(bandwidth=10e9 / 8),
                  migration=MigrationSpec(max_bandwidth=max_bandwidth, max_time=300))
    res = run_one(sc)
    syncs = _syncs(res.events)
    assert set(syncs.reason) <= {"setup", "drain", "completion"}
    assert (syncs.reason == "setup").sum() == 1
    drain = syncs[syncs.reason == "drain"]
    assert (drain.pending_before_bytes.astype(float) < drain.threshold_bytes.astype(float)).all()
    assert res.runs.dirty_sync_count.iloc[0] == len(syncs)
    # No sync or completion in the first 100 ms window: the threshold is still 0.
    t_first = res.events[res.events.event == "dirty-sync"].t_s.to_numpy()
    assert (t_first[1:] >= sc.migration.start + 0.1 - 1e-9).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_bandwidth", [0.0, 256 * MiB])
def test_downtime_within_limit_when_estimate_holds(seed, max_bandwidth):
    """At a constant link rate the measured bandwidth is right and downtime ≤ downtime-limit."""
    sc = Scenario(name="d", seed=seed, vm=VmSpec(memory=1 * GiB, device_state=0),
                  workload=WorkloadSpec(kind="hotspot", writes_per_s=40_000, hot_set=96 * MiB),
                  link=LinkSpec(bandwidth=1e9 / 8),
                  migration=MigrationSpec(max_bandwidth=max_bandwidth, downtime_limit=0.3),
                  wire=NO_OVERHEAD, source_cpu=FREE_CPU)
    run = run_one(sc).runs.iloc[0]
    assert run.status == "completed"
    assert run.downtime_s <= 0.3 + 1e-9


def test_downtime_exceeds_limit_when_estimate_was_optimistic():
    """A link that slows just before switchover makes the threshold too generous (REF §1.6)."""
    base = Scenario(name="o", seed=1, vm=VmSpec(memory=1 * GiB, device_state=0),
                    workload=WorkloadSpec(kind="hotspot", writes_per_s=40_000, hot_set=96 * MiB),
                    link=LinkSpec(bandwidth=1e9 / 8),
                    migration=MigrationSpec(max_bandwidth=0, downtime_limit=0.3),
                    wire=NO_OVERHEAD, source_cpu=FREE_CPU)
    steady = run_one(base)
    t_stop = steady.events[(steady.events.event == "MIGRATION")
                           & (event_field(steady.events, "status") == "device")].t_s.iloc[0]
    slowed = replace(base, link=LinkSpec(bandwidth=1e9 / 8, schedule=(
        BandwidthChange(at=t_stop - 0.01, bandwidth=1e9 / 8 / 4),)))
    run = run_one(slowed).runs.iloc[0]
    assert run.status == "completed"
    assert run.downtime_s > 0.3


def test_non_converging_run_is_cancelled_at_the_sim_time_cap():
    """Without max_time a migration that never converges still ends: cancelled, not converged."""
    sc = Scenario(name="nc", vm=VmSpec(memory=256 * MiB),
                  workload=WorkloadSpec(kind="uniform", writes_per_s=200_000),
                  link=LinkSpec(bandwidth=100e6 / 8),
                  migration=MigrationSpec(max_bandwidth=0, max_sim_time=30.0))
    run = run_one(sc).runs.iloc[0]
    assert run.status == "cancelled"
    assert run.failure_reason == "not converged"
    assert run.total_time_s == pytest.approx(30.0, abs=0.06)
    assert run.pages_lost == 0


def test_max_time_cancels_like_management():
    sc = Scenario(name="mt", vm=VmSpec(memory=256 * MiB),
                  workload=WorkloadSpec(kind="uniform", writes_per_s=200_000),
                  link=LinkSpec(bandwidth=100e6 / 8),
                  migration=MigrationSpec(max_bandwidth=0, max_time=12.0))
    res = run_one(sc)
    run = res.runs.iloc[0]
    assert (run.status, run.failure_reason) == ("cancelled", "max_time")
    statuses = list(event_field(res.events, "status")[(res.events.event == "MIGRATION")
                                                       & (res.events.endpoint == "source")])
    assert statuses == ["setup", "active", "cancelling", "cancelled"]


def test_same_seed_gives_identical_tables():
    sc = Scenario(name="det", seed=42, vm=VmSpec(memory=512 * MiB, zero_fraction=0.3),
                  workload=WorkloadSpec(kind="zipf", writes_per_s=30_000),
                  link=LinkSpec(bandwidth=1e9 / 8),
                  migration=MigrationSpec(max_bandwidth=0, capabilities=("xbzrle",)))
    a, b = run_one(sc), run_one(sc)
    for table in ("runs", "passes", "samples", "events"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
    other = run_one(replace(sc, seed=43))
    assert not a.samples.equals(other.samples)


def test_max_bandwidth_is_a_budget_per_100ms_window():
    """With max-bandwidth below the link rate the measured bandwidth equals max-bandwidth."""
    sc = Scenario(name="bw", vm=VmSpec(memory=1 * GiB), link=LinkSpec(bandwidth=10e9 / 8),
                  migration=MigrationSpec(max_bandwidth=128 * MiB))
    res = run_one(sc)
    active = res.samples[res.samples.status == "active"].bandwidth_bytes_per_s
    assert np.allclose(active.iloc[1:-1], 128 * MiB, rtol=0.001)
    # threshold = 134217.7 B/ms × 300 ms (REF §1.4 worked numbers)
    assert res.samples.threshold_bytes.iloc[2] == pytest.approx(134217.728 * 300, rel=0.001)
    passes = res.events[res.events.event == "MIGRATION_PASS"]
    assert isinstance(event_field(passes, "pass").iloc[0], int)
