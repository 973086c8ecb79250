"""The standard figures as data: the PNG files ``migsim run`` and ``migsim plot`` leave next to the
tables, each with its caption in ``report.html``, the function that draws it and the rule for when
it applies. ``draw_standard_figures(result, outdir)`` draws those that apply, then writes the report.

Adding a figure is a ``plot_*`` primitive in :mod:`sim.plots` and one row of ``FIGURES``. The
figures are drawn on bare ``Figure`` objects, so pyplot's state is never touched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from sim import plots
from sim.cluster import figures as cluster_figures
from sim.labels import format_param
from sim.report import write_report
from sim.result import FILE_MODE

if TYPE_CHECKING:
    import pandas as pd

    from sim.result import Result

# Above this many runs the timeline becomes one overlay of pending bytes instead of small multiples.
MAX_SMALL_MULTIPLES = 9
# Per-pass bars are drawn for at most this many (run, guest) timelines.
MAX_PASS_PANELS = 4
# The downtime CDF needs at least this many completed runs to say anything.
MIN_CDF_RUNS = 5
# Swept metrics drawn in sweep.png.
SWEEP_METRICS = ("total_time_s", "downtime_s")
# Parameter columns that are not swept scenario keys.
NOT_SWEPT = ("vm", "repeat")
# The columns the XBZRLE cache curve reads, besides the swept cache size.
CACHE_METRICS = ("xbzrle_cache_miss_rate", "xbzrle_bytes", "xbzrle_encoding_rate",
                 "transferred_bytes")


@dataclass(frozen=True)
class StandardFigure:
    """One standard figure: its file, its caption, how it is drawn and when it applies."""

    file: str
    caption: str
    draw: Callable[[Result], Figure]
    applies: Callable[[Result], bool]


# -- what the tables hold ---------------------------------------------------------------------------


def swept_params(runs: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """The swept scenario keys among ``params`` that take more than one value (not vm, repeat)."""
    return [p for p in params if p not in NOT_SWEPT and p in runs.columns
            and runs[p].astype(str).nunique() > 1]


def run_titles(runs: pd.DataFrame, params: Sequence[str] = ()) -> dict[Any, str]:
    """A title per run_id: scenario name, swept values and status."""
    titles: dict[Any, str] = {}
    for _, row in runs.iterrows():
        parts = [str(row.get("scenario", row["run_id"]))]
        parts += [f"{p.rsplit('.', 1)[-1]}={format_param(p, row[p])}" for p in params
                  if p in row.index]
        if "vm" in row.index:
            parts.append(f"vm={row['vm']}")
        if "status" in row.index and row["status"] != "completed":
            parts.append(f"[{row['status']}]")
        titles[row["run_id"]] = " ".join(parts)
    return titles


def _per_guest(frame: pd.DataFrame) -> pd.DataFrame:
    """In a fleet's tables each (run, guest) is one timeline: fold ``vm`` into ``run_id``."""
    if "vm" not in frame.columns:
        return frame
    return frame.assign(run_id=frame["run_id"].astype(str) + " " + frame["vm"].astype(str))


def _is_fleet(result: Result) -> bool:
    return "vm" in result.runs.columns and bool(len(result.runs))


def _sweep_keys(result: Result) -> list[str]:
    return swept_params(result.runs, result.params)


def _sweep_metrics(result: Result) -> list[str]:
    runs = result.runs
    return [m for m in SWEEP_METRICS if m in runs.columns and runs[m].notna().any()]


# -- timeline.png -----------------------------------------------------------------------------------


def _always(result: Result) -> bool:
    return True


