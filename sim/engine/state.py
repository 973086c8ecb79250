"""What one migration has done so far, by name: status, passes, bytes, times, statistics.

:class:`MigrationState` is written by the engine only and read by everyone else: the runs row
(:mod:`sim.run`), ``query-migrate`` (:mod:`sim.endpoints`), the QMP events. A status change or a
new pass is recorded as an event *and* handed to the subscribers (the endpoints, which turn them
into QMP events), so the Recorder is a logbook, not an event bus.

Quantities kept by hand elsewhere before are derived here: ``sync_count`` is the number of passes
(each sync opens one), the pages pending after each sync are the passes' ``dirty_pages_at_sync``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..recorder import Recorder
from . import kernel

#: the states in which a migration is under way (capabilities cannot change, REF §6.1)
RUNNING = ("setup", "active", "device", "cancelling", "pre-switchover", "wait-unplug")
ENDED = ("completed", "failed", "cancelled")

#: subscriber(t_s, side, event, data): a MIGRATION or MIGRATION_PASS event of ``side``
Subscriber = Callable[[float, str, str, dict[str, Any]], None]


def passive(callback: Subscriber) -> Subscriber:
    """Mark a subscriber that does not act on the simulation at an event's time (it keeps its
    own books, or acts on this migration's own next step only): the fleet's coordinator
    (:mod:`sim.engine.cruise`) may then let other migrations run past a Python turn of this
    one before the turn itself. Unmarked subscribers (a controller) are assumed to act."""
    target: Any = getattr(callback, "__func__", callback)  # a bound method: its function
    target.acts_at_once = False
    return callback

_INDEX = {name: i for i, name in enumerate(kernel.COUNTERS)}


class PassCounters:
    """The kernel's counters of one pass (or a sum of passes), read and added by name."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = np.zeros(kernel.N_COUNTERS, np.int64) if array is None else array

    def __getitem__(self, name: str) -> int:
        return int(self.array[_INDEX[name]])

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.array[_INDEX[name]] += n

    def __iadd__(self, other: PassCounters) -> PassCounters:
        self.array += other.array
        return self


@dataclass
class Pass:
    """One sync interval: from a bitmap sync to the next (REF §1.5)."""

    number: int
    t_start: float
    dirty_pages_at_sync: int
    throttle_pct: float
    counters: PassCounters = field(default_factory=PassCounters)


