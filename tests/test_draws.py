"""Writes drawn in compiled code (sim.workloads.draws) are numpy's, value for value.

The compiled draws reproduce ``Generator.integers`` and ``Generator.random`` on PCG64 from the
bit generator's raw outputs; the engine uses them for uniform and hotspot writes. These tests
compare with numpy itself (not with the module's own output): the values, the generator's state
afterwards, and whole runs with the compiled draws switched off.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.run import run_one
from sim.spec import (
    EndpointsSpec,
    GuestSpec,
    LinkSpec,
    MigrationSpec,
    Scenario,
    VmSpec,
    WorkloadSpec,
)
from sim.units import MiB
from sim.workloads import Hotspot, Uniform, Workload, make_workload
from sim.workloads.draws import RawDraws, integers, random, steady_writes

# Ranges with no rejection (powers of two), with some, and with about half the draws rejected
# (just above 2**31), the widest the 32-bit path takes, and one value (no draw at all).
RANGES = [1, 2, 3, 7, 100, 4096, 262144, 262145, 1000003, 2**31 + 1, 3 * 2**30, 2**32 - 1]


@pytest.mark.parametrize("n", RANGES)
def test_integers_and_random_are_numpys(n: int) -> None:
    for seed in range(3):
        ours, theirs = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 7])
        # leave a 32-bit half waiting in the bit generator's state first
        ours.integers(0, 5, size=3)
        theirs.integers(0, 5, size=3)
        draws = RawDraws(ours)
        for size in (1, 2, 3, 13, 0, 64):
            draws.pull(4 * size + 64)
            assert np.array_equal(integers(draws.raw, draws.at, n, size),
                                  theirs.integers(0, n, size=size, dtype=np.int64))
            draws.pull(size + 8)
            assert np.array_equal(random(draws.raw, draws.at, size), theirs.random(size))
        draws.settle()
        assert ours.bit_generator.state == theirs.bit_generator.state
        assert np.array_equal(ours.integers(0, 1000, 9), theirs.integers(0, 1000, 9))


def test_a_short_pull_draws_nothing() -> None:
    """Draws that run past the outputs pulled are taken back (the caller pulls more)."""
    rng = np.random.default_rng(3)
    draws = RawDraws(rng)
    draws.pull(1)
    draws.at[0] = draws.raw.shape[0] - 2  # two outputs left
    wl = make_workload(WorkloadSpec(kind="uniform", writes_per_s=1000), 1 << 20, 4096)
    params = wl.steady_params()
    assert params is not None
    before = draws.at.copy()
    t_buf, p_buf = np.empty(64, np.float64), np.empty(64, np.int64)
    count, _ = steady_writes(draws.raw, draws.at, params, 0.0, 0.0, 0.05, 1.0, t_buf, p_buf, 0)
    assert count == -2
    assert np.array_equal(draws.at, before)


def _python_writes(wl: Workload, rng: np.random.Generator, edges: list[float],
                   scales: list[float]) -> tuple[np.ndarray, np.ndarray]:
    parts = [wl.writes(a, b, rng, s) for a, b, s in zip(edges, edges[1:], scales, strict=False)]
    return (np.concatenate([p.t_s for p in parts]), np.concatenate([p.page for p in parts]))


@pytest.mark.parametrize("spec", [
    WorkloadSpec(kind="uniform", writes_per_s=333.3),
    WorkloadSpec(kind="hotspot", writes_per_s=12345, hot_set=1 * MiB),
    WorkloadSpec(kind="hotspot", writes_per_s=777, hot_set=4096, hot_probability=0.3),
])
def test_steady_writes_are_the_workloads(spec: WorkloadSpec) -> None:
    """Interval by interval (uneven lengths, a throttled stretch, an empty interval), the
    compiled writes are the workload's own: times, pages, the generator's state after."""
    pages = 3 * 65536 + 11
    edges = [0.0, 0.013, 0.05, 0.05, 0.1003, 0.31, 0.3100001, 1.0]
    scales = [1.0, 1.0, 1.0, 0.5, 0.25, 1.0, 1.0]
    ref_wl, ref_rng = make_workload(spec, pages, 4096), np.random.default_rng(11)
    want_t, want_p = _python_writes(ref_wl, ref_rng, edges, scales)
    wl, rng = make_workload(spec, pages, 4096), np.random.default_rng(11)
    params = wl.steady_params()
    assert params is not None and isinstance(wl, Uniform | Hotspot)
    draws = RawDraws(rng)
    t_buf, p_buf = np.empty(want_t.size + 64, np.float64), np.empty(want_t.size + 64, np.int64)
    count = 0
    for a, b, s in zip(edges, edges[1:], scales, strict=False):
        draws.pull(4 * int(spec.writes_per_s * (b - a)) + 64)
        count, c1 = steady_writes(draws.raw, draws.at, params, a, wl.clock_count, b, s, t_buf,
                                  p_buf, count)
        assert count >= 0
        wl.advance_clock(b, c1)
    draws.settle()
    assert np.array_equal(t_buf[:count], want_t)
    assert np.array_equal(p_buf[:count], want_p)
    assert rng.bit_generator.state == ref_rng.bit_generator.state


def _fleet(kind: str) -> Scenario:
    vm = VmSpec(memory=64 * MiB)
    wl = WorkloadSpec(kind=kind, writes_per_s=3000, hot_set=4 * MiB)
    mig = MigrationSpec(max_bandwidth=40 * MiB)
    guests = tuple(GuestSpec(f"vm{i}", vm, wl, mig, EndpointsSpec()) for i in range(3))
    return Scenario(name="drawn", seed=4, vm=vm, workload=wl, migration=mig,
                    link=LinkSpec(bandwidth=50 * MiB), vms=guests)


@pytest.mark.parametrize("kind", ["uniform", "hotspot"])
def test_runs_are_the_same_without_compiled_draws(kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's four tables are identical with the compiled draws and with numpy's (the
    engine's general path, taken when a workload offers no compiled draws)."""
    fast = run_one(_fleet(kind))
    monkeypatch.setattr(Workload, "steady_params", lambda self: None)
    for cls in (Uniform, Hotspot):
        monkeypatch.setattr(cls, "steady_params", lambda self: None)
    slow = run_one(_fleet(kind))
    assert (fast.runs.status == "completed").all()
    for table in ("runs", "passes", "samples", "events"):
        assert getattr(fast, table).equals(getattr(slow, table)), table
