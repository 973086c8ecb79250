"""The cluster as it stands during a run: hosts (whose QEMU a rolling upgrade changes) and guests
(each on exactly one host), expanded from the ``cluster:`` section.

Generated guests draw their kind (by weight) and their host (uniformly) from one
``numpy.random.Generator`` per group, seeded with the group's ``seed``, vectorised. Model choice:
generation ignores the hosts' memory (a generated host may be over-committed at the start);
placement by a plan (:mod:`.plans`) respects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..spec import GuestSpec, Scenario
from .spec import ClusterSpec, supports_of


@dataclass
class Host:
    """One host: its rack and QEMU (``version``, ``supports``), NIC rate and limits."""

    name: str
    index: int
    rack: str
    version: str | None
    supports: frozenset[str]
    nic: float
    cores: int
    memory: int
    upgraded_at: float | None = None


@dataclass
class Guest:
    """One guest of the cluster: its kind (a ``vms:`` item, or the top-level guest) and host."""

    name: str
    index: int
    kind: GuestSpec
    host: str
    moves: list[str] = field(default_factory=list)  # the hosts it left, in order

    @property
    def memory(self) -> int:
        return self.kind.vm.memory

    @property
    def writes_per_s(self) -> float:
        return self.kind.workload.writes_per_s


def expand_hosts(spec: ClusterSpec) -> list[Host]:
    """Every host, listed ones first, then each generated group's."""
    nic = spec.topology.nic
    hosts = [Host(h.name, i, h.rack, h.qemu_version, supports_of(h.qemu_version, h.supports),
                  h.nic or nic, h.cores, h.memory) for i, h in enumerate(spec.hosts)]
    for g in spec.generate_hosts:
        supports = supports_of(g.qemu_version, g.supports)
        for i in range(g.count):
            rack = g.rack.replace("{r}", str(i * g.racks // g.count))
            hosts.append(Host(g.name.replace("{i}", str(i)), len(hosts), rack, g.qemu_version,
                              supports, g.nic or nic, g.cores, g.memory))
    return hosts


def expand_guests(scenario: Scenario, hosts: list[Host]) -> list[Guest]:
    """Every guest, listed ones first, then each generated group's."""
    spec = scenario.cluster
    assert spec is not None
    kinds = {g.name: g for g in scenario.vms}
    top = GuestSpec("", scenario.vm, scenario.workload, scenario.migration, scenario.endpoints)
    guests = [Guest(v.name, i, kinds[v.guest] if v.guest is not None else top, v.host)
              for i, v in enumerate(spec.vms)]
    names = [h.name for h in hosts]
    for g in spec.generate_vms:
        rng = np.random.default_rng([g.seed, 18])
        choices = [kinds[w.guest] for w in g.guests] or [top]
        weights = np.array([w.weight for w in g.guests] or [1.0])
        kind = rng.choice(len(choices), size=g.count, p=weights / weights.sum())
        pool = list(g.hosts) or names
        where = rng.integers(len(pool), size=g.count)
        for i in range(g.count):
            guests.append(Guest(g.name.replace("{i}", str(i)), len(guests),
                                choices[int(kind[i])], pool[int(where[i])]))
    return guests


class Cluster:
    """The hosts and guests of one run, with each host's committed guest memory.

    ``reserved`` counts guests on their way to a host (a migration queued or running to it), so
    placement never over-fills a host with moves it has already promised."""

    def __init__(self, hosts: list[Host], guests: list[Guest]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.guests = {g.name: g for g in guests}
        self.load = {h.name: 0 for h in hosts}
        for g in guests:
            self.load[g.host] += g.memory
        self.reserved = {h.name: 0 for h in hosts}

    def on(self, host: str) -> list[Guest]:
        """The guests on ``host``, in guest order."""
        return [g for g in self.guests.values() if g.host == host]

    def free(self, host: str) -> int:
        """Memory left on ``host`` for more guests (may be negative: an over-committed start)."""
        return self.hosts[host].memory - self.load[host] - self.reserved[host]

    def move(self, guest: Guest, destination: str) -> None:
        """``guest`` now runs on ``destination`` (a migration completed)."""
        self.load[guest.host] -= guest.memory
        self.load[destination] += guest.memory
        guest.moves.append(guest.host)
        guest.host = destination

    def all_support(self, capability: str) -> bool:
        return all(capability in h.supports for h in self.hosts.values())