@dataclass
class MigrationState:
    """The named state of one guest's migration (see the module docstring)."""

    recorder: Recorder
    page_size: int
    status: str = "none"
    dest_status: str = "none"
    failure_reason: str = ""
    source_error: str = ""
    t_migrate: float = 0.0
    setup_time: float = 0.0
    total_time: float = 0.0
    downtime: float = 0.0
    transferred: int = 0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    postcopy_bytes: int = 0
    #: bandwidth window statistics (REF §1.4), updated when a 100 ms window closes
    bandwidth: float = 0.0
    pages_per_second: float = 0.0
    threshold: float = 0.0
    expected_downtime: float = 0.0
    dirty_pages_rate: float = 0.0
    #: throttle in force (% of guest CPU, or of its writes under dirty-limit) and its cost
    throttle_pct: float = 0.0
    max_throttle_pct: float = 0.0
    guest_cpu_lost_s: float = 0.0
    #: post-copy after the switch: (remote faults, stall seconds, pages pushed, wire bytes,
    #: guest writes seen), and when each vCPU's stall on a remote fault ends
    postcopy_stats: np.ndarray = field(default_factory=lambda: np.zeros(5, np.float64))
    vcpu_stalled_until: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    #: per plug-in encoder in force: (records, wire bytes)
    plugin_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    passes: list[Pass] = field(default_factory=list)
    subscribers: list[Subscriber] = field(default_factory=list)

    def renew(self) -> None:
        """A new migration of the same guest (after a cancel or a failure): every field back to
        its start; the recorder and the subscribers stay."""
        fresh = MigrationState(self.recorder, self.page_size, subscribers=self.subscribers)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    # --- derived ------------------------------------------------------------------------------

    @property
    def sync_count(self) -> int:
        """QEMU's ``dirty-sync-count``: every sync opens a pass."""
        return len(self.passes)

    @property
    def pending_after_syncs(self) -> list[int]:
        return [p.dirty_pages_at_sync for p in self.passes]

    @property
    def dirty_bytes_last_sync(self) -> int:
        return self.passes[-1].dirty_pages_at_sync * self.page_size if self.passes else 0

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    def totals(self) -> PassCounters:
        """Counters over the whole migration: the sum over its passes."""
        total = PassCounters()
        for p in self.passes:
            total += p.counters
        return total

    @property
    def postcopy_faults(self) -> int:
        return int(self.postcopy_stats[0])

    @property
    def postcopy_stall_s(self) -> float:
        """vCPU-seconds the guest spent stalled on remote faults: per vCPU the union of its
        stall intervals, so at most ``vcpus`` x the post-copy phase's duration."""
        return float(self.postcopy_stats[1])

    def end_postcopy_stalls(self, t: float) -> None:
        """The post-copy phase ends at ``t``: no vCPU is stalled after it."""
        over = self.vcpu_stalled_until - t
        self.postcopy_stats[1] -= float(over[over > 0].sum())
        np.minimum(self.vcpu_stalled_until, t, out=self.vcpu_stalled_until)

    def xbzrle_stats(self, cache_size: int) -> dict[str, float]:
        """QEMU's ``xbzrle-cache`` statistics over the whole migration (REF §2.8), by the runs
        table's names. Model note: QEMU's rates are per period of at least 1 s."""
        c = self.totals()
        hits, xb_bytes, sent = c["xbzrle_pages"], c["xbzrle_bytes"], c["pages_sent"]
        return {
            "cache_size": cache_size,
            "bytes": xb_bytes,
            "pages": hits,
            "cache_miss": c["xbzrle_cache_miss"],
            "cache_miss_rate": (c["xbzrle_cache_miss"] / sent) if sent else 0.0,
            "encoding_rate": (hits * self.page_size / xb_bytes) if xb_bytes else 0.0,
            "overflow": c["xbzrle_overflow"],
        }

    # --- changes (the engine's) ---------------------------------------------------------------

    def set_status(self, status: str, t: float) -> None:
        self.status = status
        self._event(t, "source", "MIGRATION", status, {"status": status})

    def set_dest_status(self, status: str, t: float) -> None:
        self.dest_status = status
        self._event(t, "destination", "MIGRATION", status, {"status": status})

    def open_pass(self, t: float, dirty_pages: int) -> None:
        """A sync opened pass ``sync_count`` (after closing the one before)."""
        self.close_pass(t)
        self.passes.append(Pass(len(self.passes) + 1, t, dirty_pages, self.throttle_pct))
        self._event(t, "source", "MIGRATION_PASS", str(self.sync_count),
                    {"pass": self.sync_count})

    def close_pass(self, t: float) -> None:
        """The passes row of the pass in progress, as it stands at ``t``."""
        if not self.passes:
            return
        p = self.passes[-1]
        c = p.counters
        self.recorder.pass_row(**{
            "pass": p.number, "t_start_s": p.t_start, "t_end_s": t,
            "dirty_pages_at_sync": p.dirty_pages_at_sync,
            "pages_sent": c["pages_sent"], "bytes_sent": c["wire_bytes"],
            "zero_pages": c["zero_pages"], "xbzrle_pages": c["xbzrle_pages"],
            "xbzrle_records": c["xbzrle_records"], "normal_pages": c["normal_pages"],
            "throttle_pct": p.throttle_pct})

    def _event(self, t: float, side: str, event: str, detail: str, data: dict[str, Any]) -> None:
        self.recorder.event(t, side, event, detail)
        for subscriber in list(self.subscribers):
            subscriber(t, side, event, data)
