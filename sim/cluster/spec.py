"""The ``cluster:`` section as data: hosts in racks, the network between them, the guests placed
on the hosts, a plan of migrations and the scheduler that runs it.

Like :mod:`sim.spec`, these are frozen dataclasses read by the generic YAML conversion of
:mod:`sim.scenario` (field metadata gives units, bounds and choices); everything is in SI units.
A cluster's guests are instances of the scenario's guest kinds: each ``cluster.vms`` item (or each
generated one) names a ``vms:`` item as its ``guest`` (its memory, workload, migration settings);
without a ``vms:`` list every guest is the top-level ``vm``/``workload``/``migration``.

This module imports nothing from :mod:`sim.spec` (which holds the ``cluster`` field), so the
schema has no import cycle; the rules that tie the section to the rest of the scenario are in
:func:`check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sim import capabilities
from sim.units import GiB, format_time

#: the plans: evacuate hosts, explicit moves, a rolling upgrade
PLANS: tuple[str, ...] = ("evacuate", "moves", "rolling-upgrade")
#: the scheduler's queue orders
ORDERS: tuple[str, ...] = ("fifo", "smallest-first", "largest-first", "least-dirty-first")
#: operator policies: a negotiation mode per migration, or ``whole-cluster`` (XBZRLE only once
#: every host supports it, QEMU's own rules otherwise)
POLICIES: tuple[str, ...] = ("whole-cluster", "none", "qemu", "management", "inband")

_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One host: its rack, its QEMU (a version, or an explicit capability list, which wins), its
    NIC (default: ``topology.nic``), the cores its migration threads may use (at most that many
    outbound migrations at once) and the memory guests may take (for placement)."""

    name: str
    rack: str = "rack0"
    qemu_version: str | None = None
    supports: tuple[str, ...] | None = field(default=None,
                                             metadata={"registry": "capabilities"})
    nic: float | None = field(default=None, metadata={"unit": "rate", "gt": 0})
    cores: int = field(default=4, metadata={"ge": 1, "le": 4096})
    memory: int = field(default=256 * GiB, metadata={"unit": "size", "gt": 0})


@dataclass(frozen=True, slots=True)
class HostGroupSpec:
    """``count`` generated hosts, named ``name`` with ``{i}`` replaced by 0, 1, ...; spread over
    ``racks`` racks in contiguous blocks, rack ``k`` named ``rack`` with ``{r}`` replaced by k."""

    count: int = field(metadata={"ge": 1, "le": 100_000})
    name: str = "host{i}"
    racks: int = field(default=1, metadata={"ge": 1, "le": 10_000})
    rack: str = "rack{r}"
    qemu_version: str | None = None
    supports: tuple[str, ...] | None = field(default=None,
                                             metadata={"registry": "capabilities"})
    nic: float | None = field(default=None, metadata={"unit": "rate", "gt": 0})
    cores: int = field(default=4, metadata={"ge": 1, "le": 4096})
    memory: int = field(default=256 * GiB, metadata={"unit": "size", "gt": 0})


@dataclass(frozen=True, slots=True)
class TopologySpec:
    """A two-tier tree: each host's NIC (one link each way) to its rack's top-of-rack switch,
    each rack's uplink (one link each way) to one core. Latencies are one way, per link."""

    nic: float = field(default=10e9 / 8, metadata={"unit": "rate", "gt": 0})
    uplink: float = field(default=40e9 / 8, metadata={"unit": "rate", "gt": 0})
    core: float = field(default=400e9 / 8, metadata={"unit": "rate", "gt": 0})
    nic_latency: float = field(default=25e-6, metadata={"unit": "time", "ge": 0})
    uplink_latency: float = field(default=25e-6, metadata={"unit": "time", "ge": 0})
    core_latency: float = field(default=50e-6, metadata={"unit": "time", "ge": 0})


@dataclass(frozen=True, slots=True)
class RateChange:
    """From ``at`` on, the cross traffic runs at ``bandwidth``."""

    at: float = field(metadata={"unit": "time", "ge": 0})
    bandwidth: float = field(metadata={"unit": "rate", "ge": 0})


