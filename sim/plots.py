"""Figures drawn straight from the result tables: each ``plot_*`` takes DataFrames and an optional
Axes, returns the Axes, and computes nothing the tables do not already hold (unit scaling, means
over repeats, and XBZRLE's bytes saved from its pages and encoding rate).

Without an ``ax`` a ``plot_*`` draws on a new pyplot Axes; :mod:`sim.figures` puts them together
into the standard figures ``migsim run`` and ``migsim plot`` leave next to the tables, on bare
``Figure`` objects. A few helpers read the tables as the plots do (``sync_times``,
``switchover_time``, ``completed_downtimes``, ``xbzrle_bytes_saved``, ``xbzrle_saved_share``,
``run_ids_of``).

The primitives: ``plot_timeline`` (pending bytes, threshold, bandwidth and throttle over time),
``plot_passes`` (pages per pass by encoding, bytes per pass), ``plot_sweep`` (a runs metric against
a swept parameter, mean and min-max over repeats), ``plot_xbzrle_cache`` (miss rate and share of bytes
saved against the cache size, hollow where runs did not complete), ``plot_downtime_cdf``, ``plot_fleet``, and for ``migsim compare``
``plot_metric_comparison`` and ``plot_pending_comparison``.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sim.labels import format_param, metric_axis, param_axis, param_unit
from sim.recorder import event_field
from sim.units import GiB, MiB

# Statuses that mean the guest is stopped for the switchover (REF §7.5).
SWITCHOVER_STATUSES = ("pre-switchover", "device")
# Above this many passes a run's per-pass bars become filled steps (one artist per kind).
MAX_PASS_BARS = 40
# The swept key that the XBZRLE cache curve is drawn against.
CACHE_SIZE_KEY = "migration.xbzrle_cache_size"
# Beyond this many syncs the timeline marks them as ticks along its x axis, not as lines.
MAX_SYNC_LINES = 200

def _new_axes() -> Axes:
    """An Axes from pyplot, falling back to the Agg backend when none has been chosen."""
    get_backend = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if "MPLBACKEND" not in os.environ and get_backend is not None and get_backend() is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def run_ids_of(frame: pd.DataFrame) -> list[Any]:
    """The run ids of a table in order of appearance; ``[None]`` for a table without run_id."""
    if "run_id" not in frame.columns:
        return [None]
    return list(dict.fromkeys(frame["run_id"]))


def _only(frame: pd.DataFrame | None, run_id: Any) -> pd.DataFrame | None:
    if frame is None or run_id is None or "run_id" not in frame.columns:
        return frame
    return frame[frame["run_id"] == run_id]


def sync_times(events: pd.DataFrame | None = None, passes: pd.DataFrame | None = None) -> list[float]:
    """Times of the dirty-bitmap syncs: MIGRATION_PASS events, else the passes' start times."""
    if events is not None and len(events):
        t = events.loc[events["event"] == "MIGRATION_PASS", "t_s"]
        if len(t):
            return [float(x) for x in t]
    if passes is not None and len(passes):
        return [float(x) for x in passes["t_start_s"]]
    return []


def switchover_time(events: pd.DataFrame | None = None, samples: pd.DataFrame | None = None) -> float | None:
    """When the guest stopped: the ``switchover`` event (every QEMU version, post-copy too), else
    the first MIGRATION event into pre-switchover/device, else the first sample whose status is
    device or completed; None if the run never got there."""
    if events is not None and len(events):
        hit = events[events["event"] == "switchover"]
        if len(hit):
            return float(hit["t_s"].iloc[0])
        status = event_field(events, "status")
        hit = events[(events["event"] == "MIGRATION") & status.isin(SWITCHOVER_STATUSES)]
        if len(hit):
            return float(hit["t_s"].iloc[0])
    if samples is not None and len(samples) and "status" in samples.columns:
        hit = samples[samples["status"].isin((*SWITCHOVER_STATUSES, "completed"))]
        if len(hit):
            return float(hit["t_s"].iloc[0])
    return None


