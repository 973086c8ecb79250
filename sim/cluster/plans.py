"""What a plan migrates, as steps: a batch of moves the scheduler runs (and waits for), or a
host's upgrade.

Placement rule (``evacuate``, and a rolling upgrade's drain): each guest, in guest order, goes to
the host with the least committed memory (its guests' plus those promised to it by moves not yet
done) among the hosts not being emptied that have room for it, preferring the source's rack; ties
go to the host listed first. A guest no host has room for gets a move with no destination, which
the run reports as a failed migration ("placement: ...") and leaves where it is.

A rolling upgrade takes ``plan.hosts`` (default: every host, in cluster order) one at a time:
drain the host (its guests placed as above), upgrade it (``to_version`` / ``to_supports``, taking
``upgrade_time``) if it is empty, else skip the upgrade (a guest that could not leave stays, and
the host keeps its QEMU), then move the guests that left back to it. Steps are made lazily, so a
step sees where the previous ones left the guests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .inventory import Cluster, Guest
from .spec import PlanSpec


@dataclass(frozen=True)
class Move:
    """Migrate ``guest`` to ``destination`` (None: no host had room)."""

    guest: Guest
    destination: str | None
    step: str


@dataclass(frozen=True)
class Step:
    """A batch of moves to run, or (``upgrade`` set) a host to upgrade."""

    label: str
    moves: tuple[Move, ...] = ()
    upgrade: str | None = None


def place(cluster: Cluster, guest: Guest, exclude: set[str]) -> str | None:
    """The placement rule (module docstring); reserves the guest's memory on the host chosen."""
    rack = cluster.hosts[guest.host].rack
    best: tuple[int, int, int] | None = None
    chosen = None
    for host in cluster.hosts.values():
        if host.name in exclude or cluster.free(host.name) < guest.memory:
            continue
        key = (host.rack != rack, cluster.load[host.name] + cluster.reserved[host.name],
               host.index)
        if best is None or key < best:
            best, chosen = key, host.name
    if chosen is not None:
        cluster.reserved[chosen] += guest.memory
    return chosen


def evacuate(cluster: Cluster, hosts: list[str], step: str) -> tuple[Move, ...]:
    """Moves that empty ``hosts``."""
    leaving = set(hosts)
    return tuple(Move(g, place(cluster, g, leaving), step)
                 for h in hosts for g in cluster.on(h))


def steps(plan: PlanSpec, cluster: Cluster) -> Iterator[Step]:
    """The plan's steps, each made when the previous one is done."""
    if plan.kind == "evacuate":
        yield Step("evacuate", evacuate(cluster, list(plan.hosts), "evacuate"))
    elif plan.kind == "moves":
        moves = []
        for m in plan.moves:
            guest = cluster.guests[m.vm]
            if guest.host != m.host:  # already there: nothing to do
                cluster.reserved[m.host] += guest.memory
                moves.append(Move(guest, m.host, "moves"))
        yield Step("moves", tuple(moves))
    else:
        for host in plan.hosts or tuple(cluster.hosts):
            drain = evacuate(cluster, [host], f"drain {host}")
            yield Step(f"drain {host}", drain)
            if cluster.on(host):
                yield Step(f"keep {host}")  # not empty: no upgrade
            else:
                yield Step(f"upgrade {host}", upgrade=host)
            back = []
            for move in drain:
                if move.guest.host != host:
                    cluster.reserved[host] += move.guest.memory
                    back.append(Move(move.guest, host, f"return {host}"))
            yield Step(f"return {host}", tuple(back))
