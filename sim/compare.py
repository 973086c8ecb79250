"""Regression comparison of two saved results (``migsim compare BASELINE_DIR CURRENT_DIR``).

Runs are matched by ``run_id`` (and ``vm`` in a fleet), or, for an A/B comparison of two
different scenarios whose run_ids differ, by position (``match="position"``: the i-th run of
each side) or by swept parameters (``match="params"``: the runs whose swept values are equal). Each matched run's outcome (``status``,
``failure_reason``, capabilities in force) must be equal and each key number within ``rtol`` of the
baseline (relative to the baseline; NaN equals NaN, e.g. the downtime of a cancelled run). A run on
one side only is drift too. ``compare`` writes ``drift.csv`` (one row per run and metric) and
figures: ``compare-<metric>.png`` (bars, baseline vs current, per run) and ``compare-timeline.png``
(each run's pending bytes, baseline dashed, current solid).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from sim import figures, plots
from sim.errors import ResultsError
from sim.result import Result, write_atomic

DRIFT_FILE = "drift.csv"
DRIFT_COLUMNS = ("run", "metric", "baseline", "current", "rel_change", "ok")
DEFAULT_RTOL = 0.05
# `migsim compare` exits with this when something drifted (2 stays for bad input).
EXIT_DRIFT = 1

# Outcome columns compared for equality.
EXACT_METRICS: tuple[str, ...] = ("status", "failure_reason", "capabilities")
# Numbers compared within rtol.
NUMERIC_METRICS: tuple[str, ...] = (
    "total_time_s",
    "setup_time_s",
    "downtime_s",
    "transferred_bytes",
    "precopy_bytes",
    "downtime_bytes",
    "normal_pages",
    "zero_pages",
    "xbzrle_pages",
    "xbzrle_bytes",
    "xbzrle_cache_miss",
    "xbzrle_overflow",
    "plugin_pages",
    "plugin_bytes",
    "dirty_sync_count",
    "max_throttle_pct",
    "pages_lost",
)
# Always drawn as compare-<metric>.png (plus every numeric metric that drifts).
FIGURE_METRICS: tuple[str, ...] = ("total_time_s", "downtime_s", "transferred_bytes",
                                   "dirty_sync_count", "xbzrle_pages")
# compare-timeline.png shows at most this many runs.
MAX_TIMELINE_PANELS = 12
# The value written for a run present on one side only.
PRESENT, MISSING = "present", "missing"
# How runs are paired: the same run_id, the same place in the runs table, the same swept values.
MATCH_MODES: tuple[str, ...] = ("run_id", "position", "params")
# Parameter columns that are not swept keys (the guest is matched anyway).
NOT_MATCHED = ("vm",)


class CompareInputError(Exception):
    """A directory to compare is missing or is not a migsim results directory (one line)."""


@dataclass
class Comparison:
    """Two results and their drift table (DRIFT_COLUMNS, one row per run and metric)."""

    baseline: Result
    current: Result
    drift: pd.DataFrame
    rtol: float
    #: per side, run_id -> the label its runs are matched and shown by (run_id itself when empty)
    names: tuple[dict[Any, str], dict[Any, str]] = ({}, {})

    @property
    def drifted(self) -> pd.DataFrame:
        """The rows beyond tolerance (and runs present on one side only)."""
        return self.drift[~self.drift["ok"].astype(bool)]

    @property
    def ok(self) -> bool:
        return not len(self.drifted)


# -- comparing ------------------------------------------------------------------------------------


def load_result(directory: str | os.PathLike[str], role: str) -> Result:
    """``Result.load`` with any problem reported as one CompareInputError line."""
    path = Path(directory)
    if not path.is_dir():
        raise CompareInputError(f"{path}: no such {role} results directory")
    try:
        return Result.load(path, with_scenario=False)
    except (FileNotFoundError, ResultsError) as err:
        raise CompareInputError(str(err)) from None
    except Exception as err:  # an unreadable Parquet file
        raise CompareInputError(f"{path}: cannot read {role} results: {type(err).__name__}: "
                                f"{' '.join(str(err).split())}") from None


def run_labels(frame: pd.DataFrame, names: dict[Any, str] | None = None) -> pd.Series:
    """The key matching runs across results: ``run_id`` (or its name in ``names``), plus
    `` vm`` in a fleet."""
    labels = frame["run_id"].astype(str)
    if names:
        labels = frame["run_id"].map(lambda rid: names.get(rid, str(rid))).astype(str)
    if "vm" in frame.columns:
        labels = labels + " " + frame["vm"].astype(str)
    return labels


def _run_ids(runs: pd.DataFrame) -> list[Any]:
    return list(dict.fromkeys(runs["run_id"])) if "run_id" in runs.columns else []


def _params_key(result: Result, run_id: Any) -> str:
    """A run's swept values as ``key=value ...`` (``no swept keys`` for a single run)."""
    from sim.labels import format_param

    params = [p for p in result.params if p not in NOT_MATCHED]
    row = result.runs[result.runs["run_id"] == run_id].iloc[0]
    return " ".join(f"{p.rsplit('.', 1)[-1]}={format_param(p, row[p])}" for p in params) or (
        "no swept keys")


