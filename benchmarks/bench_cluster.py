"""Issue 18's scale case, for `make bench`: an evacuation of a generated cluster, every migration
page-level. 1,000 hosts in 25 racks, 10,000 guests (2/4/8 GiB hotspot writers, 6:3:1), 100 hosts
evacuated (about 1,000 migrations, 50 at once, 2 per host) over a 25 Gbit/s NIC / 100 Gbit/s
uplink / 400 Gbit/s core tree; guests that stay are not simulated. Each case runs in its own
process, so its peak memory (ru_maxrss) is its own. Figures are printed, not asserted."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

#: (hosts, guests, hosts evacuated), target wall s
CASES = [((100, 1000, 10), 10.0), ((1000, 10000, 100), 600.0)]
KINDS = [("small", "2GiB", 2000, "64MiB"), ("medium", "4GiB", 5000, "128MiB"),
         ("large", "8GiB", 10000, "256MiB")]


def scenario_text(hosts: int, guests: int, evacuated: int) -> str:
    kinds = "".join(f"  - {{name: {n}, vm: {{memory: {m}, zero_fraction: 0.25}}, workload: "
                    f"{{kind: hotspot, writes_per_s: {w}, hot_set: {h}}}}}\n"
                    for n, m, w, h in KINDS)
    weights = "[{guest: small, weight: 6}, {guest: medium, weight: 3}, {guest: large, weight: 1}]"
    leaving = ", ".join(f"h{i}" for i in range(evacuated))
    return (f"name: scale\nseed: 1\nvms:\n{kinds}"
            "migration: {max_bandwidth: 0B/s}\n"
            "cluster:\n"
            f"  generate_hosts: [{{count: {hosts}, name: 'h{{i}}', racks: {max(1, hosts // 40)},"
            f" rack: 'r{{r}}', qemu_version: '10.2', memory: 512GiB}}]\n"
            "  topology: {nic: 25Gbit/s, uplink: 100Gbit/s, core: 400Gbit/s}\n"
            f"  generate_vms: [{{count: {guests}, seed: 2, guests: {weights}}}]\n"
            f"  plan: {{kind: evacuate, hosts: [{leaving}]}}\n"
            "  scheduler: {max_concurrent: 50, max_outbound: 2}\n"
            "  policy: management\n")


def child(hosts: int, guests: int, evacuated: int) -> None:
    from sim.run import run_one
    from sim.scenario import loads_scenario
    from sim.spec import Scenario, VmSpec
    from sim.units import MiB

    run_one(Scenario(name="warm", vm=VmSpec(memory=64 * MiB)))  # numba compile/load, not timed
    t = time.perf_counter()
    runs = run_one(loads_scenario(scenario_text(hosts, guests, evacuated),
                                  file="scale.yaml")).runs
    print(json.dumps({"wall_s": time.perf_counter() - t,
                      "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "migrations": len(runs),
                      "completed": int((runs.status == "completed").sum()),
                      "sim_s": float(runs.end_s.max()),
                      "moved_gib": float(runs.transferred_bytes.sum() / 2**30)}))


def main(cases: list[tuple[tuple[int, int, int], float]] | None = None) -> None:
    print("Clusters: evacuations, every migration page-level (one run per process)")
    print(f"{'hosts':>6} {'guests':>7} {'migrations':>10} {'wall s':>8} {'target':>6} "
          f"{'peak GiB':>8} {'completed':>9} {'sim s':>7} {'moved GiB':>9}")
    for (hosts, guests, evacuated), target in cases or CASES:
        out = subprocess.run([sys.executable, __file__, str(hosts), str(guests), str(evacuated)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{hosts:>6} {guests:>7} {r['migrations']:>10} {r['wall_s']:>8.1f} {target:>6.0f} "
              f"{r['peak_gib']:>8.2f} {r['completed']:>9} {r['sim_s']:>7.1f} "
              f"{r['moved_gib']:>9.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        child(*(int(a) for a in sys.argv[1:]))
    else:
        main()
