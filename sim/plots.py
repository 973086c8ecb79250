"""Figures drawn straight from the result tables: each ``plot_*`` takes DataFrames and an optional
Axes, returns the Axes, and computes nothing the tables do not already hold (only unit scaling).

``draw_standard_figures(result, outdir)`` writes the figures ``migsim run`` and ``migsim plot``
leave next to the tables. It draws on bare ``Figure`` objects, so it never touches pyplot's state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sim.result import Result

MiB = 1024 * 1024

# Statuses that mean the guest is stopped for the switchover (REF §7.5).
SWITCHOVER_STATUSES = ("pre-switchover", "device")
# Above this many runs the timeline becomes one overlay of pending bytes instead of small multiples.
MAX_SMALL_MULTIPLES = 9


def _new_axes() -> Axes:
    """An Axes from pyplot, falling back to the Agg backend when none has been chosen."""
    get_backend = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if "MPLBACKEND" not in os.environ and get_backend is not None and get_backend() is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def _run_ids(frame: pd.DataFrame) -> list[Any]:
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
    """When the guest stopped: the first MIGRATION event into pre-switchover/device, else the first
    sample whose status is device or completed; None if the run never got there."""
    if events is not None and len(events):
        hit = events[(events["event"] == "MIGRATION") & events["detail"].isin(SWITCHOVER_STATUSES)]
        if len(hit):
            return float(hit["t_s"].iloc[0])
    if samples is not None and len(samples) and "status" in samples.columns:
        hit = samples[samples["status"].isin((*SWITCHOVER_STATUSES, "completed"))]
        if len(hit):
            return float(hit["t_s"].iloc[0])
    return None


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
    a dotted line at each sync and a solid one at the switchover.

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
    runs = _run_ids(samples)
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
        for k, t in enumerate(sync_times(events, passes)):
            ax.axvline(t, color="0.55", lw=0.7, ls=":", label="sync" if k == 0 else None)
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
    if title is None:
        title = f"run {runs[0]}" if len(runs) == 1 and runs[0] is not None else f"{len(runs)} runs"
    ax.set_title(title)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = bw_ax.get_legend_handles_labels()
        if len(labels) + len(l2) <= 12:
            ax.legend(handles + h2, labels + l2, loc="best", fontsize="small")
    return ax


def plot_pending(samples: pd.DataFrame, ax: Axes | None = None, *, labels: dict[Any, str] | None = None,
                 title: str | None = None) -> Axes:
    """Pending bytes (MiB) over sim time, one line per run (for sweeps too large for small multiples)."""
    if ax is None:
        ax = _new_axes()
    runs = _run_ids(samples)
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


def run_titles(runs: pd.DataFrame, params: Sequence[str] = ()) -> dict[Any, str]:
    """A title per run_id: scenario name, swept values and status."""
    titles: dict[Any, str] = {}
    for _, row in runs.iterrows():
        parts = [str(row.get("scenario", row["run_id"]))]
        parts += [f"{p.rsplit('.', 1)[-1]}={row[p]}" for p in params if p in row.index]
        if "vm" in row.index:
            parts.append(f"vm={row['vm']}")
        if "status" in row.index and row["status"] != "completed":
            parts.append(f"[{row['status']}]")
        titles[row["run_id"]] = " ".join(parts)
    return titles


def draw_standard_figures(result: Result, outdir: str | os.PathLike[str]) -> list[Path]:
    """Write ``timeline.png`` into ``outdir`` and return the paths written.

    One run: one timeline. Up to MAX_SMALL_MULTIPLES runs: one small timeline per run. More: one
    overlay of pending bytes, a line per run.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    runs, samples, events, passes = (_per_guest(f) for f in (result.runs, result.samples,
                                                              result.events, result.passes))
    if "vm" in result.runs.columns and len(result.runs):
        written.append(_save(_fleet_figure(result.runs), out / "fleet.png"))
    run_ids = _run_ids(runs) if len(runs) else _run_ids(samples)
    titles = run_titles(runs, result.params) if len(runs) else {}

    if len(run_ids) <= 1:
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        ax = fig.add_subplot()
        rid = run_ids[0] if run_ids else None
        title = None
        if rid is not None:
            title = titles.get(rid, str(rid))
            title = title if str(rid) in title else f"{title} (run {rid})"
        plot_timeline(samples, events, passes, ax=ax, run_id=rid, title=title)
    elif len(run_ids) <= MAX_SMALL_MULTIPLES:
        ncols = min(3, len(run_ids))
        nrows = -(-len(run_ids) // ncols)
        fig = Figure(figsize=(5.5 * ncols, 3.4 * nrows), layout="constrained")
        for i, rid in enumerate(run_ids):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            plot_timeline(samples, events, passes, ax=ax, run_id=rid,
                          title=titles.get(rid, str(rid)), legend=(i == 0))
    else:
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax = fig.add_subplot()
        plot_pending(samples, ax=ax, labels=titles)

    return [_save(fig, out / "timeline.png"), *written]


def _save(fig: Figure, path: Path) -> Path:
    """Write atomically: a figure on disk is always whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)
    return path


def _per_guest(frame: pd.DataFrame) -> pd.DataFrame:
    """In a fleet's tables each (run, guest) is one timeline: fold ``vm`` into ``run_id``."""
    if "vm" not in frame.columns:
        return frame
    return frame.assign(run_id=frame["run_id"].astype(str) + " " + frame["vm"].astype(str))


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
    sent = [g["transferred_bytes"].sum() / 2**30 for _, g in grouped]
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


def _fleet_figure(runs: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    plot_fleet(runs, fig.subplots(1, 4))
    fig.suptitle("fleet: per run")
    return fig
