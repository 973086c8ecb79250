"""Units and labels for people: how a swept scenario key and a runs metric are named on an axis, how
a swept value is written (``64 MiB``, ``300 ms``), and the headers and number formats of the summary
table that ``migsim run`` prints and ``report.html`` shows.

A key's unit comes from the scenario schema (``sim.scenario.key_unit``), not from a list kept here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from sim import scenario, units
from sim.units import MiB

# runs metric -> (axis label with unit, factor from the table's unit)
METRIC_AXES: dict[str, tuple[str, float]] = {
    "total_time_s": ("total time (s)", 1.0),
    "setup_time_s": ("setup time (s)", 1.0),
    "downtime_s": ("downtime (ms)", 1e3),
    "expected_downtime_s": ("expected downtime (ms)", 1e3),
    "transferred_bytes": ("transferred (MiB)", 1.0 / MiB),
    "precopy_bytes": ("sent during pre-copy (MiB)", 1.0 / MiB),
    "downtime_bytes": ("sent during downtime (MiB)", 1.0 / MiB),
    "normal_pages": ("raw pages (pages)", 1.0),
    "zero_pages": ("zero pages (pages)", 1.0),
    "xbzrle_pages": ("XBZRLE pages (pages)", 1.0),
    "xbzrle_records": ("XBZRLE records (pages)", 1.0),
    "xbzrle_bytes": ("XBZRLE bytes (MiB)", 1.0 / MiB),
    "xbzrle_cache_miss": ("XBZRLE cache misses (pages)", 1.0),
    "xbzrle_cache_miss_rate": ("XBZRLE cache miss rate (%)", 100.0),
    "xbzrle_encoding_rate": ("XBZRLE encoding rate (page bytes per wire byte)", 1.0),
    "xbzrle_overflow": ("XBZRLE overflows (pages)", 1.0),
    "plugin_pages": ("plug-in pages (pages)", 1.0),
    "plugin_bytes": ("plug-in bytes (MiB)", 1.0 / MiB),
    "dirty_sync_count": ("dirty-bitmap syncs (count)", 1.0),
    "mbps": ("throughput (Mbit/s)", 1.0),
    "max_throttle_pct": ("max throttle (%)", 1.0),
    "pages_lost": ("pages lost (pages)", 1.0),
}
# scenario key unit (sim.spec field metadata) -> (axis unit, factor from SI)
PARAM_UNITS: dict[str, tuple[str, float]] = {
    "size": ("MiB", 1.0 / MiB),
    "rate": ("MiB/s", 1.0 / MiB),
    "time": ("s", 1.0),
}


def param_unit(key: str) -> str | None:
    """The unit kind (``size`` | ``rate`` | ``time``) of a dotted scenario key, from sim.spec."""
    return scenario.key_unit(key)


def param_axis(key: str) -> tuple[str, float]:
    """Axis label (with unit) and the factor from the table's SI value, for a swept key."""
    unit = PARAM_UNITS.get(param_unit(key) or "")
    if unit is None:
        return key, 1.0
    return f"{key} ({unit[0]})", unit[1]


def format_param(key: str, value: Any) -> str:
    """A swept value for people: ``64 MiB``, ``1 Gbit/s``, ``300 ms``, a list as
    ``xbzrle,multifd`` (``none`` when empty); others as given."""
    ndim = getattr(value, "ndim", None)  # a numpy array (lists read back from Parquet)
    if isinstance(value, list | tuple) or (isinstance(ndim, int) and ndim > 0):
        items = [str(v) for v in (value if isinstance(value, list | tuple) else value.tolist())]
        return ",".join(items) if items else "none"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    unit = param_unit(key)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    if unit == "size":
        return units.format_size(int(value))
    if unit == "rate":  # a link is sold in bits, QEMU's rate limits are in bytes
        return units.format_rate(float(value), bits=key.startswith("link."))
    if unit == "time":
        return units.format_time(float(value))
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def metric_axis(metric: str) -> tuple[str, float]:
    """Axis label (with unit) and factor from the runs table's unit, for a runs metric."""
    return METRIC_AXES.get(metric, (metric, 1.0))


# -- the summary table ------------------------------------------------------------------------------


class SummaryColumn(NamedTuple):
    """How one ``Result.summary()`` column is shown, and its header for each use."""

    format: str  # "s" text, "d" a count, else a float format such as ".2f"
    terminal: str  # header in the fixed-width table ``migsim run`` prints
    report: str  # header in report.html's runs table, the unit in parentheses


# Result.summary() column -> how it is shown. A column not listed (a swept parameter) is text,
# headed by its own name.
SUMMARY_COLUMNS: dict[str, SummaryColumn] = {
    "run_id": SummaryColumn("s", "run_id", "run"),
    "vm": SummaryColumn("s", "vm", "guest"),
    "scenario": SummaryColumn("s", "scenario", "scenario"),
    "status": SummaryColumn("s", "status", "status"),
    "total_s": SummaryColumn(".2f", "total s", "total time (s)"),
    "downtime_ms": SummaryColumn(".1f", "downtime ms", "downtime (ms)"),
    "transferred_MiB": SummaryColumn(".1f", "transferred MiB", "transferred (MiB)"),
    "syncs": SummaryColumn("d", "syncs", "dirty-bitmap syncs"),
    "mbps": SummaryColumn(".1f", "mbps", "throughput (Mbit/s)"),
    "xbzrle_pages": SummaryColumn("d", "xbzrle pages", "XBZRLE pages"),
    "throttle_pct": SummaryColumn(".0f", "throttle %", "max throttle (%)"),
    "memory_match": SummaryColumn("s", "memory match", "memory match"),
    "failure_reason": SummaryColumn("s", "failure reason", "failure reason"),
}


def summary_column(column: str) -> SummaryColumn:
    """How a summary column is shown; a column not in SUMMARY_COLUMNS is text under its name."""
    return SUMMARY_COLUMNS.get(column, SummaryColumn("s", column, column))


def format_cell(value: Any, fmt: str) -> str:
    """One table cell: ``-`` for a missing value, else ``value`` in ``fmt`` (``s`` as text, ``d`` as
    a whole number, else a float format); a value that does not fit the format is shown as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    ndim = getattr(value, "ndim", None)  # a numpy array (lists read back from Parquet)
    if isinstance(value, list | tuple) or (isinstance(ndim, int) and ndim > 0):
        items = [str(v) for v in (value if isinstance(value, list | tuple) else value.tolist())]
        return ",".join(items) if items else "none"  # capabilities: xbzrle,multifd, not a tuple
    if fmt == "s":
        return str(value)
    try:
        if fmt == "d":
            return f"{int(value):d}"
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)
