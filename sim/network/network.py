"""A network of named links shared max-min fairly by flows, each over a path of links.

See :mod:`sim.network` for the model and the API in brief.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .links import LinkTable, Schedule
from .solve import Flow, Solution, solve
from .usage import bytes_carried, replay_links


class Network:
    """Named links (capacity, latency, tier, cross traffic) and the flows over paths of them.

    ``clock`` (e.g. ``lambda: env.now``) stamps each join, leave and cap change for the
    utilisation table; without one, a change is stamped with the latest time a share was read.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.table = LinkTable()
        self.clock = clock
        self.version = 0  #: bumped by every join, leave and cap change
        self._flows: dict[object, Flow] = {}
        self._solution: tuple[tuple[int, int], Solution] | None = None
        self._now = 0.0
        self._serial: dict[object, int] = {}  # flow -> its number in the log
        #: (t_s, flow number, path or None for a leave, cap): every change of the set of flows,
        #: in order. Flows are numbered (from 0, in order of joining), so the log keeps no
        #: finished migration alive.
        self.log: list[tuple[float, int, np.ndarray | None, float]] = []
        self._joined = 0

    # --- links ---------------------------------------------------------------------------------

    def add_link(self, name: str, capacity: float, latency_s: float = 0.0, tier: str = "",
                 cross: float | Schedule = 0.0, schedule: Schedule = ()) -> None:
        """A link of ``capacity`` bytes/s (changed at each ``(at_s, rate)`` of ``schedule``), a
        one-way latency, a free-text tier (``nic``, ``tor``, ``core``...) and cross traffic:
        a constant demand in bytes/s or a schedule ``(at_s, rate)`` (zero before its first)."""
        self.table.add(name, capacity, schedule, latency_s, tier, cross)
        self._solution = None

    @property
    def link_names(self) -> list[str]:
        return list(self.table.names)

    def tier(self, link: str) -> str:
        return self.table.tiers[self.table.index[link]]

    def latency_s(self, path: Iterable[str]) -> float:
        """The one-way latency of a path: the sum of its links' (s)."""
        return sum(self.table.latency_s[self.table.index[name]] for name in path)

    def capacity_at(self, link: str, t: float) -> float:
        return float(self.table.vectors(t)[0][self.table.index[link]])

    def cross_at(self, link: str, t: float) -> float:
        """The cross traffic's demand on ``link`` at ``t`` (bytes/s)."""
        return float(self.table.vectors(t)[1][self.table.index[link]])

    def indices(self, path: Sequence[str]) -> np.ndarray:
        """The link indices of a path; an unknown link name is a ``KeyError`` naming it."""
        missing = [name for name in path if name not in self.table.index]
        if missing:
            raise KeyError(f"no link named {missing[0]!r} in the network")
        if not path:
            raise ValueError("a path needs at least one link")
        return np.array([self.table.index[name] for name in path], dtype=np.int64)

    # --- flows ---------------------------------------------------------------------------------

    def _stamp(self) -> float:
        return float(self.clock()) if self.clock is not None else self._now

    def join(self, flow: object, path: Sequence[str], cap: float = math.inf) -> None:
        """``flow`` starts sending over ``path`` (link names), ``cap`` bytes/s at most (<= 0 or
        ``inf``: none)."""
        if flow in self._flows:
            self.leave(flow)
        idx = np.unique(self.indices(path))  # a link crossed twice is still one share
        cap = cap if cap > 0 else math.inf
        self._flows[flow] = Flow(idx, cap)
        self._serial[flow] = self._joined
        self._joined += 1
        self._changed()
        self.log.append((self._stamp(), self._serial[flow], idx, cap))

    def set_cap(self, flow: object, cap: float) -> None:
        if flow in self._flows:
            cap = cap if cap > 0 else math.inf
            self._flows[flow].cap = cap
            self._changed()
            self.log.append((self._stamp(), self._serial[flow], self._flows[flow].path, cap))

    def leave(self, flow: object) -> None:
        if self._flows.pop(flow, None) is not None:
            self._changed()
            self.log.append((self._stamp(), self._serial.pop(flow), None, 0.0))

    def _changed(self) -> None:
        self.version += 1
        self._solution = None  # and holds no flow that has left

    def has(self, flow: object) -> bool:
        return flow in self._flows

    @property
    def flows(self) -> int:
        """How many flows are sending now."""
        return len(self._flows)

    def solution(self, t: float, stamp: bool = True) -> Solution:
        """The max-min solution at ``t``: solved once per set of flows and interval between
        link changes (keyed on :attr:`version` and the interval), so reading shares is cheap.
        Without a clock, a read at ``t`` stamps the joins and leaves after it (``stamp``
        False: a look ahead that must not)."""
        if stamp:
            self._now = max(self._now, t)
        key = (self.version, self.table.segment(t))
        cached = self._solution
        if cached is not None and cached[0] == key:
            return cached[1]
        sol = solve(self.table, self._flows, t)
        self._solution = (key, sol)
        return sol

    def share(self, flow: object, t: float) -> float:
        """``flow``'s max-min fair rate at ``t`` in bytes/s (``KeyError`` if it is not sending)."""
        return self.solution(t).share[flow]

    # --- utilisation -----------------------------------------------------------------------------

    def links_table(self, until: float | None = None) -> pd.DataFrame:
        """Link utilisation over time, one row per link and change (piecewise constant from
        ``t_s`` to the link's next row): ``t_s, link, tier, flows, used_bytes_per_s,
        cross_bytes_per_s, capacity_bytes_per_s``. ``used`` is the flows' fluid rates plus the
        cross traffic's. Rebuilt from the log of joins and leaves up to ``until`` (default: now).
        """
        return replay_links(self.table, self.log, self._until(until))

    def bytes_carried(self, until: float | None = None,
                      links: pd.DataFrame | None = None) -> pd.DataFrame:
        """Bytes each link has carried from 0 to ``until`` (default: now), integrating
        :meth:`links_table` (or ``links``, that table already built): ``link, tier, flow_bytes,
        cross_bytes``. A migration's bytes count once on every link it crosses."""
        until = self._until(until)
        return bytes_carried(self.links_table(until) if links is None else links, until)

    def _until(self, until: float | None) -> float:
        if until is not None:
            return float(until)
        last = self.log[-1][0] if self.log else 0.0
        return max(self._stamp(), last)