def _timeline_figure(result: Result) -> Figure:
    """One run: one timeline; up to MAX_SMALL_MULTIPLES: one small timeline per run; more: one
    overlay of pending bytes, a line per run."""
    runs, samples, events, passes = (_per_guest(f) for f in (result.runs, result.samples,
                                                              result.events, result.passes))
    run_ids = plots.run_ids_of(runs) if len(runs) else plots.run_ids_of(samples)
    titles = run_titles(runs, [p for p in result.params if p != "vm"]) if len(runs) else {}

    if len(run_ids) <= 1:
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        ax = fig.add_subplot()
        rid = run_ids[0] if run_ids else None
        title = None
        if rid is not None:
            title = titles.get(rid, str(rid))
            title = title if str(rid) in title else f"{title} (run {rid})"
        plots.plot_timeline(samples, events, passes, ax=ax, run_id=rid, title=title)
    elif len(run_ids) <= MAX_SMALL_MULTIPLES:
        ncols = min(3, len(run_ids))
        nrows = -(-len(run_ids) // ncols)
        fig = Figure(figsize=(5.5 * ncols, 3.4 * nrows), layout="constrained")
        for i, rid in enumerate(run_ids):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            plots.plot_timeline(samples, events, passes, ax=ax, run_id=rid,
                                title=titles.get(rid, str(rid)), legend=(i == 0))
    else:
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax = fig.add_subplot()
        plots.plot_pending(samples, ax=ax, labels=titles)
    return fig


# -- passes.png -------------------------------------------------------------------------------------


def _has_few_passes_timelines(result: Result) -> bool:
    passes = _per_guest(result.passes)
    return bool(len(passes)) and len(plots.run_ids_of(passes)) <= MAX_PASS_PANELS


def _passes_figure(result: Result) -> Figure:
    passes = _per_guest(result.passes)
    events = _per_guest(result.events) if len(result.events) else None
    run_ids = plots.run_ids_of(passes)
    ncols = min(2, len(run_ids))
    nrows = -(-len(run_ids) // ncols)
    fig = Figure(figsize=(7 * ncols, 3.6 * nrows), layout="constrained")
    for i, rid in enumerate(run_ids):
        plots.plot_passes(passes, fig.add_subplot(nrows, ncols, i + 1), run_id=rid,
                          title=f"passes of {rid}", legend=(i == 0), events=events)
    return fig


# -- sweep.png --------------------------------------------------------------------------------------


def _is_sweep(result: Result) -> bool:
    return bool(_sweep_keys(result)) and bool(_sweep_metrics(result))


def _sweep_figure(result: Result) -> Figure:
    """The metrics against the first swept key; hue: the second swept key, or the guest in a fleet."""
    runs = result.runs
    keys = _sweep_keys(result)
    metrics = _sweep_metrics(result)
    hue = keys[1] if len(keys) > 1 else ("vm" if _is_fleet(result) else None)
    fig = Figure(figsize=(6 * len(metrics), 4), layout="constrained")
    for i, metric in enumerate(metrics):
        plots.plot_sweep(runs, metric, keys[0], hue=hue,
                         ax=fig.add_subplot(1, len(metrics), i + 1))
    return fig


# -- xbzrle-cache.png -------------------------------------------------------------------------------


def _sweeps_the_cache_size(result: Result) -> bool:
    runs = result.runs
    key = plots.CACHE_SIZE_KEY
    return (key in _sweep_keys(result) and all(c in runs.columns for c in (key, *CACHE_METRICS))
            and plots.is_numeric(runs[key]))


def _cache_figure(result: Result) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    plots.plot_xbzrle_cache(result.runs, fig.add_subplot())
    return fig


# -- downtime-cdf.png -------------------------------------------------------------------------------


def _has_enough_completed_runs(result: Result) -> bool:
    return len(plots.completed_downtimes(result.runs)) >= MIN_CDF_RUNS


def _cdf_figure(result: Result) -> Figure:
    fig = Figure(figsize=(6, 4), layout="constrained")
    plots.plot_downtime_cdf(result.runs, fig.add_subplot())
    return fig


# -- fleet.png --------------------------------------------------------------------------------------


def _fleet_figure(result: Result) -> Figure:
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    plots.plot_fleet(result.runs, fig.subplots(1, 4))
    fig.suptitle("fleet: per run")
    return fig


# -- the catalogue ----------------------------------------------------------------------------------

#: the standard figures, in the order they are drawn and shown in report.html
FIGURES: tuple[StandardFigure, ...] = (
    StandardFigure(
        "timeline.png",
        "Pending bytes, threshold and bandwidth over time; dotted lines are dirty-bitmap syncs, "
        "the solid line the switchover.",
        _timeline_figure, _always),
    StandardFigure(
        "passes.png",
        "Pages sent per pass by encoding (bars) and bytes sent per pass (line).",
        _passes_figure, _has_few_passes_timelines),
    StandardFigure(
        "sweep.png",
        "Total time and downtime against the swept parameter (mean; band: min-max).",
        _sweep_figure, _is_sweep),
    StandardFigure(
        "xbzrle-cache.png",
        "XBZRLE cache miss rate (% of pages sent) and share of wire bytes saved against the "
        "cache size; hollow markers: a run of that size did not complete.",
        _cache_figure, _sweeps_the_cache_size),
    StandardFigure(
        "downtime-cdf.png",
        "Empirical CDF of the downtime over the completed runs.",
        _cdf_figure, _has_enough_completed_runs),
    StandardFigure(
        "fleet.png",
        "Per run of the fleet: migrations not completed, bytes sent, time until the last guest "
        "is done, each guest's downtime.",
        _fleet_figure, _is_fleet),
)


def draw_standard_figures(result: Result, outdir: str | os.PathLike[str], *,
                          report: bool = True, source: str | None = None) -> list[Path]:
    """Write every standard figure that applies into ``outdir``, then ``report.html`` (which
    embeds them; ``report=False`` skips it). Returns the paths written, ``timeline.png`` first.

    - ``timeline.png`` always. One run: one timeline; up to MAX_SMALL_MULTIPLES: one small timeline
      per run; more: one overlay of pending bytes, a line per run.
    - ``passes.png``: per-pass bars, for up to MAX_PASS_PANELS (run, guest) timelines.
    - ``sweep.png``: total time and downtime against the first swept key (hue: the second swept
      key, or the guest in a fleet), when the scenario sweeps something.
    - ``xbzrle-cache.png``: miss rate and share of bytes saved against the cache size, when it
      is swept (hollow markers where a run did not complete).
    - ``downtime-cdf.png``: when at least MIN_CDF_RUNS runs completed.
    - ``fleet.png``: per-run fleet panels, when the result holds several guests.

    ``source`` names the results folder in the report (default ``outdir``'s name; ``migsim run``
    draws into a temporary folder that is then renamed).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = FIGURES
    if cluster_figures.is_cluster(result):  # a cluster's own figures (sim.cluster.figures)
        catalogue = tuple(StandardFigure(*f) for f in cluster_figures.CLUSTER_FIGURES)
    drawn = [(save_figure(figure.draw(result), out / figure.file), figure.caption)
             for figure in catalogue if figure.applies(result)]
    written = [path for path, _ in drawn]
    if report:
        written.append(write_report(result, out, figures=drawn, source=source))
    return written


def save_figure(fig: Figure, path: Path) -> Path:
    """Write atomically: a figure on disk is always whole. The temporary name is this process's
    own, so two writers never clash on it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.chmod(tmp, FILE_MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
