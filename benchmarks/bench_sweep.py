"""Sweep throughput: a 200-member sweep of 1 GiB guests, in this process and on 2 workers.

Each member is a light run (~0.1-0.3 s), so the figure shows what the worker pool costs and gains
(start-up of the forkserver and its workers is included: it is what a `migsim sweep` pays).
Target: >= 1.7x with 2 workers on a 2-core machine. Printed, not asserted.
"""

from __future__ import annotations

import dataclasses
import os
import time

MEMBERS = 200
WORKER_COUNTS = (1, 2)
TARGET_SPEEDUP = 1.7


def scenario():  # type: ignore[no-untyped-def]
    from sim.spec import LinkSpec, MigrationSpec, Scenario, SweepSpec, VmSpec, WorkloadSpec
    from sim.units import GiB, MiB

    rates = tuple(float(10_000 + 500 * i) for i in range(MEMBERS // 10))
    return Scenario(name="bench-sweep", seed=1, vm=VmSpec(memory=GiB, zero_fraction=0.25),
                    workload=WorkloadSpec(kind="hotspot", writes_per_s=rates[0], hot_set=128 * MiB),
                    link=LinkSpec(bandwidth=500e6 / 8),
                    migration=MigrationSpec(max_bandwidth=0, capabilities=("xbzrle",)),
                    sweep=SweepSpec(grid=(("workload.writes_per_s", rates),), repeats=10))


def main() -> None:
    from sim.run import run_one
    from sim.spec import VmSpec
    from sim.sweep import sweep
    from sim.units import MiB

    sc = scenario()
    # numba's compile or cache load, not timed: a member's own paths (XBZRLE's too), else the
    # first timed sweep pays them and the speed-up is overstated (5x was printed)
    run_one(dataclasses.replace(sc, sweep=None, vm=VmSpec(memory=64 * MiB)))
    load = os.getloadavg()[0]  # before this benchmark adds its own
    print(f"Sweep ({MEMBERS} members: 1 GiB modelled, hotspot 10-20k w/s, xbzrle, 500 Mbit/s; "
          f"{os.cpu_count()} CPUs, load {load:.1f})")
    print(f"{'workers':>7} {'wall s':>8} {'runs/s':>8} {'s/run':>7} {'speed-up':>9} {'target':>7}")
    base = None
    reference = None
    for workers in WORKER_COUNTS:
        t = time.perf_counter()
        result = sweep(sc, workers=workers)
        wall = time.perf_counter() - t
        assert len(result.runs) == MEMBERS and (result.runs.status == "completed").all()
        if reference is None:
            reference = result.runs
        else:  # the worker count never changes the tables
            assert result.runs.equals(reference)
        base = base or wall
        target = f"{TARGET_SPEEDUP:.1f}" if workers > 1 else "-"
        print(f"{workers:>7} {wall:>8.2f} {MEMBERS / wall:>8.1f} {wall / MEMBERS:>7.3f} "
              f"{base / wall:>8.2f}x {target:>7}")
    if load > 1.0:
        # With the kernel's autogroup scheduling, a busy machine gives this session one share of
        # the CPUs however many workers it starts: the figure then understates the speed-up.
        print(f"(machine busy, load {load:.1f} before the start: the speed-up is understated)")


if __name__ == "__main__":
    main()
