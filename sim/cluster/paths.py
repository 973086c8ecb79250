"""The links a migration between two hosts crosses, and the link object its engine sends over.

Link names: a host's NIC is ``<host>.tx`` (out) and ``<host>.rx`` (in); a rack's uplink is
``<rack>.up`` (to the core) and ``<rack>.down``; the core is ``core``. A path within a rack is
``src.tx, dst.rx``; across racks ``src.tx, rack.up, core, rack.down, dst.rx``.
"""

from __future__ import annotations

from ..link import Link
from ..spec import LinkSpec
from .inventory import Host
from .spec import ClusterSpec


class Paths:
    """Path names and per-migration links of one cluster run."""

    def __init__(self, spec: ClusterSpec, hosts: dict[str, Host]) -> None:
        self.spec = spec
        self.hosts = hosts

    def names(self, source: str, destination: str) -> tuple[str, ...]:
        a, b = self.hosts[source], self.hosts[destination]
        if a.rack == b.rack:
            return (f"{source}.tx", f"{destination}.rx")
        return (f"{source}.tx", f"{a.rack}.up", "core", f"{b.rack}.down", f"{destination}.rx")

    def link(self, source: str, destination: str) -> Link:
        """A link for one migration: the path's narrowest capacity and summed latency.

        Interim, until :mod:`sim.network` shares the links max-min fairly between flows: here
        concurrent migrations do not share (each has its own path)."""
        topo = self.spec.topology
        a, b = self.hosts[source], self.hosts[destination]
        rates = [a.nic, b.nic]
        latency = 2 * topo.nic_latency
        if a.rack != b.rack:
            rates += [topo.uplink, topo.core]
            latency += 2 * topo.uplink_latency + topo.core_latency
        return Link(LinkSpec(bandwidth=min(rates), latency=latency))
