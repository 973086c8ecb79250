"""The four migsim tables of a captured migration: what the stream shows, plus QMP's counters.

``downtime_bytes`` here includes the device state (QEMU's counter has RAM only); ``capabilities``
are those the source's QMP reports on, plus those its records prove (XBZRLE, compression).

From the stream (:mod:`sim.stream`): page counts by kind, bytes on the wire (``transferred_bytes``
is every byte received, device state included; ``precopy_bytes`` those before the ``ram`` END
section, ``downtime_bytes`` the rest), passes (QEMU's scan rounds), and ``samples`` every 100 ms
of arrival (cumulative bytes and the rate over the last 100 ms). With the source's ``query-migrate``
replies (``migsim capture --qmp``) the quantities only QEMU knows are joined: setup time,
downtime, expected downtime, dirty-sync count, mbps, XBZRLE cache hits and misses, and the samples
are QEMU's own (as :mod:`sim.validation.qemu_tables` builds them). Without them those stay NaN
(counts: 0, the tables' missing value), never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim.recorder import (
    EVENTS_COLUMNS,
    PASSES_COLUMNS,
    RUNS_COLUMNS,
    SAMPLES_COLUMNS,
    event_detail,
    runs_row,
)
from sim.result import Result
from sim.stream import StreamError, Summary
from sim.validation.qemu_tables import Observed, samples_rows

RUN_ID = "capture"
NAN = math.nan
SAMPLE_S = 0.1
NORMAL_KINDS = ("page", "compressed")


def _frame(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=list(columns))


def _count(frame: pd.DataFrame, *kinds: str) -> int:
    return int(frame["kind"].isin(kinds).sum())


def _qmp_known(final: Mapping[str, Any], samples: Sequence[tuple[float, dict[str, Any]]]
               ) -> dict[str, Any]:
    """The runs columns only QEMU's ``query-migrate`` knows (empty without replies)."""
    stats = final if final.get("ram") else next(
        (info for _, info in reversed(samples) if info.get("ram")), {})
    if not stats:
        return {}
    ram, xb = stats["ram"], stats.get("xbzrle-cache") or {}
    known: dict[str, Any] = {"setup_time_s": stats.get("setup-time", NAN) / 1000,
                             "dirty_sync_count": ram.get("dirty-sync-count", 0),
                             "mbps": ram.get("mbps", NAN)}
    if final.get("status") == "completed":
        known |= {"total_time_s": final.get("total-time", NAN) / 1000,
                  "downtime_s": final.get("downtime", NAN) / 1000}
    expected = [i["expected-downtime"] for _, i in samples if "expected-downtime" in i]
    if expected:
        known["expected_downtime_s"] = expected[-1] / 1000
    if xb:
        known |= {"xbzrle_pages": xb.get("pages", 0), "xbzrle_cache_miss": xb.get("cache-miss", 0),
                  "xbzrle_cache_miss_rate": xb.get("cache-miss-rate", NAN),
                  "xbzrle_encoding_rate": xb.get("encoding-rate", NAN),
                  "xbzrle_overflow": xb.get("overflow", 0)}
    known["max_throttle_pct"] = max(float(i.get("cpu-throttle-percentage", 0))
                                    for _, i in samples)
    return known


def _runs(records: pd.DataFrame, summary: Summary, chunks: Sequence[tuple[float, int]],
          samples: Sequence[tuple[float, dict[str, Any]]], final: Mapping[str, Any],
          error: StreamError | None, capabilities: Sequence[str]) -> dict[str, Any]:
    t0 = chunks[0][0] if chunks else NAN
    received = chunks[-1][1] if chunks else 0
    end = summary.ram_end_offset
    xbzrle = records[records["kind"] == "xbzrle"]
    status = "failed" if error is not None else str(final.get("status", "completed"))
    # the source's capabilities (QMP), the configuration's, and those its records prove
    seen = {"xbzrle": len(xbzrle) > 0, "compress": _count(records, "compressed") > 0}
    in_force = set(capabilities) | set(summary.capabilities) | {c for c, on in seen.items() if on}
    known: dict[str, Any] = dict(
        status=status, failure_reason=str(error) if error is not None else "",
        negotiation="qemu", capabilities=",".join(sorted(in_force)),
        total_time_s=chunks[-1][0] - t0 if chunks else NAN,
        transferred_bytes=received,
        precopy_bytes=end if end is not None else received,
        downtime_bytes=received - end if end is not None else 0,
        normal_pages=_count(records, *NORMAL_KINDS), zero_pages=_count(records, "zero"),
        xbzrle_pages=len(xbzrle), xbzrle_records=len(xbzrle),
        # QEMU counts an XBZRLE record's bytes without its 8-byte header (ram.c)
        xbzrle_bytes=int((xbzrle["wire_bytes"] - 8).sum()),
    )
    if error is None:
        known |= _qmp_known(final, samples)
    return {"run_id": RUN_ID, "scenario": RUN_ID} | runs_row(**known)


