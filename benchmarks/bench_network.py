"""Network solve cost: max-min shares over a 1,000-host three-tier tree (40 racks of 25 hosts,
2,081 links, cross traffic on every uplink), for 10 to 1,000 concurrent flows between random
hosts. Target: a solve well under 10 ms at 300 flows. Printed, not asserted.

Run: ``.venv/bin/python benchmarks/bench_network.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np

G = 1e9 / 8  # 1 Gbit/s in bytes/s
HOSTS, PER_RACK = 1000, 25
FLOW_COUNTS = (10, 100, 300, 1000)
TARGET_MS = 10.0


def timed_solve(topo, flows: dict, reps: int) -> float:  # type: ignore[no-untyped-def]
    """Wall time of one solve, ms, the least of ``reps`` (solved afresh each time, as after a
    join or leave; the least, as other work on a shared machine only adds)."""
    from sim.network.solve import solve

    solve(topo.network.table, flows, 0.0)  # the links' capacities at t, computed once per interval
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        solve(topo.network.table, flows, 0.0)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def case(label: str, heterogeneous: bool) -> None:
    from sim.network import build_topology
    from sim.network.solve import Flow

    rng = np.random.default_rng(1)
    hosts = {f"h{i}": f"r{i // PER_RACK}" for i in range(HOSTS)}
    racks = sorted(set(hosts.values()))
    if heterogeneous:  # many distinct bottleneck levels: the solver's harder case
        nic: float | dict[str, float] = {h: float(rng.uniform(5, 50)) * G for h in hosts}
        cross = {f"{r}.up": float(rng.uniform(1, 50)) * G for r in racks}
    else:
        nic, cross = 25 * G, {f"{r}.up": 5 * G for r in racks}
    topo = build_topology(hosts, nic, 100 * G, 400 * G, cross=cross)
    names = list(hosts)
    print(f"{label}: {len(topo.network.link_names)} links")
    for count in FLOW_COUNTS:
        flows = {}
        for i in range(count):
            src, dst = rng.choice(len(names), 2, replace=False)
            cap = (float(rng.uniform(1, 30)) * G if heterogeneous
                   else float(rng.choice([math.inf, 10 * G])))
            path = topo.network.indices(topo.path(names[src], names[dst]))
            flows[i] = Flow(path, cap)
        ms = timed_solve(topo, flows, reps=20)
        flag = "" if ms < TARGET_MS else f"  (target < {TARGET_MS} ms)"
        print(f"  {count:5d} flows: {ms:7.3f} ms per solve{flag}")


def main() -> None:
    case("equal NICs (25 Gbit/s), uplinks 100, core 400", heterogeneous=False)
    case("random NICs, caps and cross traffic", heterogeneous=True)


if __name__ == "__main__":
    main()
