"""Plots draw from the tables alone and write non-empty figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from builders import samples_frame
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sim.figures import draw_standard_figures
from sim.plots import (
    plot_pending,
    plot_timeline,
    switchover_time,
    sync_times,
)
from sim.result import Result


def events_frame(run_id: str = "r0") -> pd.DataFrame:
    rows = [
        (0.0, "MIGRATION", "setup"), (0.01, "MIGRATION", "active"), (0.01, "MIGRATION_PASS", "1"),
        (1.2, "MIGRATION_PASS", "2"), (1.7, "MIGRATION_PASS", "3"), (1.8, "MIGRATION", "device"),
        (1.9, "MIGRATION", "completed"),
    ]
    return pd.DataFrame({
        "run_id": [run_id] * len(rows), "t_s": [r[0] for r in rows],
        "endpoint": ["source"] * len(rows), "event": [r[1] for r in rows],
        "detail": [r[2] for r in rows],
    })


def runs_frame(run_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": run_ids, "scenario": ["tiny"] * len(run_ids), "seed": list(range(len(run_ids))),
        "workload.writes_per_s": [1000.0 * (i + 1) for i in range(len(run_ids))],
        "status": ["completed"] * len(run_ids),
    })


def multi_run_result(n: int) -> Result:
    ids = [f"r{i}" for i in range(n)]
    return Result(
        runs=runs_frame(ids),
        samples=pd.concat([samples_frame(r) for r in ids], ignore_index=True),
        events=pd.concat([events_frame(r) for r in ids], ignore_index=True),
    )


def test_sync_and_switchover_times_come_from_events() -> None:
    """Syncs are the MIGRATION_PASS events, the switchover the MIGRATION 'device' event."""
    events = events_frame()
    assert sync_times(events) == [0.01, 1.2, 1.7]
    assert switchover_time(events) == pytest.approx(1.8)
    passes = pd.DataFrame({"t_start_s": [0.0, 1.0]})
    assert sync_times(None, passes) == [0.0, 1.0]
    assert switchover_time(None, samples_frame()) == pytest.approx(1.9)
    assert switchover_time(None, None) is None


def test_plot_timeline_on_given_axes() -> None:
    """plot_timeline draws on the Axes it is given, returns it, labels units and names the run."""
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_timeline(samples_frame(), events_frame(), ax=ax)
    assert out is ax
    assert "MiB" in ax.get_ylabel() and "(s)" in ax.get_xlabel()
    assert "r0" in ax.get_title()
    assert len(ax.get_lines()) >= 2 + 3 + 1  # pending, threshold, 3 syncs, switchover
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"pending", "threshold", "bandwidth", "sync", "switchover"} <= set(labels)
    twin_labels = [a.get_ylabel() for a in fig.axes if a is not ax]
    assert twin_labels == ["bandwidth (MiB/s)"]


def test_plot_timeline_without_axes_uses_a_non_interactive_backend() -> None:
    """With ax=None a pyplot figure is made; no window is opened."""
    import matplotlib.pyplot as plt

    ax = plot_timeline(samples_frame(), title="custom")
    try:
        assert isinstance(ax, Axes)
        assert ax.get_title() == "custom"
        assert matplotlib.get_backend().lower() in {"agg", "pdf", "svg", "template"} or \
            "inline" in matplotlib.get_backend()
    finally:
        plt.close(ax.figure)  # type: ignore[arg-type]


def test_plot_pending_one_line_per_run() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    samples = pd.concat([samples_frame("a"), samples_frame("b")], ignore_index=True)
    plot_pending(samples, ax=ax)
    assert len(ax.get_lines()) == 2


@pytest.mark.parametrize("n", [1, 4, 12])
def test_draw_standard_figures_writes_png(tmp_path: Path, n: int) -> None:
    """One run, a few runs (small multiples) and many runs (overlay) all give a timeline.png
    (and the report that embeds it)."""
    paths = draw_standard_figures(multi_run_result(n), tmp_path / "out")
    assert [p.name for p in paths] == ["timeline.png", "report.html"]
    data = paths[0].read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_draw_standard_figures_on_empty_tables(tmp_path: Path) -> None:
    """A result with no samples (a run that failed at setup) still gets a figure."""
    paths = draw_standard_figures(Result(), tmp_path)
    assert paths[0].stat().st_size > 0
