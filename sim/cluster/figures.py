"""The standard figures of a cluster run (``migsim run`` / ``migsim plot``): ``gantt.png``
(migrations per host, for each run up to :data:`MAX_GANTT_RUNS`), ``downtime-cdf.png``
(per policy when it is swept), and the first run's ``link-utilisation.png`` and
``bytes-by-tier.png`` (:mod:`sim.network.plots`, from the ``links`` table). :mod:`sim.figures` draws these instead of the single-migration
figures when the runs table is a cluster's."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from ..network.plots import plot_bytes_by_tier, plot_link_utilisation
from ..result import Result
from .plots import member_of, plot_downtime_cdf_by, plot_gantt

MAX_GANTT_RUNS = 6

#: (file, caption, draw, applies), in drawing order
CLUSTER_FIGURES: tuple[tuple[str, str, Callable[[Result], Figure],
                             Callable[[Result], bool]], ...]


def is_cluster(result: Result) -> bool:
    """Whether the runs table is a cluster's (it has ``migration_id``)."""
    return "migration_id" in result.runs.columns


def _gantt(result: Result) -> Figure:
    runs = result.runs
    members = member_of(runs)
    names = list(dict.fromkeys(members))[:MAX_GANTT_RUNS]
    fig = Figure(figsize=(10, 3.2 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        plot_gantt(runs[members == name], ax)
        ax.set_title(f"{name}: migrations per source host", fontsize="medium")
    return fig


def _cdf(result: Result) -> Figure:
    fig = Figure(figsize=(6, 4), layout="constrained")
    hue = next((p for p in result.params if p.endswith("policy")), None)
    plot_downtime_cdf_by(result.runs, fig.add_subplot(), hue=hue)
    return fig


def _first_links(result: Result) -> pd.DataFrame:
    links = result.extra["links"]
    return links[links["run_id"] == links["run_id"].iloc[0]].drop(columns="run_id")


def _utilisation(result: Result) -> Figure:
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = plot_link_utilisation(_first_links(result), fig.add_subplot())
    ax.set_title(f"{result.extra['links']['run_id'].iloc[0]}: link utilisation", fontsize="medium")
    return fig


def _bytes(result: Result) -> Figure:
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = plot_bytes_by_tier(_first_links(result), fig.add_subplot())
    ax.set_title(f"{result.extra['links']['run_id'].iloc[0]}: bytes by tier", fontsize="medium")
    return fig


def _has_links(result: Result) -> bool:
    return "links" in result.extra and bool(len(result.extra["links"]))


def _has_attempts(result: Result) -> bool:
    return bool((result.runs["attempt"] > 0).any()) if len(result.runs) else False


def _has_completed(result: Result) -> bool:
    return bool((result.runs["status"] == "completed").any()) if len(result.runs) else False


CLUSTER_FIGURES = (
    ("gantt.png", "Migration attempts per source host over time, by status (hatched: a retry); "
     "one panel per run.", _gantt, _has_attempts),
    ("downtime-cdf.png", "Empirical CDF of the completed migrations' downtime (a line per "
     "policy when it is swept).", _cdf, _has_completed),
    ("link-utilisation.png", "Link utilisation over time, the busiest link of each tier (the "
     "first run).", _utilisation, _has_links),
    ("bytes-by-tier.png", "Bytes carried by each tier's links, migrations and cross traffic (the "
     "first run).", _bytes, _has_links),
)
