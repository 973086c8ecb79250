"""Workloads: the write clock, and the pages each kind touches."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
