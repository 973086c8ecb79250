"""Plots of a cluster run's tables: a Gantt chart of migrations per host and the downtime CDF per
policy (or any swept key). Like :mod:`sim.plots`, each takes DataFrames and an optional Axes,
returns the Axes and computes nothing the tables do not hold (sorting, unit scaling)."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

#: bar colours of the Gantt chart, by status
STATUS_COLOURS = {"completed": "C2", "failed": "C3", "cancelled": "C1"}


def _axes(ax: Axes | None, size: tuple[float, float] = (8, 4)) -> Axes:
    """``ax``, or a new pyplot Axes (the Agg backend when none has been chosen)."""
    if ax is not None:
        return ax
    get_backend = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if "MPLBACKEND" not in os.environ and get_backend is not None and get_backend() is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=size, layout="constrained")
    return new


def member_of(runs: pd.DataFrame) -> pd.Series:
    """The run (sweep member) each row belongs to: its ``run_id`` before ``.m<migration_id>``."""
    return runs["run_id"].astype(str).str.rsplit(".m", n=1).str[0]


def plot_gantt(runs: pd.DataFrame, ax: Axes | None = None, *, by: str = "source_host") -> Axes:
    """One row per host (``by``: ``source_host`` or ``destination_host``), a bar per migration
    attempt from its start to its end, coloured by status; hatched: a retry."""
    ax = _axes(ax)
    started = runs[runs["attempt"] > 0]
    hosts = sorted(set(started[by]))
    row = {h: i for i, h in enumerate(hosts)}
    for status, group in started.groupby("status", sort=True):
        colour = STATUS_COLOURS.get(str(status), "C7")
        ys = group[by].map(row).to_numpy(float)
        # overlapping attempts on one host are spread inside its row
        lane = group.groupby(by).cumcount().to_numpy() % 4
        ax.barh(ys - 0.3 + lane * 0.15, group["end_s"] - group["start_s"], 0.14,
                left=group["start_s"], color=colour, edgecolor=colour,
                alpha=0.85)
        retries = group[group["attempt"] > 1]
        if len(retries):
            ax.barh(retries[by].map(row).to_numpy(float), retries["end_s"] - retries["start_s"],
                    0.6, left=retries["start_s"], fill=False, hatch="//", edgecolor=colour)
    ax.set_yticks(np.arange(len(hosts)), hosts, fontsize="small")
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel(by.replace("_", " "))
    ax.legend(handles=[Patch(color=c, label=s) for s, c in STATUS_COLOURS.items()
                       if s in set(started["status"])], fontsize="small", loc="lower right")
    ax.set_title(f"migrations per host ({len(started)} attempts)", fontsize="medium")
    return ax


def plot_downtime_cdf_by(runs: pd.DataFrame, ax: Axes | None = None, *,
                         hue: str | None = "cluster.policy") -> Axes:
    """The empirical CDF of the completed migrations' downtime, a line per value of ``hue``
    (one line when ``hue`` is None or not a column)."""
    ax = _axes(ax, (6, 4))
    done = runs[runs["status"] == "completed"]
    groups = (list(done.groupby(hue, sort=True)) if hue is not None and hue in runs.columns
              else [("all", done)])
    for label, group in groups:
        d = np.sort(group["downtime_s"].to_numpy(float)) * 1000
        if len(d):
            ax.step(d, np.arange(1, len(d) + 1) / len(d), where="post",
                    label=f"{label} ({len(d)})")
    ax.set_xlabel("downtime (ms)")
    ax.set_ylabel("fraction of completed migrations")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title("downtime CDF", fontsize="medium")
    return ax