def match_names(baseline: Result, current: Result,
                match: str) -> tuple[dict[Any, str], dict[Any, str]]:
    """Per side, run_id -> the common label that pairs it with a run of the other side."""
    if match not in MATCH_MODES:
        raise CompareInputError(f"--match {match}: expected one of {', '.join(MATCH_MODES)}")
    base_ids, cur_ids = _run_ids(baseline.runs), _run_ids(current.runs)
    if match == "run_id":
        return {}, {}
    if match == "position":
        pairs = [f"{b}" if str(b) == str(c) else f"{b} vs {c}"
                 for b, c in zip(base_ids, cur_ids, strict=False)]
        extra_base = [str(b) for b in base_ids[len(pairs):]]
        extra_cur = [str(c) for c in cur_ids[len(pairs):]]
        return (dict(zip(base_ids, pairs + extra_base, strict=True)),
                dict(zip(cur_ids, pairs + extra_cur, strict=True)))
    names = []
    for result, ids, role in ((baseline, base_ids, "baseline"), (current, cur_ids, "current")):
        keys = {rid: _params_key(result, rid) for rid in ids}
        if len(set(keys.values())) < len(keys):
            raise CompareInputError(f"{role}: several runs have the same swept values; "
                                    "use --match position")
        names.append(keys)
    return names[0], names[1]


def compare_values(baseline: Any, current: Any, rtol: float) -> tuple[float, bool]:
    """(relative change, within tolerance) of one number; NaN == NaN."""
    base, cur = float(baseline), float(current)
    if math.isnan(base) or math.isnan(cur):
        return math.nan, math.isnan(base) and math.isnan(cur)
    if base == cur:
        return 0.0, True
    if base == 0:
        return math.copysign(math.inf, cur), False
    change = (cur - base) / abs(base)
    return change, abs(change) <= rtol


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def compare_runs(baseline: pd.DataFrame, current: pd.DataFrame, rtol: float,
                 names: tuple[dict[Any, str], dict[Any, str]] = ({}, {})) -> pd.DataFrame:
    """The drift table of two runs tables (DRIFT_COLUMNS); runs are paired by their labels
    (``names``: see :func:`match_names`)."""
    base = baseline.set_axis(run_labels(baseline, names[0]), axis=0)
    cur = current.set_axis(run_labels(current, names[1]), axis=0)
    rows: list[tuple[Any, ...]] = []
    for run in dict.fromkeys([*base.index, *cur.index]):
        if run not in cur.index or run not in base.index:
            sides = (PRESENT, MISSING) if run not in cur.index else (MISSING, PRESENT)
            rows.append((run, "run", *sides, math.nan, False))
            continue
        b, c = base.loc[run], cur.loc[run]
        for metric in EXACT_METRICS:
            if metric in b.index or metric in c.index:
                bv, cv = _text(b.get(metric)), _text(c.get(metric))
                rows.append((run, metric, bv, cv, math.nan, bv == cv))
        for metric in NUMERIC_METRICS:
            if metric in b.index and metric in c.index:
                change, ok = compare_values(b[metric], c[metric], rtol)
                rows.append((run, metric, b[metric], c[metric], change, ok))
            elif metric in b.index or metric in c.index:  # a column that appeared or vanished
                bv = b[metric] if metric in b.index else MISSING
                cv = c[metric] if metric in c.index else MISSING
                rows.append((run, metric, bv, cv, math.nan, False))
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS)).astype({"ok": bool})