@dataclass(frozen=True, slots=True)
class CrossTrafficSpec:
    """Other traffic on one link (``h1.tx``, ``h1.rx``, ``rack0.up``, ``rack0.down``, ``core``):
    a constant ``bandwidth``, or a ``schedule`` of changes (0 before its first)."""

    link: str
    bandwidth: float = field(default=0.0, metadata={"unit": "rate", "ge": 0})
    schedule: tuple[RateChange, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterVmSpec:
    """One guest placed on ``host``; ``guest`` names its kind (a ``vms:`` item)."""

    name: str
    host: str
    guest: str | None = None


@dataclass(frozen=True, slots=True)
class GuestWeight:
    """A guest kind and its weight in a generated population."""

    guest: str
    weight: float = field(default=1.0, metadata={"gt": 0})


@dataclass(frozen=True, slots=True)
class VmGroupSpec:
    """``count`` generated guests named ``name`` with ``{i}`` replaced by 0, 1, ...: each draws
    its kind from ``guests`` (by weight) and its host uniformly from ``hosts`` (default: all),
    from an RNG seeded with ``seed``."""

    count: int = field(metadata={"ge": 1, "le": 1_000_000})
    name: str = "vm{i}"
    guests: tuple[GuestWeight, ...] = ()
    hosts: tuple[str, ...] = ()
    seed: int = field(default=0, metadata={"ge": 0, "le": 2**32 - 1})


@dataclass(frozen=True, slots=True)
class MoveSpec:
    """Move guest ``vm`` to host ``host``."""

    vm: str
    host: str


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """What to migrate. ``evacuate``: every guest off ``hosts``; ``moves``: the listed moves;
    ``rolling-upgrade``: ``hosts`` in order (default: all, in cluster order): drain, upgrade to
    ``to_version`` / ``to_supports`` (taking ``upgrade_time``), take the guests back."""

    kind: str = field(default="evacuate", metadata={"choices": PLANS})
    hosts: tuple[str, ...] = ()
    moves: tuple[MoveSpec, ...] = ()
    to_version: str | None = None
    to_supports: tuple[str, ...] | None = field(default=None,
                                                metadata={"registry": "capabilities"})
    upgrade_time: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    start: float = field(default=0.0, metadata={"unit": "time", "ge": 0})


@dataclass(frozen=True, slots=True)
class SchedulerSpec:
    """Limits on migrations running at once (None: no limit), the queue order, and retries.

    ``max_concurrent`` is the cluster's (KubeVirt's ``parallelMigrationsPerCluster``),
    ``max_outbound`` / ``max_inbound`` each host's (Nova's ``max_concurrent_live_migrations``,
    KubeVirt's ``parallelOutboundMigrationsPerNode``), ``max_per_link`` any link's."""

    max_concurrent: int | None = field(default=5, metadata={"ge": 1, "le": 1_000_000})
    max_outbound: int | None = field(default=2, metadata={"ge": 1, "le": 10_000})
    max_inbound: int | None = field(default=None, metadata={"ge": 1, "le": 10_000})
    max_per_link: int | None = field(default=None, metadata={"ge": 1, "le": 10_000})
    order: str = field(default="fifo", metadata={"choices": ORDERS})
    retries: int = field(default=0, metadata={"ge": 0, "le": 100})
    retry_backoff: float = field(default=10.0, metadata={"unit": "time", "ge": 0})


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Hosts, network, guests, plan, scheduler and the operator's policy (None: the scenario's
    ``negotiation`` mode for every migration)."""

    hosts: tuple[HostSpec, ...] = ()
    generate_hosts: tuple[HostGroupSpec, ...] = ()
    topology: TopologySpec = field(default_factory=TopologySpec)
    cross_traffic: tuple[CrossTrafficSpec, ...] = ()
    vms: tuple[ClusterVmSpec, ...] = ()
    generate_vms: tuple[VmGroupSpec, ...] = ()
    plan: PlanSpec = field(default_factory=PlanSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    policy: str | None = field(default=None, metadata={"choices": POLICIES})


# ---------------------------------------------------------------- checks across fields

#: fail(key path, problem, value as text) -> the error (as in sim.scenario)
Fail = Callable[[str, str, str], Exception]


def host_names(spec: ClusterSpec) -> list[str]:
    """Every host's name, listed hosts first, then each group's."""
    names = [h.name for h in spec.hosts]
    for group in spec.generate_hosts:
        names += [group.name.replace("{i}", str(i)) for i in range(group.count)]
    return names


def check(spec: ClusterSpec, guest_kinds: list[str], fail: Fail) -> None:
    """The rules that tie the section together: unique names, known hosts, guest kinds and
    links, valid versions. ``guest_kinds`` are the ``vms:`` names (empty: no ``vms:`` list)."""
    hosts = host_names(spec)
    if not hosts:
        raise fail("cluster.hosts", "a cluster needs at least one host (hosts or "
                   "generate_hosts)", "none")
    seen: set[str] = set()
    for i, name in enumerate(hosts):
        if name in seen:
            raise fail(_host_key(spec, i), "host names must be unique", repr(name))
        if not _NAME.match(name):
            raise fail(_host_key(spec, i), "expected a name of letters, digits and _.:-",
                       repr(name))
        seen.add(name)
    for i, g in enumerate(spec.generate_hosts):
        if "{i}" not in g.name and g.count > 1:
            raise fail(f"cluster.generate_hosts[{i}].name", "must contain {i} when count > 1",
                       repr(g.name))
        if g.racks > 1 and "{r}" not in g.rack:
            raise fail(f"cluster.generate_hosts[{i}].rack", "must contain {r} when racks > 1",
                       repr(g.rack))
    versions = [(f"cluster.hosts[{i}].qemu_version", h.qemu_version)
                for i, h in enumerate(spec.hosts)]
    versions += [(f"cluster.generate_hosts[{i}].qemu_version", g.qemu_version)
                 for i, g in enumerate(spec.generate_hosts)]
    versions.append(("cluster.plan.to_version", spec.plan.to_version))
    for key, version in versions:
        if version is not None and not _VERSION.match(version):
            raise fail(key, "expected a QEMU version such as '7.2'", repr(version))
    guests = _check_vms(spec, guest_kinds, seen, fail)
    _check_plan(spec, seen, guests, fail)
    links = {"core"} | {f"{h}.{d}" for h in seen for d in ("tx", "rx")}
    links |= {f"{r}.{d}" for r in racks(spec) for d in ("up", "down")}
    for i, cross in enumerate(spec.cross_traffic):
        if cross.link not in links:
            raise fail(f"cluster.cross_traffic[{i}].link", "no such link (host.tx, host.rx, "
                       "rack.up, rack.down or core)", repr(cross.link))
        previous = -1.0
        for j, change in enumerate(cross.schedule):
            if change.at <= previous:
                raise fail(f"cluster.cross_traffic[{i}].schedule[{j}].at",
                           "must be later than the previous change",
                           format_time(change.at, exact=True))
            previous = change.at


def racks(spec: ClusterSpec) -> list[str]:
    """Every rack's name, in order of first appearance."""
    names = dict.fromkeys(h.rack for h in spec.hosts)
    for g in spec.generate_hosts:
        names.update(dict.fromkeys(g.rack.replace("{r}", str(k)) for k in range(g.racks)))
    return list(names)


