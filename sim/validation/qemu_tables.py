"""Turn what QMP showed during a real migration into migsim's four tables (DESIGN §6).

Kept apart from the process handling in :mod:`sim.validation.qemu` so it can be tested without
QEMU: the input is plain data (``query-migrate`` replies with the host time they were taken at,
events, issued commands), the output a :class:`sim.result.Result` with the simulator's column
names. Columns QMP does not show are NaN (numbers) or empty (strings), never guessed:

* ``samples.threshold_bytes``: QEMU does not report its switchover threshold.
* ``passes`` counters are differences of ``query-migrate`` snapshots taken when each
  MIGRATION_PASS event arrived (about a millisecond after the sync); the split of the last passes,
  which happen within milliseconds of completion, is therefore approximate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sim.recorder import (
    EVENTS_COLUMNS,
    PASSES_COLUMNS,
    RUNS_COLUMNS,
    SAMPLES_COLUMNS,
    event_detail,
)
from sim.recorder import (
    runs_row as build_runs_row,
)
from sim.result import Result

NAN = math.nan
PAGE = 4096
FINAL_STATES = ("completed", "failed", "cancelled")


@dataclass
class Observed:
    """Everything the harness saw of one migration. Times are host epoch seconds (QMP event
    timestamps are host wall-clock time too); the tables count from ``t0``, the `migrate`
    command, as the simulator counts from ``migration.start``."""

    run_id: str
    t0: float = 0.0
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    passes: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)  # (t, pass, info)
    events: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, endpoint, ev, detail
    final: dict[str, Any] = field(default_factory=dict)  # query-migrate after the end
    end_t: float = NAN  # when the final state was seen
    capabilities: tuple[str, ...] = ()
    failure_reason: str = ""
    memory_match: bool | None = None  # None: not compared (the migration did not complete)
    pages_differing: int = 0

    def command(self, t: float, endpoint: str, name: str, args: Mapping[str, Any] | None) -> None:
        self.events.append((t, endpoint, name, json.dumps(dict(args or {}), sort_keys=True)))


def _ram(info: Mapping[str, Any]) -> Mapping[str, Any]:
    ram = info.get("ram")
    return ram if isinstance(ram, Mapping) else {}


def _pages(info: Mapping[str, Any]) -> float:
    ram, xb = _ram(info), info.get("xbzrle-cache") or {}
    if not ram:
        return NAN
    return float(ram.get("normal", 0) + ram.get("duplicate", 0) + xb.get("pages", 0))


def last_stats(obs: Observed) -> dict[str, Any]:
    """The last ``query-migrate`` reply that still carries the counters (a cancelled migration's
    final reply has only its status)."""
    if _ram(obs.final):
        return obs.final
    for _, info in reversed(obs.samples):
        if _ram(info):
            return info
    return {}


def _frame(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows in the simulator's column order; a missing value (None) becomes NaN."""
    return pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=list(columns))


def downtime_s(stats: Mapping[str, Any]) -> float:
    """QEMU's ``downtime`` of a completed migration, in seconds.

    QEMU 7.2 computes a post-copy migration's downtime in ``postcopy_start`` and, in
    ``migration_calculate_complete``, takes a downtime of 0 for "not set yet" and replaces it
    with ``end_time - downtime_start``; ``downtime_start`` is set only when a pre-copy migration
    completes, so a post-copy switchover that rounded to 0 ms is reported as the host's
    monotonic clock (the seconds since it booted: 2 472 s in one run here). Later QEMU replaced
    that code (``migration_downtime_start``/``_end``). A downtime above the total time is that
    case, and the 0 ms QEMU measured is what it is."""
    downtime = float(stats["downtime"])
    total = stats.get("total-time")
    if total is not None and downtime > float(total):
        return 0.0
    return downtime / 1000


