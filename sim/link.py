"""The network between source and destination: a rate that may change on a schedule, and a latency.

QEMU's ``max-bandwidth`` is not the link: it is a per-100 ms byte budget the migration thread
imposes on itself (REF §1.2), applied in :mod:`sim.precopy`. The link only says how fast bytes
leave once the thread sends them.
"""

from __future__ import annotations

import numpy as np

from .spec import LinkSpec


class Link:
    """Piecewise-constant bandwidth (bytes/s) over sim time, plus a one-way latency (s)."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.latency_s = spec.latency
        changes = sorted(spec.schedule, key=lambda c: c.at)
        self._at = np.array([0.0] + [c.at for c in changes if c.at > 0], np.float64)
        first = spec.bandwidth
        for c in changes:
            if c.at <= 0:
                first = c.bandwidth
        self._rate = np.array([first] + [c.bandwidth for c in changes if c.at > 0], np.float64)

    def rate_at(self, t: float) -> float:
        """Bandwidth in bytes/s at sim time ``t``."""
        i = int(np.searchsorted(self._at, t, side="right")) - 1
        return float(self._rate[max(i, 0)])

    def next_change_after(self, t: float) -> float:
        """The first schedule change strictly after ``t`` (``inf`` if none): chunks end there."""
        i = int(np.searchsorted(self._at, t, side="right"))
        return float(self._at[i]) if i < self._at.size else float("inf")