def _host_key(spec: ClusterSpec, i: int) -> str:
    if i < len(spec.hosts):
        return f"cluster.hosts[{i}].name"
    i -= len(spec.hosts)
    for j, g in enumerate(spec.generate_hosts):
        if i < g.count:
            return f"cluster.generate_hosts[{j}].name"
        i -= g.count
    return "cluster.hosts"  # pragma: no cover - i is always a host's index


def _check_kind(kind: str | None, guest_kinds: list[str], key: str, fail: Fail) -> None:
    if kind is None:
        if guest_kinds:
            raise fail(key, f"name a guest kind of vms: ({', '.join(guest_kinds)})", "none")
        return
    if kind not in guest_kinds:
        raise fail(key, "no guest kind of that name in vms: "
                   + (", ".join(guest_kinds) or "(this scenario has no vms: list)"), repr(kind))


def _check_vms(spec: ClusterSpec, guest_kinds: list[str], hosts: set[str],
               fail: Fail) -> set[str]:
    names: set[str] = set()
    for i, vm in enumerate(spec.vms):
        if vm.name in names:
            raise fail(f"cluster.vms[{i}].name", "guest names must be unique", repr(vm.name))
        names.add(vm.name)
        if vm.host not in hosts:
            raise fail(f"cluster.vms[{i}].host", "no host of that name", repr(vm.host))
        _check_kind(vm.guest, guest_kinds, f"cluster.vms[{i}].guest", fail)
    for i, g in enumerate(spec.generate_vms):
        key = f"cluster.generate_vms[{i}]"
        if "{i}" not in g.name and g.count > 1:
            raise fail(f"{key}.name", "must contain {i} when count > 1", repr(g.name))
        generated = {g.name.replace("{i}", str(k)) for k in range(g.count)}
        clash = sorted(generated & names)
        if clash:
            raise fail(f"{key}.name", "gives a name another guest has", repr(clash[0]))
        names |= generated
        if not g.guests and guest_kinds:
            raise fail(f"{key}.guests", "list the guest kinds to draw from", "none")
        for j, w in enumerate(g.guests):
            _check_kind(w.guest, guest_kinds, f"{key}.guests[{j}].guest", fail)
        for j, h in enumerate(g.hosts):
            if h not in hosts:
                raise fail(f"{key}.hosts[{j}]", "no host of that name", repr(h))
    if not names:
        raise fail("cluster.vms", "a cluster needs guests (vms or generate_vms)", "none")
    return names