def _passes(records: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for number, group in records.groupby("pass", sort=True):
        kind = group["kind"]
        rows.append({
            "run_id": RUN_ID, "pass": number, "t_start_s": float(group["t_s"].min()),
            "t_end_s": float(group["t_s"].max()), "dirty_pages_at_sync": NAN,
            "pages_sent": len(group), "bytes_sent": int(group["wire_bytes"].sum()),
            "zero_pages": int((kind == "zero").sum()),
            "xbzrle_pages": int((kind == "xbzrle").sum()),
            "xbzrle_records": int((kind == "xbzrle").sum()),
            "normal_pages": int(kind.isin(NORMAL_KINDS).sum()), "throttle_pct": NAN})
    return rows


def _stream_samples(chunks: Sequence[tuple[float, int]], status: str) -> list[dict[str, Any]]:
    """Every 100 ms from the first byte: bytes received so far and over the last 100 ms."""
    if not chunks:
        return []
    times = np.array([t for t, _ in chunks]) - chunks[0][0]
    total = np.array([n for _, n in chunks], dtype=np.int64)
    grid = np.arange(SAMPLE_S, times[-1] + SAMPLE_S, SAMPLE_S)
    done = total[np.searchsorted(times, grid, side="right") - 1]
    rate = np.diff(done, prepend=0) / SAMPLE_S
    return [{"run_id": RUN_ID, "t_s": float(t), "bandwidth_bytes_per_s": float(r),
             "threshold_bytes": NAN, "pending_bytes": NAN, "expected_downtime_s": NAN,
             "dirty_pages_rate": NAN, "transferred_bytes": int(n), "throttle_pct": NAN,
             "status": status if i == len(grid) - 1 else "active"}
            for i, (t, n, r) in enumerate(zip(grid, done, rate, strict=True))]


def _events(summary: Summary, chunks: Sequence[tuple[float, int]],
            error: StreamError | None) -> list[dict[str, Any]]:
    if not chunks:
        return []
    t0 = chunks[0][0]
    found: list[tuple[float, str, dict[str, Any]]] = [
        (t0, "stream-start", {"machine": summary.machine,
                              "blocks": {b.name: b.used_bytes for b in summary.blocks}})]
    found += [(t, "stream-command", {"command": c}) for t, c in summary.commands]
    if summary.ram_end_t is not None:
        found.append((summary.ram_end_t, "stream-ram-end", {"offset": summary.ram_end_offset}))
    if summary.device_start_t is not None:
        found.append((summary.device_start_t, "stream-device-state",
                      {"offset": summary.ram_bytes}))
    if error is not None:
        found.append((chunks[-1][0], "stream-error", {"message": str(error)}))
    found.append((chunks[-1][0], "stream-end", {"bytes": chunks[-1][1],
                                                "device_bytes": summary.device_bytes}))
    return [{"run_id": RUN_ID, "t_s": t - t0, "endpoint": "destination", "event": ev,
             "detail": event_detail(ev, detail)}
            for t, ev, detail in sorted(found, key=lambda e: e[0])]


def stream_tables(records: pd.DataFrame, summary: Summary, chunks: Sequence[tuple[float, int]],
                  samples: Sequence[tuple[float, dict[str, Any]]], final: Mapping[str, Any],
                  error: StreamError | None, capabilities: Sequence[str] = ()) -> Result:
    """runs, passes, samples and events of one capture (``records``: records.parquet's frame;
    ``capabilities``: those the source's QMP reported on)."""
    run = _runs(records, summary, chunks, samples, final, error, capabilities)
    if samples and chunks:
        obs = Observed(RUN_ID, t0=chunks[0][0], samples=list(samples))
        sample_rows = samples_rows(obs)
    else:
        sample_rows = _stream_samples(chunks, run["status"])
    return Result(runs=_frame(RUNS_COLUMNS, [run]), passes=_frame(PASSES_COLUMNS, _passes(records)),
                  samples=_frame(SAMPLES_COLUMNS, sample_rows),
                  events=_frame(EVENTS_COLUMNS, _events(summary, chunks, error)))


__all__ = ["RUN_ID", "stream_tables"]