def compare(baseline_dir: str | os.PathLike[str], current_dir: str | os.PathLike[str],
            rtol: float = DEFAULT_RTOL, match: str = "run_id") -> Comparison:
    """Load both results and compare their runs, paired by ``match`` (MATCH_MODES)."""
    if not (rtol >= 0 and math.isfinite(rtol)):
        raise CompareInputError(f"--rtol {rtol}: expected a number >= 0")
    if match not in MATCH_MODES:
        raise CompareInputError(f"--match {match}: expected one of {', '.join(MATCH_MODES)}")
    baseline = load_result(baseline_dir, "baseline")
    current = load_result(current_dir, "current")
    names = match_names(baseline, current, match)
    drift = compare_runs(baseline.runs, current.runs, rtol, names)
    return Comparison(baseline, current, drift, rtol, names)


# -- writing --------------------------------------------------------------------------------------


def write_comparison(comparison: Comparison, outdir: str | os.PathLike[str]) -> list[Path]:
    """Write ``drift.csv`` and the comparison figures into ``outdir``; return the paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    drift_csv = out / DRIFT_FILE
    write_atomic(drift_csv, comparison.drift.to_csv(index=False).encode())
    written = [drift_csv]
    for metric in figure_metrics(comparison):
        written.append(figures.save_figure(_metric_figure(comparison, metric),
                                           out / f"compare-{metric}.png"))
    timeline = _timeline_figure(comparison)
    if timeline is not None:
        written.append(figures.save_figure(timeline, out / "compare-timeline.png"))
    return written


def figure_metrics(comparison: Comparison) -> list[str]:
    """FIGURE_METRICS and every numeric metric that drifted, those present on both sides."""
    drifting = set(comparison.drifted["metric"])
    wanted = [m for m in NUMERIC_METRICS if m in FIGURE_METRICS or m in drifting]
    return [m for m in wanted
            if m in comparison.baseline.runs.columns and m in comparison.current.runs.columns]


def _metric_figure(comparison: Comparison, metric: str) -> Figure:
    base, cur = comparison.baseline.runs, comparison.current.runs
    base_names, cur_names = comparison.names
    n = len(set(run_labels(base, base_names)) | set(run_labels(cur, cur_names)))
    fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * n), 4), layout="constrained")
    drifted = comparison.drifted
    drifting = list(drifted.loc[drifted["metric"].isin([metric, "run"]), "run"])
    plots.plot_metric_comparison(base[metric].set_axis(run_labels(base, base_names)),
                                 cur[metric].set_axis(run_labels(cur, cur_names)), metric,
                                 fig.add_subplot(),
                                 drifting=drifting)
    return fig


def _timeline_figure(comparison: Comparison) -> Figure | None:
    base, cur = comparison.baseline.samples, comparison.current.samples
    if not len(base) and not len(cur):
        return None
    base_labels = run_labels(base, comparison.names[0])
    cur_labels = run_labels(cur, comparison.names[1])
    runs = list(dict.fromkeys([*base_labels, *cur_labels]))
    shown = runs[:MAX_TIMELINE_PANELS]
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.3 * nrows), layout="constrained")
    for i, run in enumerate(shown):
        plots.plot_pending_comparison(base[base_labels == run], cur[cur_labels == run],
                                      fig.add_subplot(nrows, ncols, i + 1), title=run)
    if len(runs) > len(shown):
        fig.suptitle(f"pending bytes: the first {len(shown)} of {len(runs)} runs")
    return fig


def format_drift(drift: pd.DataFrame, limit: int = 20) -> str:
    """A short fixed-width table of drifting rows (at most ``limit``)."""
    rows = [("run", "metric", "baseline", "current", "change")]
    for _, row in drift.head(limit).iterrows():
        change = row["rel_change"]
        if isinstance(change, float) and math.isnan(change):
            shown = ""
        elif isinstance(change, float) and math.isinf(change):
            shown = "was 0"
        else:
            shown = f"{change:+.1%}"
        rows.append((str(row["run"]), str(row["metric"]), _short(row["baseline"]),
                     _short(row["current"]), shown))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(drift) > limit:
        lines.append(f"... and {len(drift) - limit} more (see {DRIFT_FILE})")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def summary_line(comparison: Comparison, names: Sequence[str] = ()) -> str:
    """``compare: 3 runs, 20 values; 2 beyond rtol 0.05`` (or ``no drift``)."""
    runs = comparison.drift["run"].nunique()
    what = f"compare{' ' + ' vs '.join(names) if names else ''}: {runs} run{'s' if runs != 1 else ''}, "
    what += f"{len(comparison.drift)} values"
    n = len(comparison.drifted)
    return what + (f"; {n} beyond rtol {comparison.rtol:g}" if n else f"; no drift (rtol {comparison.rtol:g})")
