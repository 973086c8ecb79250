"""The migration scheduler: it orders a step's moves and starts each when the limits allow, as a
SimPy process.

Limits (``cluster.scheduler``; None: none): migrations running in the whole cluster
(``max_concurrent``, as KubeVirt's ``parallelMigrationsPerCluster``), leaving one host
(``max_outbound``, as Nova's ``max_concurrent_live_migrations`` and KubeVirt's
``parallelOutboundMigrationsPerNode``, and never more than the host's ``cores``: one core per
migration thread), arriving at one host (``max_inbound``) and crossing one link
(``max_per_link``).

Queue orders: ``fifo`` (plan order), ``smallest-first`` / ``largest-first`` (guest memory),
``least-dirty-first`` (the guest's nominal ``workload.writes_per_s``); ties in plan order. At
every start or end the scheduler walks the queue in that order and starts every move that fits
(first fit: a move that does not fit does not hold back smaller ones behind it, as Nova's
per-host semaphores and KubeVirt's per-node limits behave).

Retries: a failed attempt goes back in the queue after ``retry_backoff``, up to ``retries``
more times, to the same destination; the guest keeps running on its source meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from .inventory import Cluster
from .plans import Move
from .spec import SchedulerSpec


@dataclass
class Job:
    """One move through the queue: its attempts so far and where it was when queued."""

    move: Move
    index: int
    source: str
    links: tuple[str, ...]
    queued_at: float
    attempt: int = 0

    @property
    def destination(self) -> str:
        assert self.move.destination is not None
        return self.move.destination


#: starts one attempt of a job; the event fires with True (completed) or False (failed)
Launch = Callable[[Job], simpy.Event]
#: the names of the links of the path between two hosts
LinksOf = Callable[[str, str], tuple[str, ...]]
#: a queues row: t_s, host, outbound_queued, outbound_running, inbound_running
QueueRow = tuple[float, str, int, int, int]


def order_key(order: str) -> Callable[[Job], tuple[Any, ...]]:
    """The sort key of a queue order."""
    if order == "smallest-first":
        return lambda j: (j.move.guest.memory, j.index)
    if order == "largest-first":
        return lambda j: (-j.move.guest.memory, j.index)
    if order == "least-dirty-first":
        return lambda j: (j.move.guest.writes_per_s, j.index)
    return lambda j: (j.index,)


class Scheduler:
    """Runs steps of moves within the limits; keeps the counts the ``queues`` table shows."""

    def __init__(self, env: simpy.Environment, spec: SchedulerSpec, cluster: Cluster,
                 launch: Launch, links_of: LinksOf) -> None:
        self.env = env
        self.spec = spec
        self.cluster = cluster
        self.launch = launch
        self.links_of = links_of
        self.key = order_key(spec.order)
        self.outbound: Counter[str] = Counter()
        self.inbound: Counter[str] = Counter()
        self.per_link: Counter[str] = Counter()
        self.queued: Counter[str] = Counter()  # by source host
        self.running = 0
        self.jobs = 0
        self.queue_rows: list[QueueRow] = []
        self._pending: list[Job] = []
        self._waiting = 0  # failed attempts waiting out their backoff
        self._wake: simpy.Event = env.event()

    def run(self, moves: Sequence[Move]) -> Generator[simpy.Event, Any, None]:
        """Run ``moves`` (each with a destination) to their end, retries included."""
        now = self.env.now
        for move in moves:
            source = move.guest.host
            assert move.destination is not None
            job = Job(move, self.jobs, source, self.links_of(source, move.destination), now)
            self.jobs += 1
            self._pending.append(job)
            self.queued[source] += 1
        self._pending.sort(key=self.key)
        for host in sorted({m.guest.host for m in moves}):
            self._record(host)
        while self._pending or self.running or self._waiting:
            self._start_fitting()
            if not self.running and not self._waiting and self._pending:
                raise RuntimeError("cluster scheduler: a move can never start (limits of 0?)")
            self._wake = self.env.event()
            yield self._wake

    def fits(self, job: Job) -> bool:
        spec = self.spec
        host = self.cluster.hosts[job.source]
        outbound = min(spec.max_outbound or host.cores, host.cores)
        return ((spec.max_concurrent is None or self.running < spec.max_concurrent)
                and self.outbound[job.source] < outbound
                and (spec.max_inbound is None or self.inbound[job.destination] < spec.max_inbound)
                and (spec.max_per_link is None
                     or all(self.per_link[n] < spec.max_per_link for n in job.links)))

    def _start_fitting(self) -> None:
        kept = []
        for job in self._pending:
            if self.fits(job):
                self._start(job)
            else:
                kept.append(job)
        self._pending = kept

    def _start(self, job: Job) -> None:
        self.running += 1
        self.outbound[job.source] += 1
        self.inbound[job.destination] += 1
        self.per_link.update(job.links)
        self.queued[job.source] -= 1
        job.attempt += 1
        done = self.launch(job)
        done.callbacks.append(lambda event: self._ended(job, bool(event.value)))
        self._record(job.source, job.destination)

    def _ended(self, job: Job, completed: bool) -> None:
        self.running -= 1
        self.outbound[job.source] -= 1
        self.inbound[job.destination] -= 1
        self.per_link.subtract(job.links)
        if not completed and job.attempt <= self.spec.retries:
            self._waiting += 1
            self.env.process(self._retry(job))
        self._record(job.source, job.destination)
        self._poke()

    def _retry(self, job: Job) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.spec.retry_backoff)
        self._waiting -= 1
        job.queued_at = self.env.now
        self._pending.append(job)
        self._pending.sort(key=self.key)
        self.queued[job.source] += 1
        self._record(job.source)
        self._poke()

    def _poke(self) -> None:
        if not self._wake.triggered:
            self._wake.succeed()

    def _record(self, *hosts: str) -> None:
        now = float(self.env.now)
        for host in dict.fromkeys(hosts):
            self.queue_rows.append((now, host, self.queued[host], self.outbound[host],
                                    self.inbound[host]))
