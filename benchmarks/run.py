"""`make bench`: speed and memory figures for the engine and the XBZRLE encoder.

Each engine case runs in its own process so its peak memory (ru_maxrss) is its own. Figures are
printed, not asserted: targets live here, not in timed unit tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The bench guest of the "cost in writes and pages sent" issue: hotspot at 100k writes/s over a
# 1 GiB hot set, 10 Gbit/s, max-bandwidth unlimited, a quarter of RAM zero.
ENGINE_CASES = [
    # (label, memory GiB, target wall s, target peak GiB)
    ("16 GiB", 16, 3.0, None),
    ("256 GiB", 256, 60.0, 3.0),
    ("1 TiB", 1024, 60.0, 2.0),
    ("4 TiB", 4096, 300.0, None),
]
SIZES = os.environ.get("MIGSIM_BENCH_SIZES")  # e.g. "16,256" for a quick look

_CHILD = r"""
import json, resource, sys, time
from sim.run import run_one
from sim.spec import LinkSpec, MigrationSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import GiB, MiB
mem = int(sys.argv[1])
sc = Scenario(name=f"bench-{mem}g", seed=1, vm=VmSpec(memory=mem * GiB, zero_fraction=0.25),
              workload=WorkloadSpec(kind="hotspot", writes_per_s=100_000, hot_set=1 * GiB),
              link=LinkSpec(bandwidth=10e9 / 8), migration=MigrationSpec(max_bandwidth=0))
run_one(Scenario(name="warm", vm=VmSpec(memory=64 * MiB)))  # numba compile/load, not timed
t = time.perf_counter()
res = run_one(sc)
wall = time.perf_counter() - t
row = res.runs.iloc[0]
print(json.dumps({"wall_s": wall, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "status": row.status, "sim_s": float(row.total_time_s),
                  "pages": int(res.passes.pages_sent.sum()), "passes": int(row.dirty_sync_count)}))
"""

# SimGrid's "busy" guests: 1 GiB, 1 MiB/s dirtied (uniform), max-bandwidth 128 MiB/s, all on one
# 10 Gbit/s link.
_FLEET = r"""
import json, resource, sys, time
from sim.run import run_one
from sim.spec import GiB, MiB, EndpointsSpec, GuestSpec, LinkSpec, MigrationSpec, Scenario, VmSpec, WorkloadSpec
n = int(sys.argv[1])
vm, wl = VmSpec(memory=1 * GiB), WorkloadSpec(kind="uniform", writes_per_s=256)
mig = MigrationSpec(max_bandwidth=128 * MiB)
guests = tuple(GuestSpec(f"vm{i}", vm, wl, mig, EndpointsSpec()) for i in range(n))
sc = Scenario(name="busy", seed=1, vm=vm, workload=wl, migration=mig,
              link=LinkSpec(bandwidth=10e9 / 8), vms=guests)
run_one(Scenario(name="warm", vm=VmSpec(memory=64 * MiB)))
t = time.perf_counter()
res = run_one(sc)
print(json.dumps({"wall_s": time.perf_counter() - t,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "completed": int((res.runs.status == "completed").sum()),
                  "sim_s": float(res.runs.total_time_s.max())}))
"""
FLEETS = [(100, 5.0), (1000, 60.0)]  # (guests, target wall s)
FLEET_LIMIT_S = float(os.environ.get("MIGSIM_BENCH_FLEET_LIMIT", "300"))


def _child(code: str, arg: int, timeout: float | None = None) -> dict[str, object] | None:
    try:
        out = subprocess.run([sys.executable, "-c", code, str(arg)], capture_output=True,
                             text=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine() -> None:
    print("Engine (modelled content, one run per process; wall per simulated second and per page "
          "sent, and their ratio to the smallest guest)")
    print(f"{'guest':<8} {'wall s':>7} {'target':>6} {'peak GiB':>8} {'target':>6} {'sim s':>7} "
          f"{'syncs':>5} {'pages sent':>11} {'ms/sim s':>8} {'ns/page':>7} {'× 16 GiB':>8}")
    first = None
    wanted = {int(v) for v in SIZES.split(",")} if SIZES else None
    for label, mem, wall_target, peak_target in ENGINE_CASES:
        if wanted is not None and mem not in wanted:
            continue
        r = _child(_CHILD, mem)
        assert r is not None
        per_page = float(r["wall_s"]) / int(r["pages"]) * 1e9
        first = first or per_page
        peak = f"{peak_target:.1f}" if peak_target else "-"
        print(f"{label:<8} {r['wall_s']:>7.2f} {wall_target:>6.0f} {r['peak_gib']:>8.2f} "
              f"{peak:>6} {r['sim_s']:>7.1f} {r['passes']:>5} {r['pages']:>11} "
              f"{float(r['wall_s']) / float(r['sim_s']) * 1e3:>8.2f} {per_page:>7.1f} "
              f"{per_page / first:>8.2f}")


def fleets() -> None:
    print(f"Fleets of busy 1 GiB guests on one 10 Gbit/s link (a run over "
          f"{FLEET_LIMIT_S:.0f} s is stopped)")
    print(f"{'guests':>6} {'wall s':>8} {'target':>6} {'peak GiB':>8} {'completed':>9} {'sim s':>7}")
    for n, target in FLEETS:
        r = _child(_FLEET, n, FLEET_LIMIT_S)
        if r is None:
            print(f"{n:>6} {'> ' + format(FLEET_LIMIT_S, '.0f'):>8} {target:>6.0f}  (stopped)")
            continue
        print(f"{n:>6} {r['wall_s']:>8.2f} {target:>6.0f} {r['peak_gib']:>8.2f} "
              f"{r['completed']:>9} {r['sim_s']:>7.1f}")


def main() -> None:
    engine()
    print()
    fleets()
    print()
    sys.path.insert(0, str(HERE))
    import bench_xbzrle

    bench_xbzrle.main()
    print()
    import bench_sweep

    bench_sweep.main()
    print()
    import bench_cluster

    bench_cluster.main()


if __name__ == "__main__":
    main()
