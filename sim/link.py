"""The network between source and destination: a rate that may change on a schedule or by a
fault (down, degraded), a latency, and fair sharing between the migrations that use it.

QEMU's ``max-bandwidth`` is not the link: it is a per-100 ms byte budget the migration thread
imposes on itself (REF §1.2), applied in :mod:`sim.engine.precopy`. The link only says how fast bytes
leave once the thread sends them.

Sharing (fleet scenarios, DESIGN §3): every migration between its setup and its end is a *flow*.
A flow's rate is its max-min fair share of the link (water-filling): flows whose ``max-bandwidth``
is below an equal share get their cap, the rest split what is left equally. This is how TCP flows
with similar round-trip times settle on one bottleneck, to first order. The link is the one-link
case of a :class:`sim.network.Network` (clusters share paths of several links the same way);
:class:`Route` is what the engine uses of either.

Model note: a flow reads its share when a chunk starts (chunks last at most 50 ms), so a flow
joining or leaving changes the others' rates from their next chunk on, not mid-chunk.
"""

from __future__ import annotations

import math
from typing import Protocol

from .network import Network, PathLink
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


class Link(PathLink):
    """The scenario's link: the one-link case of a :class:`~sim.network.Network`, with the
    schedule and the link faults as its capacity over time, a one-way latency (s), and flows."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
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
            rates.append(float(base))
        network = Network()
        network.add_link("link", rates[0], spec.latency, "link",
                         schedule=list(zip(points[1:], rates[1:], strict=True)))
        super().__init__(network, ["link"])
