"""The network between source and destination: a rate that may change on a schedule or by a
fault (down, degraded), a latency, and fair sharing between the migrations that use it.

QEMU's ``max-bandwidth`` is not the link: it is a per-100 ms byte budget the migration thread
imposes on itself (REF §1.2), applied in :mod:`sim.engine.precopy`. The link only says how fast bytes
leave once the thread sends them.

Sharing (fleet scenarios, DESIGN §3): every migration between its setup and its end is a *flow*.
A flow's rate is its max-min fair share of the link (water-filling): flows whose ``max-bandwidth``
is below an equal share get their cap, the rest split what is left equally. This is how TCP flows
with similar round-trip times settle on one bottleneck, to first order.

Model note: a flow reads its share when a chunk starts (chunks last at most 50 ms), so a flow
joining or leaving changes the others' rates from their next chunk on, not mid-chunk.
"""

from __future__ import annotations

import bisect
import math
from typing import Protocol

from .spec import LinkSpec


class Route(Protocol):
    """What the engine uses of a link: a :class:`Link`, or a path through a network
    (:class:`sim.network.PathLink`)."""

    latency_s: float

    def join(self, flow: object, cap: float = math.inf) -> None: ...

    def set_cap(self, flow: object, cap: float) -> None: ...

    def leave(self, flow: object) -> None: ...

    def share(self, flow: object, t: float) -> float: ...

    def next_change_after(self, t: float) -> float: ...

    def rate_at(self, t: float) -> float: ...

    @property
    def flows(self) -> int: ...


class Link:
    """Piecewise-constant bandwidth (bytes/s) over sim time, a one-way latency (s), and flows."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.latency_s = spec.latency
        # Piecewise-constant rate: the schedule, with link faults laid over it (a link_down is a
        # zero rate, a bandwidth_drop caps the rate, for their duration; 0 = for good).
        overlays = [(f.at, f.at + f.duration if f.duration > 0 else math.inf,
                     0.0 if f.kind == "link_down" else f.bandwidth)
                    for f in spec.faults if f.kind in ("link_down", "bandwidth_drop")]
        points = sorted({0.0, *(c.at for c in spec.schedule),
                         *(t for a, b, _ in overlays for t in (a, b) if math.isfinite(t))})
        changes = sorted(spec.schedule, key=lambda c: c.at)
        rates = []
        for t in points:
            base = spec.bandwidth
            for c in changes:
                if c.at <= t:
                    base = c.bandwidth
            for a, b, cap in overlays:
                if a <= t < b:
                    base = min(base, cap)
            rates.append(base)
        # Plain lists and bisect: every chunk of every guest asks, so these stay cheap.
        self._at = [float(t) for t in points]
        self._rate = [float(r) for r in rates]
        self._flows: dict[object, float] = {}  # flow -> its cap in bytes/s (inf: none)
        self._levels: dict[float, float] = {}  # link rate -> water level, for these flows

    def rate_at(self, t: float) -> float:
        """The whole link's bandwidth in bytes/s at sim time ``t``."""
        i = bisect.bisect_right(self._at, t) - 1
        return self._rate[max(i, 0)]

    def next_change_after(self, t: float) -> float:
        """The first schedule change strictly after ``t`` (``inf`` if none): chunks end there."""
        i = bisect.bisect_right(self._at, t)
        return self._at[i] if i < len(self._at) else math.inf

    # --- sharing -------------------------------------------------------------------------------

    def join(self, flow: object, cap: float = math.inf) -> None:
        """``flow`` starts using the link; ``cap`` is its own limit (bytes/s, inf for none)."""
        self._flows[flow] = cap if cap > 0 else math.inf
        self._levels.clear()

    def set_cap(self, flow: object, cap: float) -> None:
        if flow in self._flows:
            self._flows[flow] = cap if cap > 0 else math.inf
            self._levels.clear()

    def leave(self, flow: object) -> None:
        self._flows.pop(flow, None)
        self._levels.clear()

    @property
    def flows(self) -> int:
        return len(self._flows)

    def share(self, flow: object, t: float) -> float:
        """``flow``'s max-min fair share of the link at ``t`` in bytes/s (the whole link when it
        is alone or not a flow)."""
        total = self.rate_at(t)
        if flow not in self._flows or len(self._flows) == 1:
            return total
        level = self._levels.get(total)
        if level is None:
            level = self._levels[total] = self._water_level(total)
        return min(self._flows[flow], level)

    def _water_level(self, total: float) -> float:
        """The share of every flow capped above it (water-filling); solved once per set of
        flows and link rate, so a fleet's chunks do not re-sort the caps."""
        left, caps = total, sorted(self._flows.values())
        for i, cap in enumerate(caps):
            equal = left / (len(caps) - i)
            if cap >= equal:
                return equal  # everyone from here on is capped above the equal split
            left -= cap
        return math.inf  # every flow is held below its equal share by its own cap
