"""The network of a cluster run (:mod:`sim.network`'s three-tier tree) and the path each
migration's engine sends over.

Link names: a host's NIC is ``<host>.tx`` (out) and ``<host>.rx`` (in); a rack's uplink is
``<rack>.up`` (to the core) and ``<rack>.down``; the core is ``core``. A path within a rack is
``src.tx, dst.rx``; across racks ``src.tx, rack.up, core, rack.down, dst.rx``. Bandwidth is
shared max-min fairly over the links of every path, with each link's cross traffic.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd
import simpy

from ..link import Route
from ..network import Network, PathLink, build_topology
from .inventory import Host
from .spec import ClusterSpec


class Paths:
    """The cluster's network, path names and per-migration links."""

    def __init__(self, env: simpy.Environment, spec: ClusterSpec,
                 hosts: dict[str, Host]) -> None:
        topo = spec.topology
        cross: dict[str, float | list[tuple[float, float]]] = {}
        for c in spec.cross_traffic:
            # a schedule: the constant bandwidth until its first change (0 when not given)
            cross[c.link] = ([(0.0, c.bandwidth)] + [(x.at, x.bandwidth) for x in c.schedule]
                             if c.schedule else c.bandwidth)
        self.topology = build_topology(
            {h.name: h.rack for h in hosts.values()}, {h.name: h.nic for h in hosts.values()},
            topo.uplink, topo.core, nic_latency_s=topo.nic_latency,
            tor_latency_s=topo.uplink_latency, core_latency_s=topo.core_latency, cross=cross)
        self.topology.network.clock = lambda: float(env.now)
        self._tokens = itertools.count()  # one numbering per run: same seed, same tables

    def names(self, source: str, destination: str) -> tuple[str, ...]:
        return tuple(self.topology.path(source, destination))

    def link(self, source: str, destination: str) -> Route:
        """The path as the engine's link: the :class:`sim.network.PathLink` behind a
        :class:`Tokens` view, so the network's log holds a number per migration, not the
        migration (whose guest would then outlive it)."""
        return Tokens(self.topology.route(source, destination), self._tokens)

    def links_table(self, until: float) -> pd.DataFrame:
        return self.topology.network.links_table(until)

    def bytes_carried(self, until: float) -> pd.DataFrame:
        return self.topology.network.bytes_carried(until)


class Tokens:
    """A :class:`~sim.network.PathLink` whose flows are numbers standing for the engine's flow
    objects (one number per flow while it sends)."""

    def __init__(self, route: PathLink, numbers: itertools.count[int]) -> None:
        self.route = route
        self.latency_s = route.latency_s
        self._numbers = numbers
        self._token: dict[int, int] = {}  # id(flow) -> its number, while it sends

    def join(self, flow: object, cap: float = math.inf) -> None:
        token = self._token.setdefault(id(flow), next(self._numbers))
        self.route.join(token, cap)

    def set_cap(self, flow: object, cap: float) -> None:
        if id(flow) in self._token:
            self.route.set_cap(self._token[id(flow)], cap)

    def leave(self, flow: object) -> None:
        token = self._token.pop(id(flow), None)
        if token is not None:
            self.route.leave(token)

    @property
    def network(self) -> Network:
        """The network the path runs through (its flows' shares change together)."""
        return self.route.network

    def share(self, flow: object, t: float) -> float:
        token = self._token.get(id(flow))
        return self.route.share(token if token is not None else flow, t)

    def rate_at(self, t: float) -> float:
        return self.route.rate_at(t)

    def next_change_after(self, t: float) -> float:
        return self.route.next_change_after(t)

    @property
    def flows(self) -> int:
        return self.route.flows
