"""The research figures: each plot_* draws the expected artists on the Axes it is given, and
draw_standard_figures writes the figures that apply (single run, sweep, fleet, repeats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import samples_frame
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from sim.figures import draw_standard_figures
from sim.labels import format_param, param_unit
from sim.plots import (
    MAX_SYNC_LINES,
    pass_labels,
    plot_downtime_cdf,
    plot_metric_comparison,
    plot_passes,
    plot_pending_comparison,
    plot_sweep,
    plot_timeline,
    plot_xbzrle_cache,
    xbzrle_bytes_saved,
    xbzrle_saved_share,
)
from sim.result import Result
from sim.units import MiB

BASELINES = Path(__file__).resolve().parent / "baseline"


def new_ax():
    return Figure().add_subplot()


def twins(ax) -> list:
    return [a for a in ax.figure.axes if a is not ax]


def passes_frame(run_id: str = "r0", extra: int = 0) -> pd.DataFrame:
    normal, zero, xbzrle = [1000, 300, 100], [500, 10, 0], [0, 200, 250]
    return pd.DataFrame({
        "run_id": [run_id] * 3, "pass": [1, 2, 3], "t_start_s": [0.0, 1.0, 1.5],
        "t_end_s": [1.0, 1.5, 1.7], "dirty_pages_at_sync": [1600, 600, 400],
        "pages_sent": [n + z + x + extra for n, z, x in zip(normal, zero, xbzrle, strict=True)],
        "bytes_sent": [4.1e6, 1.5e6, 0.5e6], "zero_pages": zero, "xbzrle_pages": xbzrle,
        "normal_pages": normal, "throttle_pct": [0.0] * 3,
    })


def sweep_runs(repeats: int = 3) -> pd.DataFrame:
    """cache size x writes_per_s x repeat, a metric that grows with both."""
    rows = []
    for cache in (16 * MiB, 64 * MiB, 256 * MiB):
        for writes in (1000, 5000):
            for r in range(repeats):
                rows.append({
                    "run_id": f"c{cache}-w{writes}-r{r}", "scenario": "s", "seed": r,
                    "migration.xbzrle_cache_size": cache, "workload.writes_per_s": writes,
                    "repeat": r, "status": "completed" if cache > 16 * MiB else "cancelled",
                    "total_time_s": cache / MiB / 16 + writes / 1000 + r,
                    "downtime_s": 0.1 + 0.01 * r if cache > 16 * MiB else np.nan,
                })
    return pd.DataFrame(rows)


# -- timeline -------------------------------------------------------------------------------------


def test_timeline_adds_the_throttle_when_the_guest_was_throttled() -> None:
    ax = plot_timeline(samples_frame(throttle=40.0), ax=new_ax())
    labels = [a.get_ylabel() for a in twins(ax)]
    assert labels == ["bandwidth (MiB/s)", "throttle (%)"]
    throttle_ax = twins(ax)[1]
    assert max(throttle_ax.get_lines()[0].get_ydata()) == 40.0
    assert "throttle" in [t.get_text() for t in ax.get_legend().get_texts()]


def _sync_events(n: int) -> pd.DataFrame:
    return pd.DataFrame({"run_id": ["r0"] * n, "t_s": np.linspace(0, 1.9, n),
                         "endpoint": ["source"] * n, "event": ["MIGRATION_PASS"] * n,
                         "detail": [str(k + 1) for k in range(n)]})


def test_timeline_few_syncs_are_lines_thousands_are_ticks() -> None:
    """200 syncs: a dotted line each. 4556 syncs (the issue's run): no line at all, one rug of
    4556 tick markers on the x axis, and the legend says how many and how they are drawn."""
    ax = plot_timeline(samples_frame(), events=_sync_events(MAX_SYNC_LINES), ax=new_ax())
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == MAX_SYNC_LINES
    ax = plot_timeline(samples_frame(), events=_sync_events(4556), ax=new_ax())
    assert not [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    (rug,) = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert len(rug.get_xdata()) == 4556
    assert rug.get_label() == "sync (4556, as ticks on the axis)"
    assert "sync (4556, as ticks on the axis)" in [t.get_text() for t in
                                                   ax.get_legend().get_texts()]


def test_timeline_has_no_throttle_axis_without_throttling() -> None:
    ax = plot_timeline(samples_frame(), ax=new_ax())
    assert [a.get_ylabel() for a in twins(ax)] == ["bandwidth (MiB/s)"]


# -- passes ---------------------------------------------------------------------------------------


def test_plot_passes_stacks_pages_by_kind_with_bytes_on_a_twin_axis() -> None:
    ax = new_ax()
    assert plot_passes(passes_frame(), ax=ax) is ax
    assert len(ax.patches) == 3 * 3  # three passes x (raw, zero, XBZRLE)
    tops = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        tops[x] = max(tops.get(x, 0), bar.get_y() + bar.get_height())
    assert tops == {1: 1500, 2: 510, 3: 350}  # stacked: the top is the pass's pages
    assert ax.get_ylabel() == "pages sent (pages)" and ax.get_xlabel().startswith("pass")
    (bytes_ax,) = twins(ax)
    assert bytes_ax.get_ylabel() == "bytes sent (MiB)"
    assert np.allclose(bytes_ax.get_lines()[0].get_ydata(), np.array([4.1e6, 1.5e6, 0.5e6]) / MiB)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["raw (normal)", "zero", "XBZRLE", "bytes sent"]


def test_plot_passes_shows_pages_of_other_encoders() -> None:
    ax = plot_passes(passes_frame(extra=7), ax=new_ax())
    assert len(ax.patches) == 3 * 4
    assert "other" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_passes_needs_run_id_for_several_runs() -> None:
    both = pd.concat([passes_frame("a"), passes_frame("b")], ignore_index=True)
    with pytest.raises(ValueError, match="run_id"):
        plot_passes(both, ax=new_ax())
    ax = plot_passes(both, ax=new_ax(), run_id="b")
    assert len(ax.patches) == 9 and "b" in ax.get_title()


# -- sweeps ---------------------------------------------------------------------------------------


def test_param_units_come_from_the_scenario_schema() -> None:
    assert param_unit("migration.xbzrle_cache_size") == "size"
    assert param_unit("link.bandwidth") == "rate"
    assert param_unit("migration.downtime_limit") == "time"
    assert param_unit("workload.writes_per_s") is None
    assert param_unit("no.such.key") is None
    assert format_param("migration.xbzrle_cache_size", 64 * MiB) == "64 MiB"
    assert format_param("migration.downtime_limit", 0.3) == "300 ms"
    assert format_param("negotiation", "inband") == "inband"


def test_plot_sweep_mean_and_spread_per_hue() -> None:
    runs = sweep_runs(repeats=3)
    ax = new_ax()
    assert plot_sweep(runs, "total_time_s", "migration.xbzrle_cache_size",
                      hue="workload.writes_per_s", ax=ax) is ax
    lines = [line for line in ax.get_lines() if line.get_label() != "no value (run not completed)"]
    assert [line.get_label() for line in lines] == ["writes_per_s=1000", "writes_per_s=5000"]
    for line, writes in zip(lines, (1000, 5000), strict=True):
        assert list(line.get_xdata()) == [16, 64, 256]  # MiB
        # mean over repeats 0, 1, 2 adds 1
        assert np.allclose(line.get_ydata(), np.array([1, 4, 16]) + writes / 1000 + 1)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # a min-max band per hue value
    assert ax.get_xlabel() == "migration.xbzrle_cache_size"  # the ticks carry the unit
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16 MiB", "64 MiB", "256 MiB"]
    assert ax.get_ylabel() == "total time (s)"
    assert ax.get_xscale() == "log"
    assert "min-max of 3 runs" in ax.get_title()


def test_plot_sweep_marks_runs_without_a_value() -> None:
    """Downtime is NaN for cancelled runs: a gap in the line and an x marker on the axis."""
    runs = sweep_runs(repeats=1)
    ax = plot_sweep(runs, "downtime_s", "migration.xbzrle_cache_size", ax=new_ax())
    mean, missing = ax.get_lines()
    assert np.isnan(mean.get_ydata()[0]) and np.allclose(mean.get_ydata()[1:], 100.0)  # ms
    assert missing.get_label() == "no value (run not completed)"
    assert len(missing.get_xdata()) == 2  # the two 16 MiB runs
    assert ax.get_ylabel() == "downtime (ms)"
    # without a hue, the two writes_per_s values are two runs per point: a band, min-max
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    assert "min-max of 2 runs" in ax.get_title()


def test_plot_sweep_list_values_read_as_lists() -> None:
    """A swept list (capabilities) ticks as xbzrle,multifd and none, not as Python tuples."""
    runs = pd.DataFrame({"migration.capabilities": [(), ("xbzrle",), ("xbzrle", "multifd")],
                         "total_time_s": [1.0, 2.0, 3.0]})
    ax = plot_sweep(runs, "total_time_s", "migration.capabilities", ax=new_ax())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "xbzrle", "xbzrle,multifd"]


def test_plot_sweep_categorical_parameter() -> None:
    runs = pd.DataFrame({"negotiation": ["none", "qemu", "inband", "none"],
                         "total_time_s": [1.0, 2.0, 3.0, 3.0]})
    ax = plot_sweep(runs, "total_time_s", "negotiation", ax=new_ax())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "qemu", "inband"]
    assert list(ax.get_lines()[0].get_ydata()) == [2.0, 2.0, 3.0]


# -- XBZRLE cache and downtime ---------------------------------------------------------------------


def test_xbzrle_bytes_saved_is_page_bytes_minus_encoded_bytes() -> None:
    runs = pd.DataFrame({"xbzrle_pages": [100, 0], "xbzrle_bytes": [100 * 80, 0],
                         "xbzrle_encoding_rate": [4096 / 80, 0.0]})
    assert list(xbzrle_bytes_saved(runs)) == pytest.approx([100 * (4096 - 80), 0.0])


def test_plot_xbzrle_cache_on_real_sweep() -> None:
    runs = Result.load(BASELINES / "xbzrle-hot-set", with_scenario=False).runs
    ax = new_ax()
    assert plot_xbzrle_cache(runs, ax=ax) is ax
    curves = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    miss, saved = curves["cache miss rate"], curves["bytes saved by XBZRLE"]
    assert list(miss.get_xdata()) == [16, 64]
    assert np.allclose(miss.get_ydata(), runs["xbzrle_cache_miss_rate"] * 100)
    assert np.allclose(saved.get_ydata(), xbzrle_saved_share(runs) * 100)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16 MiB", "64 MiB"]
    assert ax.get_xlabel() == "XBZRLE cache size" and "%" in ax.get_ylabel()
    assert not twins(ax)


def test_xbzrle_saved_share_is_saved_over_what_raw_would_send() -> None:
    """A share, not bytes: 100 pages of 4096 B encoded in 80 B each, 1 MB sent in all."""
    runs = pd.DataFrame({"xbzrle_bytes": [100 * 80, 0], "xbzrle_encoding_rate": [4096 / 80, 0.0],
                         "transferred_bytes": [1e6, 5e5]})
    saved = 100 * (4096 - 80)
    assert list(xbzrle_saved_share(runs)) == pytest.approx([saved / (1e6 + saved), 0.0])


def test_plot_xbzrle_cache_hollow_where_runs_did_not_complete() -> None:
    """The longest (cancelled) run saves the most bytes; its share and status say otherwise."""
    runs = pd.DataFrame({
        "migration.xbzrle_cache_size": [8 * MiB, 8 * MiB, 64 * MiB],
        "status": ["cancelled", "completed", "completed"],
        "xbzrle_cache_miss_rate": [0.9, 0.7, 0.1],
        "xbzrle_bytes": [1e9, 1e8, 1e7], "xbzrle_encoding_rate": [2.0, 2.0, 41.0],
        "transferred_bytes": [9e10, 1e9, 1e8],
    })
    ax = plot_xbzrle_cache(runs, ax=new_ax())
    markers = [line for line in ax.get_lines() if line.get_linestyle() == "None"
               and len(line.get_xdata())]
    hollow = [line for line in markers if line.get_markerfacecolor() == "none"]
    filled = [line for line in markers if line.get_markerfacecolor() != "none"]
    assert all(list(line.get_xdata()) == [8] for line in hollow) and len(hollow) == 2
    assert all(list(line.get_xdata()) == [64] for line in filled) and len(filled) == 2
    miss = next(line for line in ax.get_lines() if line.get_label().startswith("cache miss"))
    assert np.allclose(miss.get_ydata(), [80.0, 10.0])  # the mean of 90 % and 70 % at 8 MiB
    assert any("did not complete" in t.get_text() for t in ax.get_legend().get_texts())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8 MiB", "64 MiB"]


def test_plot_downtime_cdf_over_completed_runs() -> None:
    runs = sweep_runs(repeats=3)  # 18 runs, 12 completed
    ax = new_ax()
    assert plot_downtime_cdf(runs, ax=ax) is ax
    (step,) = ax.get_lines()
    y = step.get_ydata()
    assert y[0] == 0 and y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0)
    assert len(y) == 12 + 1
    assert ax.get_xlabel() == "downtime (ms)"
    assert "12 of 18" in ax.get_title()


# -- comparison figures ---------------------------------------------------------------------------


def test_plot_metric_comparison_bars_per_run() -> None:
    base = pd.Series([1.0, 2.0], index=["a", "b"])
    cur = pd.Series([1.0, 3.0, 5.0], index=["a", "b", "c"])
    ax = plot_metric_comparison(base, cur, "total_time_s", ax=new_ax(), drifting=["b", "c"])
    assert len(ax.patches) == 6  # c has a NaN baseline bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_ylabel() == "total time (s)"
    assert "current, drifted" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_pending_comparison_dashed_baseline() -> None:
    ax = plot_pending_comparison(samples_frame(), samples_frame(n=15), ax=new_ax(), title="r0")
    base, cur = ax.get_lines()
    assert base.get_linestyle() == "--" and cur.get_linestyle() == "-"
    assert ax.get_ylabel() == "pending (MiB)"


# -- the standard figures ------------------------------------------------------------------------


def names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def assert_pngs(paths: list[Path]) -> None:
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 5000
        assert not [q for q in p.parent.iterdir() if q.name.startswith(".")]  # no temp files


def test_standard_figures_single_run(tmp_path: Path) -> None:
    result = Result.load(BASELINES / "converge-default")
    paths = draw_standard_figures(result, tmp_path)
    assert names(paths) == ["timeline.png", "passes.png", "report.html"]
    assert_pngs(paths)


def test_standard_figures_sweep(tmp_path: Path) -> None:
    result = Result.load(BASELINES / "xbzrle-hot-set")
    paths = draw_standard_figures(result, tmp_path, report=False)
    assert names(paths) == ["timeline.png", "passes.png", "sweep.png", "xbzrle-cache.png"]
    assert_pngs(paths)


def test_standard_figures_fleet(tmp_path: Path) -> None:
    result = Result.load(BASELINES / "small-fleet")
    paths = draw_standard_figures(result, tmp_path, report=False)
    assert names(paths) == ["timeline.png", "passes.png", "fleet.png"]
    assert_pngs(paths)


def test_standard_figures_sweep_with_repeats(tmp_path: Path) -> None:
    """Many runs: no per-pass bars; the sweep, the cache curve and the downtime CDF."""
    runs = sweep_runs(repeats=3)
    for column in ("xbzrle_cache_miss_rate", "xbzrle_bytes", "xbzrle_encoding_rate",
                   "transferred_bytes"):
        runs[column] = 0.5
    samples = pd.concat([samples_frame(r) for r in runs["run_id"]], ignore_index=True)
    passes = pd.concat([passes_frame(r) for r in runs["run_id"]], ignore_index=True)
    result = Result(runs=runs, samples=samples, passes=passes)
    paths = draw_standard_figures(result, tmp_path, report=False)
    assert names(paths) == ["timeline.png", "sweep.png", "xbzrle-cache.png", "downtime-cdf.png"]
    assert_pngs(paths)


def test_standard_figures_leave_pyplot_alone(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    draw_standard_figures(Result.load(BASELINES / "converge-default"), tmp_path)
    assert plt.get_fignums() == before


def _passes(pages: list[int], starts: list[float]) -> pd.DataFrame:
    n = len(pages)
    return pd.DataFrame({"run_id": ["r"] * n, "pass": range(1, n + 1), "t_start_s": starts,
                         "t_end_s": [*starts[1:], starts[-1] + 0.1], "pages_sent": pages,
                         "bytes_sent": [p * 4104 for p in pages], "normal_pages": pages,
                         "zero_pages": [0] * n, "xbzrle_pages": [0] * n,
                         "xbzrle_records": [0] * n})


def _switch(t: float, detail: str = "guest stopped") -> pd.DataFrame:
    return pd.DataFrame({"run_id": ["r"], "t_s": [t], "endpoint": ["source"],
                         "event": ["switchover"], "detail": [detail]})


def test_pass_labels_name_the_final_sync_and_stop_and_copy() -> None:
    """The stop-and-copy pass starts at the switchover; the pass before it, opened by the last
    sync, sent nothing (the switchover test passed at once)."""
    passes = _passes([1000, 200, 0, 150], [0.0, 3.4, 3.7, 3.700004])
    assert pass_labels(passes, _switch(3.700004)) == ["1", "2", "final sync", "stop-and-copy"]
    assert pass_labels(passes) == ["1", "2", "3", "4"]  # no events: numbers
    sent = _passes([1000, 200, 50, 150], [0.0, 3.4, 3.7, 3.8])  # the last pre-copy pass sent
    assert pass_labels(sent, _switch(3.8)) == ["1", "2", "3", "stop-and-copy"]
    assert pass_labels(sent, _switch(3.8, "guest stopped (postcopy)"))[-1] == "post-copy"
    assert pass_labels(sent, _switch(9.0)) == ["1", "2", "3", "4"]  # no pass after the switch


def test_plot_passes_keeps_every_bar_and_names_the_last_two() -> None:
    passes = _passes([1000, 200, 0, 150], [0.0, 3.4, 3.7, 3.700004])
    ax = plot_passes(passes, ax=new_ax(), events=_switch(3.700004))
    assert len(ax.patches) == 3 * 4  # a bar per pass and kind, the empty pass too
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "final sync",
                                                           "stop-and-copy"]


def test_plot_passes_many_passes_still_names_stop_and_copy() -> None:
    n = 300
    pages = [100] * (n - 2) + [0, 40]
    passes = _passes(pages, [float(i) for i in range(n)])
    ax = plot_passes(passes, ax=new_ax(), events=_switch(float(n - 1)))
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[-2:] == ["final sync", "stop-and-copy"] and len(ticks) <= 14


def test_pass_labels_of_a_saved_run() -> None:
    result = Result.load(BASELINES / "converge-default")
    assert pass_labels(result.passes, result.events) == ["1", "2", "final sync", "stop-and-copy"]
