"""`migsim compare` and the regression suite: identical results pass, a changed model constant
fails and names the metric, bad input is one line and exit 2."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim import cli
from sim.compare import DRIFT_COLUMNS, compare_runs, compare_values
from sim.result import Result

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "tests" / "baseline"
SUITE = ROOT / "scenarios" / "regression"


def drift_csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "drift.csv")


# -- the comparison itself -------------------------------------------------------------------------


def test_compare_values_relative_to_the_baseline() -> None:
    assert compare_values(100, 104, 0.05) == (pytest.approx(0.04), True)
    assert compare_values(100, 94, 0.05) == (pytest.approx(-0.06), False)
    assert compare_values(0, 0, 0.05) == (0.0, True)
    assert compare_values(0, 1e-9, 0.05) == (math.inf, False)
    change, ok = compare_values(math.nan, math.nan, 0.05)
    assert math.isnan(change) and ok  # e.g. the downtime of a cancelled run
    assert compare_values(math.nan, 0.3, 0.05)[1] is False


def test_compare_runs_matches_by_run_and_guest() -> None:
    base = Result.load(BASELINES / "small-fleet", with_scenario=False).runs
    current = base.copy()
    current.loc[current["vm"] == "hot", "dirty_sync_count"] += 3
    current.loc[current["vm"] == "uniform", "status"] = "failed"
    current = current[current["vm"] != "old-dest"].iloc[::-1]  # order does not matter
    drift = compare_runs(base, current, 0.05)
    assert list(drift.columns) == list(DRIFT_COLUMNS)
    bad = drift[~drift["ok"]]
    assert set(zip(bad["run"], bad["metric"], strict=True)) == {
        ("small-fleet old-dest", "run"),
        ("small-fleet hot", "dirty_sync_count"),
        ("small-fleet uniform", "status"),
    }


# -- the command ----------------------------------------------------------------------------------


def test_identical_results_do_not_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = BASELINES / "small-fleet"
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(base), str(base), "-o", str(out)]) == 0
    assert "no drift" in capsys.readouterr().out
    drift = drift_csv(out)
    assert list(drift.columns) == list(DRIFT_COLUMNS)
    assert drift["ok"].all() and drift["run"].nunique() == 3
    for name in ("compare-total_time_s.png", "compare-downtime_s.png",
                 "compare-transferred_bytes.png", "compare-timeline.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_missing_directory_is_one_line_and_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = BASELINES / "converge-default"
    assert cli.main(["compare", str(base), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(tmp_path / "empty"), str(base)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["compare", str(base), str(base), "--rtol", "-1"]) == 2
    assert "--rtol" in capsys.readouterr().err


def test_a_run_missing_from_current_is_drift(tmp_path: Path) -> None:
    current = tmp_path / "current"
    shutil.copytree(BASELINES / "xbzrle-hot-set", current)
    result = Result.load(current, with_scenario=False)
    keep = result.runs["run_id"].iloc[:1]
    Result(*(t[t["run_id"].isin(keep)] for t in result.tables().values())).save(current)
    assert cli.main(["compare", str(BASELINES / "xbzrle-hot-set"), str(current),
                     "-o", str(tmp_path / "out")]) == 1
    drift = drift_csv(tmp_path / "out")
    missing = drift[drift["metric"] == "run"]
    assert list(missing["current"]) == ["missing"] and not missing["ok"].any()


def migsim_run(args: list[str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`migsim run` in a fresh interpreter, after ``prelude`` (e.g. a patched model constant)."""
    code = f"import sys\n{prelude}\nfrom sim.cli import main\nsys.exit(main({args!r}))"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_changed_model_constant_is_caught(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The bandwidth window (precopy.WINDOW_S, QEMU's BUFFER_DELAY) doubled: the switchover
    happens elsewhere, so the numbers drift; drift.csv, the printed table and a figure name them."""
    current = tmp_path / "current"
    run = migsim_run(["run", str(SUITE / "converge-default.yaml"), "-o", str(current),
                      "--no-plots"], prelude="import sim.engine.precopy\nsim.engine.precopy.WINDOW_S = 0.2")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(BASELINES / "converge-default"), str(current),
                     "-o", str(out)]) == 1
    printed = capsys.readouterr().out
    drift = drift_csv(out)
    drifted = set(drift.loc[~drift["ok"], "metric"])
    assert drifted and f"{len(drifted)} beyond rtol 0.05" in printed
    for metric in drifted:
        assert f"  {metric}  " in printed
        assert (out / f"compare-{metric}.png").is_file()


def test_a_changed_wire_constant_is_caught(tmp_path: Path) -> None:
    """A raw page header of 512 B instead of 8 B: more bytes on the wire for every page."""
    current = tmp_path / "current"
    run = migsim_run(["run", str(SUITE / "converge-default.yaml"), "-o", str(current),
                      "--no-plots", "--set", "wire.page_header=512B"])
    assert run.returncode == 0, run.stderr
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(BASELINES / "converge-default"), str(current),
                     "-o", str(out)]) == 1
    drift = drift_csv(out)
    assert "transferred_bytes" in set(drift.loc[~drift["ok"], "metric"])


# -- the regression suite -------------------------------------------------------------------------


def test_regression_suite_has_a_baseline_per_scenario() -> None:
    scenarios = sorted(SUITE.glob("*.yaml"))
    assert 4 <= len(scenarios) <= 6
    for path in scenarios:
        assert yaml.safe_load(path.read_text())["name"] == path.stem  # make regress relies on it
    baselines = sorted(p.name for p in BASELINES.iterdir() if p.is_dir())
    assert baselines == [p.stem for p in scenarios]
    for name in baselines:
        Result.load(BASELINES / name)  # tables and scenario load


def test_regression_scenarios_are_not_example_scenarios() -> None:
    """tests/test_scenarios.py runs scenarios/*.yaml only, not the regression subfolder."""
    examples = {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    assert not examples & {p.stem for p in SUITE.glob("*.yaml")}


# -- A/B of two scenarios -----------------------------------------------------------------------


def renamed(source: Path, out: Path, scenario: str, change: dict[str, float] | None = None) -> Path:
    """The saved result at ``source`` as if another scenario had produced it: every table's
    run_id renamed (``xbzrle-hot-set-...`` -> ``<scenario>-...``); ``change`` scales runs
    columns."""
    result = Result.load(source, with_scenario=False)

    def rename(frame: pd.DataFrame) -> pd.DataFrame:
        if "run_id" not in frame.columns:
            return frame
        return frame.assign(run_id=frame["run_id"].str.replace("xbzrle-hot-set", scenario))

    tables = {name: rename(frame) for name, frame in result.tables().items()}
    runs = tables["runs"].assign(scenario=scenario)
    for column, factor in (change or {}).items():
        runs[column] = runs[column] * factor
    tables["runs"] = runs
    return Result(**tables).save(out)


def test_compare_two_scenarios_by_position_or_by_swept_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two scenarios, the same sweep: by run_id nothing pairs (every run is missing on one
    side); by position or by swept values the runs pair up, and a 20% change is drift named by
    the values of the run it belongs to."""
    base = BASELINES / "xbzrle-hot-set"
    other = renamed(base, tmp_path / "b", "hot-set-b")
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(base), str(other), "-o", str(out)]) == 1
    assert set(drift_csv(out)["metric"]) == {"run"}
    for match in ("position", "params"):
        assert cli.main(["compare", str(base), str(other), "--match", match, "-o", str(out)]) == 0
        assert drift_csv(out)["ok"].all() and len(drift_csv(out)) > 10
    slower = renamed(base, tmp_path / "c", "hot-set-c", {"total_time_s": 1.2})
    capsys.readouterr()
    assert cli.main(["compare", str(base), str(slower), "--match", "params",
                     "-o", str(out)]) == 1
    bad = drift_csv(out)
    bad = bad[~bad["ok"]]
    assert set(bad["metric"]) == {"total_time_s"}
    assert set(bad["run"]) == {"xbzrle_cache_size=16 MiB", "xbzrle_cache_size=64 MiB"}
    assert bad["rel_change"].tolist() == pytest.approx([0.2, 0.2])
    assert cli.main(["compare", str(base), str(slower), "--match", "position",
                     "-o", str(out)]) == 1
    assert set(drift_csv(out).loc[lambda d: ~d["ok"], "run"]) == {
        "xbzrle-hot-set-xbzrle_cache_size=16MiB vs hot-set-c-xbzrle_cache_size=16MiB",
        "xbzrle-hot-set-xbzrle_cache_size=64MiB vs hot-set-c-xbzrle_cache_size=64MiB"}
    assert (out / "compare-timeline.png").stat().st_size > 0


def test_compare_by_params_needs_runs_told_apart(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = BASELINES / "xbzrle-hot-set"
    result = Result.load(base, with_scenario=False)
    runs = result.runs.assign(**{"migration.xbzrle_cache_size": 16 * 2**20})
    same = Result(**{**result.tables(), "runs": runs}).save(tmp_path / "same")
    assert cli.main(["compare", str(base), str(same), "--match", "params"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use --match position" in err
