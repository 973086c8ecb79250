"""The links of a network: capacities and cross traffic over time, as arrays by link index.

Each link has a base capacity (bytes/s) with an optional schedule of changes ``(at_s, rate)``,
and cross traffic: a demand (bytes/s) that is constant or a schedule ``(at_s, rate)`` (zero
before its first change). Both are piecewise constant; :meth:`LinkTable.segment` numbers the
intervals between all changes of all links, so a solve can be cached per interval.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Schedule = Sequence[tuple[float, float]]


def _steps(base: float, changes: Schedule) -> tuple[list[float], list[float]]:
    """``(times, rates)`` of a piecewise-constant rate: ``base`` from 0, then each change."""
    times, rates = [0.0], [float(base)]
    for at, rate in sorted(changes, key=lambda c: c[0]):
        if not (math.isfinite(at) and at >= 0):
            raise ValueError(f"a change time must be finite and >= 0 (got {at})")
        if not 0 <= rate < math.inf:
            raise ValueError(f"a rate must be finite and >= 0 (got {rate})")
        if at == times[-1]:
            rates[-1] = float(rate)
        else:
            times.append(float(at))
            rates.append(float(rate))
    return times, rates


def value_at(times: list[float], rates: list[float], t: float) -> float:
    """The piecewise-constant value at ``t`` (the first value before the first time)."""
    return rates[max(bisect.bisect_right(times, t) - 1, 0)]


@dataclass
class LinkTable:
    """Every link's name, tier, latency, capacity steps and cross-traffic steps, by index."""

    names: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    capacity: list[tuple[list[float], list[float]]] = field(default_factory=list)
    cross: list[tuple[list[float], list[float]]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    _changes: list[float] | None = field(default=None, init=False, repr=False)
    _cap_scheduled: list[int] = field(default_factory=list, init=False, repr=False)
    _cross_scheduled: list[int] = field(default_factory=list, init=False, repr=False)
    _segment_cache: tuple[int, np.ndarray, np.ndarray] | None = field(default=None, init=False,
                                                                       repr=False)

    def add(self, name: str, capacity: float, schedule: Schedule, latency_s: float, tier: str,
            cross: float | Schedule) -> None:
        if name in self.index:
            raise ValueError(f"link {name!r} is defined twice")
        if not (0 <= capacity < math.inf and 0 <= latency_s < math.inf):
            raise ValueError(f"link {name!r}: capacity and latency must be finite and >= 0 "
                             "(leave an unlimited link out of the paths)")
        capacity_steps = _steps(capacity, schedule)
        if isinstance(cross, (int, float)):
            if not 0 <= cross < math.inf:
                raise ValueError(f"link {name!r}: cross traffic must be finite and >= 0")
            cross_steps = _steps(float(cross), ())
        else:
            cross_steps = _steps(0.0, cross)
        if len(capacity_steps[0]) > 1:
            self._cap_scheduled.append(len(self.names))
        if len(cross_steps[0]) > 1:
            self._cross_scheduled.append(len(self.names))
        self.index[name] = len(self.names)
        self.names.append(name)
        self.tiers.append(tier)
        self.latency_s.append(float(latency_s))
        self.capacity.append(capacity_steps)
        self.cross.append(cross_steps)
        self._changes = None
        self._segment_cache = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def changes(self) -> list[float]:
        """Every time (s, after 0) at which some link's capacity or cross traffic changes."""
        if self._changes is None:
            self._changes = sorted({t for steps in (*self.capacity, *self.cross)
                                    for t in steps[0][1:]})
        return self._changes

    def segment(self, t: float) -> int:
        """The number of the interval between changes that ``t`` lies in (0 before any)."""
        return bisect.bisect_right(self.changes, t)

    def vectors(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``(capacity, cross)`` of every link at ``t``, bytes/s (cached per segment; only the
        links with a schedule are looked up again)."""
        seg = self.segment(t)
        cached = self._segment_cache
        if cached is not None and cached[0] == seg:
            return cached[1], cached[2]
        if cached is None:
            cap = np.array([steps[1][0] for steps in self.capacity], dtype=float)
            cross = np.array([steps[1][0] for steps in self.cross], dtype=float)
        else:
            cap, cross = cached[1].copy(), cached[2].copy()  # solutions keep their vectors
        for values, table, scheduled in ((cap, self.capacity, self._cap_scheduled),
                                         (cross, self.cross, self._cross_scheduled)):
            for i in scheduled:
                values[i] = value_at(table[i][0], table[i][1], t)
        self._segment_cache = (seg, cap, cross)
        return cap, cross