def _check_plan(spec: ClusterSpec, hosts: set[str], guests: set[str], fail: Fail) -> None:
    plan = spec.plan
    for i, h in enumerate(plan.hosts):
        if h not in hosts:
            raise fail(f"cluster.plan.hosts[{i}]", "no host of that name", repr(h))
    if plan.kind == "evacuate" and not plan.hosts:
        raise fail("cluster.plan.hosts", "evacuate needs the hosts to empty", "none")
    if plan.kind == "evacuate" and set(plan.hosts) >= hosts:
        raise fail("cluster.plan.hosts", "evacuating every host leaves nowhere to go",
                   ", ".join(plan.hosts))
    if plan.kind == "moves":
        if not plan.moves:
            raise fail("cluster.plan.moves", "a moves plan needs its moves", "none")
        moved: set[str] = set()
        for i, move in enumerate(plan.moves):
            if move.vm in moved:
                raise fail(f"cluster.plan.moves[{i}].vm", "moves this guest a second time "
                           "(one move per guest)", repr(move.vm))
            moved.add(move.vm)
            if move.vm not in guests:
                raise fail(f"cluster.plan.moves[{i}].vm", "no guest of that name", repr(move.vm))
            if move.host not in hosts:
                raise fail(f"cluster.plan.moves[{i}].host", "no host of that name",
                           repr(move.host))
    if plan.kind == "rolling-upgrade":
        if plan.to_version is None and plan.to_supports is None:
            raise fail("cluster.plan.to_version", "a rolling upgrade needs to_version or "
                       "to_supports", "none")
        if len(hosts) < 2:
            raise fail("cluster.plan.kind", "a rolling upgrade needs two hosts or more",
                       str(len(hosts)))


def supports_of(version: str | None, supports: tuple[str, ...] | None) -> frozenset[str]:
    """What a host's QEMU supports: its explicit list, else its version's."""
    return frozenset(capabilities.supported_by(version, supports))
