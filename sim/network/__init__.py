"""Networks: named links shared max-min fairly by migrations over paths (issue 18).

API in brief (stable; added to, not renamed)::

    net = Network(clock=lambda: env.now)              # clock stamps joins/leaves for the table
    net.add_link("h1.tx", 25e9 / 8, latency_s=5e-6, tier="nic",
                 cross=1e9 / 8,                       # or [(at_s, bytes_per_s), ...]
                 schedule=[(60.0, 10e9 / 8)])         # capacity changes (at_s, bytes_per_s)
    route = PathLink(net, ["h1.tx", "rackA.up", "core", "rackB.down", "h7.rx"])
    # route has Link's interface: latency_s, join(flow, cap), leave(flow), set_cap(flow, cap),
    # share(flow, t), next_change_after(t), rate_at(t), flows -> give it to Pair/Migration.
    net.share(flow, t)                                # the same rate, by flow
    net.links_table(until=None)   # t_s, link, tier, flows, used_bytes_per_s,
                                  # cross_bytes_per_s, capacity_bytes_per_s
    net.bytes_carried(until=None) # link, tier, flow_bytes, cross_bytes

    topo = build_topology({"h1": "rackA", "h7": "rackB"}, host_nic=25e9 / 8,
                          tor_uplink=100e9 / 8, core=400e9 / 8)  # core=inf: no core link
    topo.path("h1", "h7")   # ['h1.tx', 'rackA.up', 'core', 'rackB.down', 'h7.rx']
    topo.route("h1", "h7")  # a PathLink over that path (one per host pair)
    topo.network            # the Network

Model: every flow (a migration from its setup to its end) crosses the links of its path; each
link's cross traffic is one more flow on it that wants its demand. Rates are max-min fair over
all links (progressive filling, :mod:`sim.network.solve`), as TCP flows of similar round-trip
times settle to first order (Bertsekas & Gallager, *Data Networks*, §6.5). The solution is
cached per set of flows and per interval between link changes. A flow reads its share when a
chunk starts (chunks last at most 50 ms), so a change moves its rate from its next chunk on.
Limits: no RTT bias, no slow start or loss recovery, cross traffic is elastic up to its demand.
"""

from .links import Schedule
from .network import Network
from .path import PathLink
from .solve import max_min_rates
from .topology import Topology, build_topology, tree_path
from .usage import LINK_COLUMNS

__all__ = ["LINK_COLUMNS", "Network", "PathLink", "Schedule", "Topology", "build_topology",
           "max_min_rates", "tree_path"]
