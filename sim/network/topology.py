"""The standard three-tier tree: host NICs, top-of-rack uplinks, a core.

Each host's NIC is full duplex: two links, ``<host>.tx`` (out of the host) and ``<host>.rx``
(into it), so a host's outbound and inbound migrations do not share. Each rack has an uplink
pair, ``<rack>.up`` (rack to core) and ``<rack>.down`` (core to rack). The core is one link,
``core``, shared by every flow between racks (or none, when its capacity is unlimited). Paths:
same host's rack: ``src.tx, dst.rx``; different racks: ``src.tx, rackS.up, core, rackD.down,
dst.rx`` (without ``core`` when there is none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .links import Schedule
from .network import Network
from .path import PathLink

Rate = float | Mapping[str, float]


@dataclass
class Topology:
    """A network built as a tree, and which rack each host is in."""

    network: Network
    rack_of: dict[str, str]
    core: bool = True
    _routes: dict[tuple[str, str], PathLink] = field(default_factory=dict, init=False,
                                                     repr=False)

    def path(self, src_host: str, dst_host: str) -> list[str]:
        """The link names a migration from ``src_host`` to ``dst_host`` crosses."""
        return tree_path(self.rack_of, src_host, dst_host, self.core)

    def route(self, src_host: str, dst_host: str) -> PathLink:
        """The :class:`PathLink` from ``src_host`` to ``dst_host`` (one per pair of hosts)."""
        key = (src_host, dst_host)
        if key not in self._routes:
            self._routes[key] = PathLink(self.network, self.path(src_host, dst_host))
        return self._routes[key]


def tree_path(rack_of: Mapping[str, str], src_host: str, dst_host: str,
              core: bool = True) -> list[str]:
    """The links from ``src_host`` to ``dst_host`` in a tree (see the module's docstring)."""
    for host in (src_host, dst_host):
        if host not in rack_of:
            raise KeyError(f"no host named {host!r}")
    if src_host == dst_host:
        raise ValueError(f"a migration from {src_host!r} to itself crosses no link")
    src_rack, dst_rack = rack_of[src_host], rack_of[dst_host]
    if src_rack == dst_rack:
        return [f"{src_host}.tx", f"{dst_host}.rx"]
    middle = ["core"] if core else []
    return [f"{src_host}.tx", f"{src_rack}.up", *middle, f"{dst_rack}.down", f"{dst_host}.rx"]


def _rate(rate: Rate, name: str) -> float:
    return float(rate[name]) if isinstance(rate, Mapping) else float(rate)


def build_topology(hosts: Mapping[str, str], host_nic: Rate, tor_uplink: Rate,
                   core: float = math.inf, *, nic_latency_s: float = 0.0,
                   tor_latency_s: float = 0.0, core_latency_s: float = 0.0,
                   cross: Mapping[str, float | Schedule] | None = None,
                   network: Network | None = None) -> Topology:
    """A three-tier tree: ``hosts`` maps each host to its rack; ``host_nic`` (bytes/s, one rate
    or one per host) is each direction of a host's NIC, ``tor_uplink`` (one rate or one per
    rack) each direction of a rack's uplink, ``core`` the core link (``inf``: none). Latencies
    are one-way per link of each tier. Links are added to ``network`` (a new one by default),
    which may hold more. ``cross`` gives a link's cross traffic by link name (bytes/s, or a
    schedule of ``(at_s, rate)``)."""
    net = network if network is not None else Network()
    cross = dict(cross or {})
    racks = sorted(set(hosts.values()))
    for host in hosts:
        for end in ("tx", "rx"):
            name = f"{host}.{end}"
            net.add_link(name, _rate(host_nic, host), nic_latency_s, "nic",
                         cross.pop(name, 0.0))
    for rack in racks:
        for end in ("up", "down"):
            name = f"{rack}.{end}"
            net.add_link(name, _rate(tor_uplink, rack), tor_latency_s, "tor",
                         cross.pop(name, 0.0))
    has_core = math.isfinite(core)
    if has_core:
        net.add_link("core", core, core_latency_s, "core", cross.pop("core", 0.0))
    if cross:
        raise KeyError(f"cross traffic on {sorted(cross)[0]!r}, which is not a link of the tree")
    return Topology(net, dict(hosts), has_core)
