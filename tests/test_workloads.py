"""Workloads: the write clock, and the pages each kind touches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.spec import PhaseSpec, RegionSpec, WorkloadSpec
from sim.workloads import make_workload

P = 4096


def writes(spec, t1=1.0, pieces=4, seed=0):
    wl = make_workload(spec, P, 4096)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.0, t1, pieces + 1)
    batches = [wl.writes(a, b, rng) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return (np.concatenate([b.t_s for b in batches]), np.concatenate([b.page for b in batches]))


def test_write_clock_is_steady_and_tiles_time():
    t, p = writes(WorkloadSpec(kind="uniform", writes_per_s=1000), pieces=7)
    assert t.size == 1000
    assert np.allclose(np.diff(t), 1e-3)
    assert ((p >= 0) & (p < P)).all()


def test_sequential_writes_distinct_pages_in_order_and_wraps():
    _, p = writes(WorkloadSpec(kind="sequential", writes_per_s=P + 10), pieces=3)
    assert list(p[:P]) == list(range(P))
    assert list(p[P:]) == list(range(10))


def test_sequential_starts_at_its_position_and_wraps_in_its_region():
    spec = WorkloadSpec(kind="sequential", writes_per_s=100, region=RegionSpec(offset=1000 * P,
                        size=64 * P), stride=2 * P, position=60 * P)
    _, p = writes(spec, pieces=2)
    # 60, 62, then the region's start again: pages 0, 2, ... of the region
    assert list(p[:5]) == [1060, 1062, 1000, 1002, 1004]


def test_region_and_hot_set_confine_writes():
    spec = WorkloadSpec(kind="hotspot", writes_per_s=20000, hot_set=64 * 4096, hot_probability=1.0,
                        region=RegionSpec(offset=1024 * 4096, size=512 * 4096))
    _, p = writes(spec)
    assert p.min() >= 1024 and p.max() < 1024 + 64


def test_zipf_prefers_few_pages():
    _, p = writes(WorkloadSpec(kind="zipf", writes_per_s=20000, zipf_exponent=1.3))
    counts = np.sort(np.bincount(p, minlength=P))[::-1]
    assert counts[:10].sum() > 0.4 * p.size


def test_phased_switches_workloads_and_repeats():
    spec = WorkloadSpec(kind="phased", phases=(
        PhaseSpec(0.5, WorkloadSpec(kind="idle")),
        PhaseSpec(0.5, WorkloadSpec(kind="sequential", writes_per_s=100)),
    ))
    t, _ = writes(spec, t1=2.0, pieces=5)
    in_idle = (t % 1.0) < 0.5
    assert not in_idle.any()
    assert t.size == 100


def test_trace_replays_a_recorded_log(tmp_path):
    # sorted by time: an unsorted trace is refused (issue 20; tests/test_trace_files.py)
    log = pd.DataFrame({"t_s": [0.05, 0.1, 0.7, 1.5], "page": [1, 3, 2, 9]})
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    t, p = writes(WorkloadSpec(kind="trace", trace=str(path)), t1=1.0, pieces=2)
    assert list(t) == [0.05, 0.1, 0.7] and list(p) == [1, 3, 2]


@pytest.mark.parametrize(("s", "n"), [(1.0001, 1000), (1.05, 5000), (1.5, 40)])
def test_zipf_rejection_inversion_draws_the_bounded_law(s, n):
    """The sampler used when numpy's unbounded Zipf would refuse most draws: its frequencies
    match k^-s / H(n, s) (a chi-square test at a fixed seed, far from its 1e-3 tail)."""
    from sim.workloads import _inverted_ranks

    draws = _inverted_ranks(s, n, 200_000, np.random.default_rng(7))
    assert draws.min() >= 1 and draws.max() <= n
    p = np.arange(1, n + 1, dtype=float) ** -s
    p /= p.sum()
    counts = np.bincount(draws, minlength=n + 1)[1:]
    expected = p * draws.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi-square with n-1 degrees of freedom: mean n-1, sd sqrt(2(n-1))
    assert chi2 < (n - 1) + 5 * np.sqrt(2 * (n - 1)), chi2


def test_zipf_near_one_on_a_large_guest_costs_per_write():
    """s = 1.0001 over 16 M pages keeps one numpy draw in about 600; the workload switches to
    rejection-inversion, so a second of writes is drawn in well under a second."""
    from sim.workloads import WORKLOADS, _kept_share

    assert _kept_share(1.0001, 16 * 2**20) < 0.01
    assert _kept_share(1.1, 2**18) > 0.5  # the usual case keeps numpy's draws (and results)
    spec = WorkloadSpec(kind="zipf", writes_per_s=1_000_000, zipf_exponent=1.0001)
    w = WORKLOADS["zipf"](spec, 16 * 2**20, 4096)
    batch = w.writes(0.0, 1.0, np.random.default_rng(1), 1.0)
    assert len(batch) == 1_000_000
    counts = np.bincount(batch.page, minlength=16 * 2**20)
    assert counts.max() > 50 * counts.mean()  # still a heavy head