def runs_row(obs: Observed, scenario: str) -> dict[str, Any]:
    stats = last_stats(obs)
    ram, xb = _ram(stats), stats.get("xbzrle-cache") or {}
    status = str(obs.final.get("status", "failed"))
    completed = status == "completed"
    expected = [float(info["expected-downtime"]) for _, info in obs.samples
                if info.get("expected-downtime") is not None]
    total_ms = stats.get("total-time") if completed else None
    row: dict[str, Any] = {"run_id": obs.run_id, "scenario": scenario} | build_runs_row(
        seed=0, status=status,
        failure_reason=obs.failure_reason or str(obs.final.get("error-desc", "")),
        negotiation="qemu", capabilities=",".join(obs.capabilities),
        total_time_s=total_ms / 1000 if total_ms is not None else obs.end_t - obs.t0,
        setup_time_s=stats.get("setup-time", NAN) / 1000 if stats else NAN,
        downtime_s=downtime_s(stats) if completed and "downtime" in stats else NAN,
        expected_downtime_s=expected[-1] / 1000 if expected else NAN,
        transferred_bytes=ram.get("transferred"), precopy_bytes=ram.get("precopy-bytes"),
        downtime_bytes=ram.get("downtime-bytes"), normal_pages=ram.get("normal"),
        zero_pages=ram.get("duplicate"), xbzrle_pages=xb.get("pages", 0),
        xbzrle_bytes=xb.get("bytes", 0), xbzrle_cache_miss=xb.get("cache-miss", 0),
        xbzrle_cache_miss_rate=xb.get("cache-miss-rate", NAN),
        xbzrle_encoding_rate=xb.get("encoding-rate", NAN),
        xbzrle_overflow=xb.get("overflow", 0),
        dirty_sync_count=ram.get("dirty-sync-count"), mbps=ram.get("mbps"),
        max_throttle_pct=max([float(i.get("cpu-throttle-percentage", 0))
                              for _, i in obs.samples] or [0.0]),
        # QMP shows no guest CPU lost or stall time: those stay unknown (NaN).
        postcopy_faults=ram.get("postcopy-requests", 0),
        # A pre-copy failure or cancel leaves the source running with all its pages; after a
        # completion, pages that differ between the two sides' RAM would be lost.
        pages_lost=obs.pages_differing if completed else 0,
        **({} if obs.memory_match is None else {"memory_match": obs.memory_match}))
    return row


def passes_rows(obs: Observed) -> list[dict[str, Any]]:
    stats = last_stats(obs)
    rows = []
    snaps = sorted(obs.passes, key=lambda p: p[1])
    for i, (t, number, info) in enumerate(snaps):
        nxt = snaps[i + 1][2] if i + 1 < len(snaps) else stats
        t_end = snaps[i + 1][0] if i + 1 < len(snaps) else obs.end_t
        ram, ram_next = _ram(info), _ram(nxt)
        xb, xb_next = info.get("xbzrle-cache") or {}, nxt.get("xbzrle-cache") or {}

        def delta(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> float:
            return float(b[key] - a[key]) if key in a and key in b else NAN

        rows.append({
            "run_id": obs.run_id, "pass": number, "t_start_s": t - obs.t0,
            "t_end_s": t_end - obs.t0,
            "dirty_pages_at_sync": ram["remaining"] / PAGE if "remaining" in ram else NAN,
            "pages_sent": _pages(nxt) - _pages(info),
            "bytes_sent": delta(ram, ram_next, "transferred"),
            "zero_pages": delta(ram, ram_next, "duplicate"),
            "xbzrle_pages": delta(xb, xb_next, "pages") if xb_next else 0.0,
            "xbzrle_records": NAN,  # QMP counts hits, not the records that went out
            "normal_pages": delta(ram, ram_next, "normal"),
            "throttle_pct": float(info.get("cpu-throttle-percentage", 0)),
        })
    return rows


def samples_rows(obs: Observed) -> list[dict[str, Any]]:
    rows = []
    for t, info in obs.samples:
        ram = _ram(info)
        mbps = ram.get("mbps")
        rows.append({
            "run_id": obs.run_id, "t_s": t - obs.t0,
            "bandwidth_bytes_per_s": mbps * 1e6 / 8 if mbps is not None else NAN,
            "threshold_bytes": NAN,  # not reported by QEMU
            "pending_bytes": ram.get("remaining"),
            "expected_downtime_s": info["expected-downtime"] / 1000
            if "expected-downtime" in info else NAN,
            "dirty_pages_rate": ram.get("dirty-pages-rate", NAN),
            "transferred_bytes": ram.get("transferred"),
            "throttle_pct": float(info.get("cpu-throttle-percentage", 0)),
            "status": str(info.get("status", "")),
        })
    return rows


def tables(obs: Observed, scenario: str) -> Result:
    """The four tables of one real migration, column names as the simulator writes them."""
    run = runs_row(obs, scenario)
    run_columns = list(RUNS_COLUMNS) + (["memory_match"] if "memory_match" in run else [])
    events = sorted(obs.events, key=lambda e: e[0])
    return Result(
        runs=_frame(run_columns, [run]),
        passes=_frame(PASSES_COLUMNS, passes_rows(obs)),
        samples=_frame(SAMPLES_COLUMNS, samples_rows(obs)),
        events=_frame(EVENTS_COLUMNS, [
            {"run_id": obs.run_id, "t_s": t - obs.t0, "endpoint": ep, "event": ev,
             "detail": event_detail(ev, detail)}
            for t, ep, ev, detail in events]),
    )
