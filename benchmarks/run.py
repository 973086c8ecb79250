"""`make bench`: speed and memory figures for the engine and the XBZRLE encoder.

Each engine case runs in its own process so its peak memory (ru_maxrss) is its own. Figures are
printed, not asserted: targets live here, not in timed unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ENGINE_CASES = [
    # (label, memory GiB, target wall s, target peak GiB)
    ("16 GiB hotspot 100k w/s, 10 Gbit/s, xbzrle off", 16, 3.0, None),
    ("256 GiB hotspot 100k w/s, 10 Gbit/s, xbzrle off", 256, 60.0, 3.0),
]

_CHILD = r"""
import json, resource, sys, time
from sim.run import run_one
from sim.spec import LinkSpec, MigrationSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import GiB, MiB
mem = int(sys.argv[1])
sc = Scenario(name=f"bench-{mem}g", seed=1, vm=VmSpec(memory=mem * GiB, zero_fraction=0.25),
              workload=WorkloadSpec(kind="hotspot", writes_per_s=100_000, hot_set=256 * MiB),
              link=LinkSpec(bandwidth=10e9 / 8), migration=MigrationSpec(max_bandwidth=0))
run_one(Scenario(name="warm", vm=VmSpec(memory=64 * MiB)))  # numba compile/load, not timed
t = time.perf_counter()
res = run_one(sc)
wall = time.perf_counter() - t
row = res.runs.iloc[0]
print(json.dumps({"wall_s": wall, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "status": row.status, "sim_s": float(row.total_time_s),
                  "passes": int(row.dirty_sync_count)}))
"""


def engine() -> None:
    print("Engine (modelled content, one run per process)")
    print(f"{'case':<50} {'wall s':>8} {'target':>7} {'peak GiB':>9} {'target':>7} {'sim s':>8} "
          f"{'syncs':>6}")
    for label, mem, wall_target, peak_target in ENGINE_CASES:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(mem)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peak = f"{peak_target:.1f}" if peak_target else "-"
        print(f"{label:<50} {r['wall_s']:>8.2f} {wall_target:>7.1f} {r['peak_gib']:>9.2f} "
              f"{peak:>7} {r['sim_s']:>8.1f} {r['passes']:>6}")


def main() -> None:
    engine()
    print()
    sys.path.insert(0, str(HERE))
    import bench_xbzrle

    bench_xbzrle.main()
    print()
    import bench_sweep

    bench_sweep.main()


if __name__ == "__main__":
    main()
