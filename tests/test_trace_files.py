"""Trace files are checked when the scenario loads: bad rows are ``file:row: column: problem``,
files that are not regular or too large are refused (issue 20)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import sim.workloads as workloads
from sim import cli
from sim.errors import ScenarioError
from sim.scenario import load_scenario

PAGES = 16 * 1024 * 1024 // 4096


def scenario_for(tmp_path: Path, trace: Path | str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: tr\nvm: {{memory: 16MiB}}\nworkload: {{kind: trace, trace: '{trace}'}}\n")
    return path


@pytest.mark.parametrize(("rows", "line", "column", "problem"), [
    ("0.0,1\n0.1,nan\n", 3, "page", "must be a page number"),
    ("0.0,1\n0.1,-3\n", 3, "page", "must be >= 0"),
    ("0.0,1.5\n", 2, "page", "must be an integer"),
    (f"0.0,1\n0.2,2\n0.3,{PAGES}\n", 4, "page", f"below the guest's {PAGES} pages"),
    ("0.0,1\nnan,2\n", 3, "t_s", "finite"),
    ("-1.0,1\n", 2, "t_s", "must be >= 0"),
    ("0.5,1\n0.2,2\n", 3, "t_s", "must not decrease"),
    ("0.0,x\n", 2, "page", "must be a page number"),
])
def test_bad_csv_rows_name_file_row_and_column(tmp_path: Path, rows: str, line: int, column: str,
                                              problem: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,page\n" + rows)
    with pytest.raises(ScenarioError) as err:
        load_scenario(scenario_for(tmp_path, trace))
    assert str(err.value).startswith(f"{trace}:{line}: {column}: ")
    assert problem in str(err.value)


def test_bad_parquet_row_is_counted_from_one(tmp_path: Path) -> None:
    trace = tmp_path / "t.parquet"
    pd.DataFrame({"t_s": [0.0, 0.1, 0.2], "page": [1, 2, -1]}).to_parquet(trace)
    with pytest.raises(ScenarioError, match=r"t\.parquet:3: page: must be >= 0"):
        load_scenario(scenario_for(tmp_path, trace))


def test_a_good_trace_replays_its_pages_unchanged(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,page\n0.0,5\n0.1,4095\n0.1,7\n")
    times, pages = workloads.read_trace(trace, PAGES)
    assert times.tolist() == [0.0, 0.1, 0.1] and pages.tolist() == [5, 4095, 7]


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("time,page\n0.0,1\n")
    with pytest.raises(ScenarioError, match=r"t\.csv: t_s: missing column"):
        load_scenario(scenario_for(tmp_path, trace))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_migsim_check_refuses_a_trace_that_is_not_a_regular_file(
        tmp_path: Path, special: str, capsys: pytest.CaptureFixture[str]) -> None:
    if special == "fifo":
        target = tmp_path / "fifo.csv"
        os.mkfifo(target)
    elif special == "folder":
        target = tmp_path / "dir.csv"
        target.mkdir()
    else:
        target = Path(special)
    assert cli.main(["check", str(scenario_for(tmp_path, target))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a regular file" in err[0] and str(target) in err[0]


def test_a_trace_over_the_size_limit_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,page\n" + "0.0,1\n" * 100)
    monkeypatch.setattr(workloads, "MAX_TRACE_BYTES", 100)
    with pytest.raises(ScenarioError, match="at most 100"):
        load_scenario(scenario_for(tmp_path, trace))
    monkeypatch.setattr(workloads, "MAX_TRACE_BYTES", 1 << 30)
    monkeypatch.setattr(workloads, "MAX_TRACE_ROWS", 50)
    monkeypatch.setattr(workloads, "TRACE_CHUNK_ROWS", 30)
    with pytest.raises(ScenarioError, match="more than 50 rows"):
        load_scenario(scenario_for(tmp_path, trace))
