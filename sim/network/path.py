"""A view of one path through a :class:`~sim.network.Network` with the interface of a
:class:`sim.link.Link`, so a migration can be given it instead of a link, with no engine change.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .links import value_at

if TYPE_CHECKING:
    from .network import Network


class PathLink:
    """One path (a sequence of link names) through a network, as the engine sees a link.

    - ``latency_s``: the sum of the path's one-way latencies;
    - ``join(flow, cap)`` / ``leave(flow)`` / ``set_cap(flow, cap)``: the flow sends over this
      path (the network re-solves its max-min shares on the next read);
    - ``share(flow, t)``: the flow's max-min fair rate over the whole network (bytes/s); for a
      flow that is not sending, the path's narrowest capacity (as a lone :class:`~sim.link.Link`
      flow gets the whole link);
    - ``next_change_after(t)``: the first capacity or cross-traffic change on a link of the path
      strictly after ``t`` (``inf`` if none): chunks end there;
    - ``rate_at(t)``: the path's narrowest capacity at ``t``;
    - ``flows``: how many flows joined through this view are sending.

    Model note: the engine reads a share when a chunk starts (chunks last at most 50 ms), so a
    flow joining or leaving anywhere, or a change on a link off this path that moves the
    max-min solution, changes this flow's rate from its next chunk on, not mid-chunk.
    """

    def __init__(self, network: Network, path: Sequence[str]) -> None:
        self.network = network
        self.path = tuple(path)
        idx = network.indices(self.path)
        self.latency_s = network.latency_s(self.path)
        table = network.table
        points = sorted({0.0, *(t for i in idx for steps in (table.capacity[i], table.cross[i])
                                for t in steps[0])})
        # Plain lists and bisect, as in Link: every chunk asks.
        self._changes = points[1:]
        self._at = points
        self._rate = [min(value_at(table.capacity[i][0], table.capacity[i][1], t) for i in idx)
                      for t in points]
        self._mine: set[object] = set()

    def rate_at(self, t: float) -> float:
        """The path's narrowest capacity in bytes/s at ``t``."""
        return self._rate[max(bisect.bisect_right(self._at, t) - 1, 0)]

    def next_change_after(self, t: float) -> float:
        i = bisect.bisect_right(self._changes, t)
        return self._changes[i] if i < len(self._changes) else math.inf

    def join(self, flow: object, cap: float = math.inf) -> None:
        self.network.join(flow, self.path, cap)
        self._mine.add(flow)

    def set_cap(self, flow: object, cap: float) -> None:
        if flow in self._mine:
            self.network.set_cap(flow, cap)

    def leave(self, flow: object) -> None:
        if flow in self._mine:
            self._mine.discard(flow)
            self.network.leave(flow)

    @property
    def flows(self) -> int:
        return sum(1 for flow in self._mine if self.network.has(flow))

    def share(self, flow: object, t: float) -> float:
        if flow not in self._mine or not self.network.has(flow):
            return self.rate_at(t)
        return self.network.share(flow, t)
