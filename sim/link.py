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

import math

import numpy as np

from .spec import LinkSpec


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
        self._at = np.array(points, np.float64)
        self._rate = np.array(rates, np.float64)
        self._flows: dict[object, float] = {}  # flow -> its cap in bytes/s (inf: none)

    def rate_at(self, t: float) -> float:
        """The whole link's bandwidth in bytes/s at sim time ``t``."""
        i = int(np.searchsorted(self._at, t, side="right")) - 1
        return float(self._rate[max(i, 0)])

    def next_change_after(self, t: float) -> float:
        """The first schedule change strictly after ``t`` (``inf`` if none): chunks end there."""
        i = int(np.searchsorted(self._at, t, side="right"))
        return float(self._at[i]) if i < self._at.size else float("inf")

    # --- sharing -------------------------------------------------------------------------------

    def join(self, flow: object, cap: float = math.inf) -> None:
        """``flow`` starts using the link; ``cap`` is its own limit (bytes/s, inf for none)."""
        self._flows[flow] = cap if cap > 0 else math.inf

    def set_cap(self, flow: object, cap: float) -> None:
        if flow in self._flows:
            self._flows[flow] = cap if cap > 0 else math.inf

    def leave(self, flow: object) -> None:
        self._flows.pop(flow, None)

    @property
    def flows(self) -> int:
        return len(self._flows)

    def share(self, flow: object, t: float) -> float:
        """``flow``'s max-min fair share of the link at ``t`` in bytes/s (the whole link when it
        is alone or not a flow)."""
        total = self.rate_at(t)
        if flow not in self._flows or len(self._flows) == 1:
            return total
        left, others = total, sorted(self._flows.values())
        for i, cap in enumerate(others):
            equal = left / (len(others) - i)
            if cap >= equal:
                # Everyone from here on is capped above the equal split: they all get it.
                return min(self._flows[flow], equal)
            left -= cap
        return self._flows[flow]