def downtime_limits(events: pd.DataFrame | None) -> list[tuple[float, float]]:
    """``(t_s, downtime-limit in s)`` for every ``migrate-set-parameters`` of ``downtime-limit``
    that a management controller sent (its ``controller`` events, :mod:`sim.controllers`)."""
    if events is None or not len(events):
        return []
    rows = events[events["event"] == "controller"]
    out = []
    for t, detail in zip(rows["t_s"], rows["detail"], strict=True):
        data = json.loads(detail)
        if (data.get("action") == "migrate-set-parameters" and "downtime-limit" in data
                and "error" not in data):
            out.append((float(t), float(data["downtime-limit"]) / 1000))
    return out


def plot_timeline(
    samples: pd.DataFrame,
    events: pd.DataFrame | None = None,
    passes: pd.DataFrame | None = None,
    ax: Axes | None = None,
    *,
    run_id: Any = None,
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """Pending bytes (MiB) and bandwidth (MiB/s, right axis) over sim time, with the threshold,
    a dotted line at each sync (beyond ``MAX_SYNC_LINES`` syncs, a tick each along the x axis,
    as the legend says) and a solid one at the switchover. When auto-converge throttled the
    guest (``throttle_pct`` non-zero), the throttle (%) is a third line on an outer right axis;
    when a management controller changed ``downtime-limit`` (:func:`downtime_limits`), the limit
    (ms) is a step line on another outer right axis (single-run plots).

    ``run_id`` picks one run out of multi-run tables; without it every run is drawn (markers only
    when there is a single run). Returns the left (pending bytes) Axes; the bandwidth axis is its
    twin.
    """
    if ax is None:
        ax = _new_axes()
    if run_id is not None:
        samples = samples[samples["run_id"] == run_id]
    events = _only(events, run_id)
    passes = _only(passes, run_id)
    runs = run_ids_of(samples)
    bw_ax = ax.twinx()
    for i, rid in enumerate(runs):
        s = _only(samples, rid)
        assert s is not None
        if len(runs) == 1:
            tag, colors = "", ("C0", "C2", "C1")
        else:
            tag, colors = f" {rid}", (f"C{i % 10}",) * 3
        marker = "." if len(s) < 30 else None  # a few samples: show where they are
        ax.plot(s["t_s"], s["pending_bytes"] / MiB, color=colors[0], lw=1.5, marker=marker,
                label=f"pending{tag}")
        ax.plot(s["t_s"], s["threshold_bytes"] / MiB, color=colors[1], lw=1, ls="--",
                label=f"threshold{tag}")
        bw_ax.plot(s["t_s"], s["bandwidth_bytes_per_s"] / MiB, color=colors[2], lw=1, alpha=0.6,
                   ls="-.", label=f"bandwidth{tag}")
    if len(runs) == 1:
        syncs = sync_times(events, passes)
        if len(syncs) <= MAX_SYNC_LINES:
            for k, t in enumerate(syncs):
                ax.axvline(t, color="0.55", lw=0.7, ls=":", label="sync" if k == 0 else None)
        else:  # thousands of lines would hide the curves: a rug of ticks along the bottom
            ax.plot(syncs, np.zeros(len(syncs)), ls="", marker="|", ms=7, mew=0.5,
                    color="0.4", transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"sync ({len(syncs)}, as ticks on the axis)")
        t_switch = switchover_time(events, samples)
        if t_switch is not None:
            ax.axvline(t_switch, color="C3", lw=1.2, label="switchover")
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel("pending (MiB)")
    bw_ax.set_ylabel("bandwidth (MiB/s)")
    ax.set_ylim(bottom=0)
    # Headroom so a constant bandwidth line is not drawn on the frame's top edge.
    top = samples["bandwidth_bytes_per_s"].max() / MiB if len(samples) else 0.0
    bw_ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    throttle_ax = _plot_throttle(ax, samples, runs) if _throttled(samples) else None
    limits = downtime_limits(events) if len(runs) == 1 else []
    limit_ax = _plot_limits(ax, samples, limits, throttle_ax is not None) if limits else None
    if title is None:
        title = f"run {runs[0]}" if len(runs) == 1 and runs[0] is not None else f"{len(runs)} runs"
    ax.set_title(title)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        for twin in (bw_ax, throttle_ax, limit_ax):
            if twin is not None:
                h2, l2 = twin.get_legend_handles_labels()
                handles, labels = handles + h2, labels + l2
        if len(labels) <= 12:
            ax.legend(handles, labels, loc="best", fontsize="small")
    return ax


def _throttled(samples: pd.DataFrame) -> bool:
    """Did auto-converge slow the guest down in these samples?"""
    if "throttle_pct" not in samples.columns or not len(samples):
        return False
    return bool((samples["throttle_pct"].fillna(0) > 0).any())


def _plot_limits(ax: Axes, samples: pd.DataFrame, limits: list[tuple[float, float]],
                 outer: bool) -> Axes:
    """The downtime limit a controller set (ms, a step line from each change), on a right-hand
    axis offset outwards (further out when the throttle's axis is there)."""
    limit_ax = ax.twinx()
    limit_ax.spines["right"].set_position(("axes", 1.24 if outer else 1.12))
    t_end = float(samples["t_s"].max()) if len(samples) else limits[-1][0]
    times = [t for t, _ in limits] + [max(t_end, limits[-1][0])]
    values = [v * 1000 for _, v in limits]
    limit_ax.step(times, [*values, values[-1]], where="post", color="C5", lw=1.2,
                  label="downtime limit")
    limit_ax.set_ylim(0, max(values) * 1.15)
    limit_ax.set_ylabel("downtime limit (ms)")
    return limit_ax


def _plot_throttle(ax: Axes, samples: pd.DataFrame, runs: list[Any]) -> Axes:
    """The guest's CPU throttle (%) per run, on a second right-hand axis offset outwards."""
    throttle_ax = ax.twinx()
    throttle_ax.spines["right"].set_position(("axes", 1.12))
    for i, rid in enumerate(runs):
        s = _only(samples, rid)
        assert s is not None
        tag, color = ("", "C4") if len(runs) == 1 else (f" {rid}", f"C{i % 10}")
        throttle_ax.plot(s["t_s"], s["throttle_pct"], color=color, lw=1, ls=(0, (1, 1)),
                         label=f"throttle{tag}")
    throttle_ax.set_ylim(0, 100)
    throttle_ax.set_ylabel("throttle (%)")
    return throttle_ax


def plot_pending(samples: pd.DataFrame, ax: Axes | None = None, *, labels: dict[Any, str] | None = None,
                 title: str | None = None) -> Axes:
    """Pending bytes (MiB) over sim time, one line per run (for sweeps too large for small multiples)."""
    if ax is None:
        ax = _new_axes()
    runs = run_ids_of(samples)
    for i, rid in enumerate(runs):
        s = _only(samples, rid)
        assert s is not None
        label = (labels or {}).get(rid, str(rid))
        ax.plot(s["t_s"], s["pending_bytes"] / MiB, color=f"C{i % 10}", lw=1, label=label)
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel("pending (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"pending bytes, {len(runs)} runs")
    if len(runs) <= 12:
        ax.legend(loc="upper right", fontsize="small")
    return ax


# -- passes -----------------------------------------------------------------------------------------

# passes column -> (legend label, colour), stacked bottom to top
PASS_KINDS: tuple[tuple[str, str, str], ...] = (
    ("normal_pages", "raw (normal)", "C0"),
    ("zero_pages", "zero", "C7"),
    ("xbzrle_records", "XBZRLE", "C2"),
)


def pass_labels(passes: pd.DataFrame, events: pd.DataFrame | None = None) -> list[str]:
    """A name per pass of one run: its number, except the pass the guest stopped in
    (``stop-and-copy``, or ``post-copy`` for a post-copy switch: it starts at the ``switchover``
    event) and, before it, a pass that sent nothing because the switchover test passed at once
    after its sync (``final sync``). Without events, numbers only."""
    labels = [str(int(n)) for n in passes["pass"]]
    switch = events[events["event"] == "switchover"] if events is not None and len(events) else None
    if switch is None or not len(switch):
        return labels
    t_switch = float(switch["t_s"].iloc[0])
    postcopy = "postcopy" in str(event_field(switch, "message").iloc[0])
    starts = passes["t_start_s"].to_numpy(dtype=float)
    after = np.flatnonzero(starts >= t_switch)
    if not len(after):
        return labels
    stop = int(after[0])
    labels[stop] = "post-copy" if postcopy else "stop-and-copy"
    if stop > 0 and int(passes["pages_sent"].iloc[stop - 1]) == 0:
        labels[stop - 1] = "final sync"
    return labels


def _pass_ticks(ax: Axes, x: np.ndarray, labels: list[str]) -> None:
    """Every pass's name up to 12 passes; beyond, about ten numbers plus the named passes."""
    named = [i for i, label in enumerate(labels) if not label.isdigit()]
    if len(x) <= 12:
        keep = list(range(len(x)))
    else:
        step = -(-len(x) // 10)
        keep = [i for i in range(0, len(x), step)
                if all(abs(i - j) >= max(2, step // 2) for j in named)] + named
    keep = sorted(set(keep))
    ax.set_xticks(x[keep], [labels[i] for i in keep],
                  rotation=30 if any(labels[i] in ("final sync",) for i in keep) else 0)


def plot_passes(passes: pd.DataFrame, ax: Axes | None = None, run_id: Any = None, *,
                title: str | None = None, legend: bool = True,
                events: pd.DataFrame | None = None) -> Axes:
    """Pages sent in each pass (sync interval), stacked by how they went on the wire (raw, zero,
    XBZRLE; pages of plug-in encoders as "other"), and the pass's wire bytes (MiB) as a line on a
    right-hand axis. One run: pick it with ``run_id`` when the table holds several. With the
    run's ``events`` the stop-and-copy (or post-copy) pass and an empty final-sync pass before it
    are named on the x axis (:func:`pass_labels`); every pass keeps its bar.
    Returns the pages Axes; the bytes axis is its twin.
    """
    if ax is None:
        ax = _new_axes()
    if run_id is not None:
        passes = passes[passes["run_id"] == run_id]
    events = _only(events, run_id)
    runs = run_ids_of(passes) if len(passes) else [None]
    if len(runs) > 1:
        raise ValueError(f"passes holds {len(runs)} runs; pick one with run_id=")
    if "xbzrle_records" not in passes.columns:  # saved by migsim 0.3 or older: records there
        passes = passes.assign(xbzrle_records=passes["xbzrle_pages"])
    x = passes["pass"].to_numpy()
    stack = [(passes[column].to_numpy(dtype=float), label, color)
             for column, label, color in PASS_KINDS]
    other = passes["pages_sent"].to_numpy(dtype=float) - sum(v for v, _, _ in stack)
    if (other > 0).any():
        stack.append((np.clip(other, 0, None), "other", "C5"))
    bottom = np.zeros(len(passes))
    for values, label, color in stack:
        if len(x) <= MAX_PASS_BARS:
            ax.bar(x, values, bottom=bottom, width=0.8, color=color, label=label)
        else:  # one filled step area per kind: hundreds of bars cost seconds to draw
            ax.stairs(bottom + values, np.r_[x - 0.5, x[-1] + 0.5], baseline=bottom, fill=True,
                      color=color, label=label)
        bottom = bottom + values
    bytes_ax = ax.twinx()
    bytes_ax.plot(x, passes["bytes_sent"] / MiB, color="C3", marker="." if len(x) < 60 else None,
                  lw=1.2, label="bytes sent")
    bytes_ax.set_ylim(bottom=0)
    ax.set_xlabel("pass (sync interval)")
    ax.set_ylabel("pages sent (pages)")
    bytes_ax.set_ylabel("bytes sent (MiB)")
    _pass_ticks(ax, x, pass_labels(passes, events))
    if title is None:
        title = f"passes of run {runs[0]}" if runs[0] is not None else "passes"
    ax.set_title(title)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = bytes_ax.get_legend_handles_labels()
        ax.legend(handles + h2, labels + l2, loc="upper right", fontsize="small")
    return ax


# -- sweeps -----------------------------------------------------------------------------------------


def is_numeric(values: pd.Series) -> bool:
    """Is a swept column drawn as numbers (True) or as categories, one tick per value?"""
    return bool(pd.api.types.is_numeric_dtype(values)) and not pd.api.types.is_bool_dtype(values)


def _positions(runs: pd.DataFrame, key: str) -> tuple[pd.Series, list[str] | None]:
    """x positions for the swept ``key``: scaled numbers, or category indices with their labels."""
    values = runs[key]
    if is_numeric(values):
        return values.astype(float) * param_axis(key)[1], None
    text = values.map(lambda v: format_param(key, v))  # lists as xbzrle,multifd
    labels = list(dict.fromkeys(text))
    index = {label: i for i, label in enumerate(labels)}
    return text.map(index).astype(float), labels


def _set_param_ticks(ax: Axes, key: str, positions: pd.Series, labels: list[str] | None) -> None:
    """Ticks at the swept values; a log-2 axis for sizes spanning 8x or more."""
    ticks = sorted(set(positions.dropna()))
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
        ax.set_xlabel(key)
        return
    if param_unit(key) == "size" and ticks and ticks[0] > 0 and ticks[-1] / ticks[0] >= 8:
        ax.set_xscale("log", base=2)
    label, factor = param_axis(key)
    if len(ticks) <= 12:
        ax.set_xticks(ticks, _format_ticks(key, ticks, factor))
        ax.minorticks_off()
        label = key  # the ticks carry the unit
    ax.set_xlabel(label)


def plot_sweep(runs: pd.DataFrame, metric: str, x: str, hue: str | None = None,
               ax: Axes | None = None) -> Axes:
    """A runs metric against the swept key ``x`` (a dotted scenario key), one line per value of
    ``hue``: the mean over repeats (and over any other parameter) with a min-max band when a point
    holds several runs. Runs where the metric is missing (downtime of a cancelled run) leave gaps.
    """
    if ax is None:
        ax = _new_axes()
    label, scale = metric_axis(metric)
    positions, categories = _positions(runs, x)
    groups: list[tuple[Any, pd.DataFrame]] = (
        [(None, runs)] if hue is None else list(runs.groupby(hue, sort=False, dropna=False)))
    most = 1
    for i, (value, group) in enumerate(groups):
        y = group[metric].astype(float) * scale
        stats = y.groupby(positions.loc[group.index]).agg(["mean", "min", "max", "count"])
        stats = stats.sort_index()
        color = f"C{i % 10}"
        name = (label.split(" (")[0] if hue is None
                else f"{hue.rsplit('.', 1)[-1]}={format_param(hue, value)}")
        ax.plot(stats.index, stats["mean"], marker="o", color=color, label=name)
        if (stats["count"] > 1).any():
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2,
                            lw=0)
        most = max(most, int(group.groupby(positions.loc[group.index]).size().max()))
    missing = runs[metric].isna()
    if missing.any():  # e.g. the downtime of runs that never switched over
        ax.plot(positions[missing], np.zeros(int(missing.sum())), ls="", marker="x", color="0.4",
                clip_on=False, label="no value (run not completed)")
    _set_param_ticks(ax, x, positions, categories)
    ax.set_ylabel(label)
    top = float((runs[metric].astype(float) * scale).max())
    ax.set_ylim(0, top * 1.1 if math.isfinite(top) and top > 0 else 1.0)
    spread = f"; mean, band min-max of {most} runs" if most > 1 else ""
    ax.set_title(f"{label.split(' (')[0]} vs {x.rsplit('.', 1)[-1]}{spread}", fontsize="medium")
    if (hue is not None and len(groups) <= 12) or missing.any():
        ax.legend(fontsize="small")
    return ax


# -- XBZRLE cache -----------------------------------------------------------------------------------


def xbzrle_bytes_saved(runs: pd.DataFrame) -> pd.Series:
    """Bytes XBZRLE kept off the wire per run: its pages at full size minus its encoded bytes
    (``xbzrle_encoding_rate`` is page bytes per XBZRLE byte)."""
    encoded = runs["xbzrle_bytes"].astype(float)
    return (encoded * (runs["xbzrle_encoding_rate"].astype(float) - 1)).where(encoded > 0, 0.0)


def xbzrle_saved_share(runs: pd.DataFrame) -> pd.Series:
    """Per run, the share of the wire bytes XBZRLE saved: bytes saved over what the migration
    would have sent without them (transferred + saved). A ratio, so a run that went on longer
    (and sent more) does not look better for it."""
    saved = xbzrle_bytes_saved(runs)
    total = runs["transferred_bytes"].astype(float) + saved
    return (saved / total).where(total > 0, 0.0)


def _format_ticks(key: str, ticks: Sequence[float], factor: float) -> list[str]:
    """Tick labels for a swept key's values on an axis scaled by ``factor``: with their units
    (``8 MiB``, ``1 Gbit/s``, ``300 ms``), as ``format_param`` writes them."""
    if param_unit(key) == "size":
        return [format_param(key, int(round(t / factor))) for t in ticks]
    return [format_param(key, t / factor) for t in ticks]


def plot_xbzrle_cache(runs: pd.DataFrame, ax: Axes | None = None, *,
                      key: str = CACHE_SIZE_KEY) -> Axes:
    """XBZRLE cache miss rate (% of pages sent) and the share of wire bytes XBZRLE saved (%)
    against the swept cache size, the mean over the runs of each size. Both are ratios: absolute
    bytes saved grow with a run's length and peak at sizes whose runs never converged. A size
    where some run did not complete is drawn with hollow markers."""
    if ax is None:
        ax = _new_axes()
    done = (runs["status"] == "completed") if "status" in runs.columns else pd.Series(
        True, index=runs.index)
    table = pd.DataFrame({
        "size": runs[key].astype(float) / MiB,
        "miss": runs["xbzrle_cache_miss_rate"].astype(float) * 100,
        "saved": xbzrle_saved_share(runs) * 100,
        "done": done.astype(bool),
    }).groupby("size").agg(miss=("miss", "mean"), saved=("saved", "mean"), done=("done", "all"))
    table = table.sort_index()
    curves = (("miss", "cache miss rate (% of pages sent)", "C0", "o"),
              ("saved", "bytes saved by XBZRLE (% of wire bytes without it)", "C2", "s"))
    for column, label, color, marker in curves:
        ax.plot(table.index, table[column], color=color, label=label)
        full, hollow = table[table["done"]], table[~table["done"]]
        ax.plot(full.index, full[column], ls="", marker=marker, color=color)
        ax.plot(hollow.index, hollow[column], ls="", marker=marker, color=color,
                markerfacecolor="none")
    if not table["done"].all():
        ax.plot([], [], ls="", marker="o", color="0.3", markerfacecolor="none",
                label="hollow: a run of this size did not complete")
    top = float(table[["miss", "saved"]].max().max()) if len(table) else 0.0
    ax.set_ylim(0, max(100.0, top) * 1.05)
    ticks = list(table.index)
    if ticks and ticks[0] > 0 and ticks[-1] / ticks[0] >= 4:
        ax.set_xscale("log", base=2)
    if len(ticks) <= 12:
        ax.set_xticks(ticks, _format_ticks(key, ticks, 1.0 / MiB))
        ax.minorticks_off()
        ax.set_xlabel("XBZRLE cache size")
    else:
        ax.set_xlabel("XBZRLE cache size (MiB)")
    ax.set_ylabel("% (of pages, of bytes)")
    ax.set_title("XBZRLE cache size", fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    return ax


# -- downtime ---------------------------------------------------------------------------------------


def completed_downtimes(runs: pd.DataFrame) -> np.ndarray:
    """Downtime (s) of the completed runs, sorted; failed and cancelled runs have none."""
    if not len(runs) or "downtime_s" not in runs.columns:
        return np.array([])
    done = runs[runs["status"] == "completed"] if "status" in runs.columns else runs
    d = done["downtime_s"].astype(float).to_numpy()
    return np.sort(d[np.isfinite(d)])


def plot_downtime_cdf(runs: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Empirical CDF of the downtime (ms) over the completed runs."""
    if ax is None:
        ax = _new_axes()
    d = completed_downtimes(runs) * 1e3
    y = np.arange(1, len(d) + 1) / max(len(d), 1)
    ax.step(np.r_[d[:1], d], np.r_[0.0, y], where="post", color="C0",
            label=f"{len(d)} completed runs")
    ax.set_xlabel("downtime (ms)")
    ax.set_ylabel("fraction of completed runs")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"downtime CDF ({len(d)} of {len(runs)} runs completed)", fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_fleet(runs: pd.DataFrame, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """A fleet per run (e.g. per negotiation mode): migrations failed, GiB sent, the time until
    the last guest is done, and each guest's downtime. Four Axes."""
    if axes is None:
        fig = Figure(figsize=(13, 3.6), layout="constrained")
        axes = fig.subplots(1, 4)
    run_ids = list(dict.fromkeys(runs["run_id"]))
    labels = [str(r).rsplit("=", 1)[-1] if "=" in str(r) else str(r) for r in run_ids]
    grouped = runs.groupby("run_id", sort=False)
    failed = [int((g["status"] != "completed").sum()) for _, g in grouped]
    sent = [g["transferred_bytes"].sum() / GiB for _, g in grouped]
    makespan = [g["total_time_s"].max() for _, g in grouped]
    x = np.arange(len(run_ids))
    for ax, values, ylabel in zip(axes[:3], (failed, sent, makespan),
                                  ("migrations not completed", "sent (GiB)",
                                   "last guest done (s)"), strict=True):
        ax.bar(x, values, color="C0")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(ylabel)
    vms = list(dict.fromkeys(runs["vm"]))
    width = 0.8 / max(len(vms), 1)
    for j, vm in enumerate(vms):
        rows = runs[runs["vm"] == vm].set_index("run_id").reindex(run_ids)
        axes[3].bar(x + (j - (len(vms) - 1) / 2) * width, rows["downtime_s"] * 1000, width,
                    label=str(vm), color=f"C{j % 10}")
    axes[3].set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
    axes[3].set_ylabel("downtime (ms); none if failed")
    axes[3].legend(fontsize="x-small")
    return axes


# -- regression comparison --------------------------------------------------------------------------


def plot_metric_comparison(baseline: pd.Series, current: pd.Series, metric: str,
                           ax: Axes | None = None, *, drifting: Sequence[Any] = ()) -> Axes:
    """A runs metric per run, baseline and current side by side. ``baseline`` and ``current`` are
    indexed by run label; a run on one side only has one bar; runs in ``drifting`` get a red
    current bar."""
    if ax is None:
        ax = _new_axes()
    label, scale = metric_axis(metric)
    runs = list(dict.fromkeys([*baseline.index, *current.index]))
    x = np.arange(len(runs))
    base = baseline.reindex(runs).astype(float) * scale
    cur = current.reindex(runs).astype(float) * scale
    ax.bar(x - 0.2, base, 0.4, color="0.7", edgecolor="0.3", hatch="//", label="baseline")
    colors = ["C3" if r in set(drifting) else "C0" for r in runs]
    ax.bar(x + 0.2, cur, 0.4, color=colors, label="current")
    # Long labels (two run_ids paired by position) wrap instead of squeezing the bars away.
    ax.set_xticks(x, ["\n".join(textwrap.wrap(str(r), 32)) for r in runs],
                  rotation=20 if len(runs) > 1 else 0, ha="right", fontsize="small")
    ax.set_ylabel(label)
    ax.set_title(f"{label.split(' (')[0]}: baseline vs current", fontsize="medium")
    handles = [Patch(facecolor="0.7", edgecolor="0.3", hatch="//", label="baseline"),
               Patch(facecolor="C0", label="current")]
    if any(r in set(drifting) for r in runs):
        handles.append(Patch(facecolor="C3", label="current, drifted"))
    ax.legend(handles=handles, fontsize="small")
    return ax


def plot_pending_comparison(baseline: pd.DataFrame, current: pd.DataFrame,
                            ax: Axes | None = None, *, title: str | None = None) -> Axes:
    """One run's pending bytes (MiB) over sim time: baseline dashed, current solid."""
    if ax is None:
        ax = _new_axes()
    ax.plot(baseline["t_s"], baseline["pending_bytes"] / MiB, color="0.35", ls="--", lw=1.2,
            label="baseline")
    ax.plot(current["t_s"], current["pending_bytes"] / MiB, color="C0", lw=1.2, label="current")
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel("pending (MiB)")
    ax.set_ylim(bottom=0)
    if title is not None:
        ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small")
    return ax
