"""Result: save/load round trip, byte-identical files, concat, summary."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.recorder import RUNS_COLUMNS, Recorder
from sim.result import Result
from sim.spec import Scenario
from sim.units import MiB


def make_result(run_id: str = "r0", scenario: str = "tiny", params: dict[str, Any] | None = None,
                status: str = "completed", seed: int = 1) -> Result:
    """A small but complete run: 20 samples, 2 passes, MIGRATION events up to completion."""
    rec = Recorder(run_id, scenario)
    rec.event(0.0, "source", "MIGRATION", "setup")
    rec.event(0.01, "source", "MIGRATION", "active")
    rec.event(0.01, "source", "MIGRATION_PASS", "1")
    for i in range(20):
        rec.sample(
            t_s=0.1 * i, bandwidth_bytes_per_s=100.0 * MiB, threshold_bytes=30.0 * MiB,
            pending_bytes=max(0, 200 - 12 * i) * MiB, expected_downtime_s=max(0, 200 - 12 * i) / 100,
            dirty_pages_rate=1000.0, transferred_bytes=i * 10 * MiB, throttle_pct=0.0,
            status="active",
        )
    rec.event(1.2, "source", "MIGRATION_PASS", "2")
    rec.pass_row(**{"pass": 1, "t_start_s": 0.01, "t_end_s": 1.2, "dirty_pages_at_sync": 51200,
                    "pages_sent": 51200, "bytes_sent": 51200 * 4104, "zero_pages": 10,
                    "xbzrle_pages": 0, "xbzrle_records": 0, "normal_pages": 51190, "throttle_pct": 0.0})
    rec.pass_row(**{"pass": 2, "t_start_s": 1.2, "t_end_s": 1.9, "dirty_pages_at_sync": 7000,
                    "pages_sent": 7000, "bytes_sent": 7000 * 300, "zero_pages": 0,
                    "xbzrle_pages": 6000, "xbzrle_records": 6000, "normal_pages": 1000, "throttle_pct": 0.0})
    rec.event(1.9, "source", "MIGRATION", "device")
    rec.event(2.0, "source", "MIGRATION", status)
    rec.finish(
        params=params, seed=seed, status=status,
        failure_reason="" if status == "completed" else "destination cannot decode xbzrle",
        negotiation="qemu", capabilities="xbzrle", total_time_s=2.0, setup_time_s=0.01,
        downtime_s=0.1, expected_downtime_s=0.09, transferred_bytes=230 * MiB,
        precopy_bytes=220 * MiB, downtime_bytes=10 * MiB, normal_pages=52190, zero_pages=10,
        xbzrle_pages=6000, xbzrle_records=6000, xbzrle_bytes=6000 * 289, xbzrle_cache_miss=100,
        xbzrle_cache_miss_rate=0.016, xbzrle_encoding_rate=14.2, xbzrle_overflow=3, plugin_pages=0, plugin_bytes=0,
        dirty_sync_count=3, mbps=960.0, guest_cpu_lost_s=0.0, postcopy_faults=0, postcopy_stall_s=0.0, max_throttle_pct=0.0, pages_lost=0,
    )
    return Result(**rec.frames(), scenario=Scenario(name=scenario, seed=seed))


def fake_scenario_module() -> types.ModuleType:
    """Stands in for sim.scenario: to_dict/load_scenario of name and seed only."""
    module = types.ModuleType("sim.scenario")

    def to_dict(scenario: Scenario) -> dict[str, Any]:
        return {"name": scenario.name, "seed": scenario.seed,
                "migration": {"capabilities": ("xbzrle",), "downtime_limit": "300ms"}}

    def load_scenario(path: Any, overrides: dict[str, Any] | None = None) -> Scenario:
        data = yaml.safe_load(Path(path).read_text())
        return Scenario(name=data["name"], seed=data["seed"], source_file=str(path))

    module.to_dict = to_dict  # type: ignore[attr-defined]
    module.load_scenario = load_scenario  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_scenario(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = fake_scenario_module()
    monkeypatch.setitem(sys.modules, "sim.scenario", module)
    return module


def assert_same_tables(a: Result, b: Result) -> None:
    for name in ("runs", "passes", "samples", "events"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_save_load_round_trip(tmp_path: Path, fake_scenario: types.ModuleType) -> None:
    """Every table comes back equal (values and dtypes), and so does the scenario."""
    result = make_result(params={"migration.xbzrle_cache_size": 16 * MiB})
    out = result.save(tmp_path / "res")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
                            "runs.csv", "scenario.yaml", "provenance.json"])
    loaded = Result.load(out)
    assert_same_tables(result, loaded)
    assert isinstance(loaded.scenario, Scenario)
    assert loaded.scenario.name == "tiny" and loaded.scenario.seed == 1
    text = (out / "scenario.yaml").read_text()
    assert yaml.safe_load(text)["migration"]["capabilities"] == ["xbzrle"]
    csv = pd.read_csv(out / "runs.csv")
    assert list(csv.columns)[:4] == ["run_id", "scenario", "seed", "migration.xbzrle_cache_size"]


def test_repeated_save_is_byte_identical(tmp_path: Path, fake_scenario: types.ModuleType) -> None:
    """Saving the same tables twice (and after a load) writes the same bytes."""
    result = make_result()
    a = result.save(tmp_path / "a")
    b = make_result().save(tmp_path / "b")
    c = Result.load(a).save(tmp_path / "c")
    for name in ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
                 "runs.csv", "scenario.yaml"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() == (c / name).read_bytes(), name
    result.save(a)  # overwriting in place leaves no temporary files behind
    assert not [p for p in a.iterdir() if p.name.startswith(".")]


def test_save_without_scenario_and_load_without_it(tmp_path: Path) -> None:
    """Tables alone are a valid results directory; with_scenario=False skips scenario.yaml."""
    result = make_result()
    result.scenario = None
    out = result.save(tmp_path)
    assert not (out / "scenario.yaml").exists()
    loaded = Result.load(out, with_scenario=False)
    assert loaded.scenario is None
    assert_same_tables(result, loaded)


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results directory"):
        Result.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"runs\.parquet"):
        Result.load(tmp_path / "empty")


def test_concat_orders_params_after_seed() -> None:
    """Concatenated runs keep DESIGN order; params of only some runs are NaN for the others."""
    a = make_result("a", params={"workload.writes_per_s": 1000.0})
    b = make_result("b", params={"workload.writes_per_s": 5000.0, "link.bandwidth": 1e9})
    c = make_result("c")
    both = Result.concat([a, b, c])
    assert list(both.runs["run_id"]) == ["a", "b", "c"]
    assert list(both.runs.columns[:5]) == [
        "run_id", "scenario", "seed", "workload.writes_per_s", "link.bandwidth",
    ]
    assert list(both.runs.columns[5:]) == list(RUNS_COLUMNS[3:])
    assert np.isnan(both.runs.loc[0, "link.bandwidth"])
    assert len(both.samples) == 60 and len(both.passes) == 6 and len(both.events) == 18
    assert both.runs["transferred_bytes"].dtype == np.int64
    assert isinstance(both.scenario, list) and len(both.scenario) == 3
    assert both.params == ["workload.writes_per_s", "link.bandwidth"]
    assert Result.concat([a]).scenario is a.scenario
    assert len(Result.concat([])) == 0


def test_mixed_type_param_column_saves(tmp_path: Path) -> None:
    """A swept value that is a number in one run and a string in another still saves."""
    both = Result.concat([make_result("a", params={"p": 1}), make_result("b", params={"p": "x"})])
    both.scenario = None
    loaded = Result.load(both.save(tmp_path), with_scenario=False)
    assert list(loaded.runs["p"]) == ["1", "x"]


def test_summary_and_repr() -> None:
    """summary() is a compact per-run view in readable units; failure_reason only when relevant."""
    ok = make_result("a")
    summary = ok.summary()
    assert list(summary.columns) == [
        "run_id", "scenario", "status", "total_s", "downtime_ms", "transferred_MiB", "syncs",
        "mbps", "xbzrle_pages", "throttle_pct",
    ]
    assert summary.loc[0, "downtime_ms"] == pytest.approx(100.0)
    assert summary.loc[0, "transferred_MiB"] == pytest.approx(230.0)
    both = Result.concat([ok, make_result("b", status="failed")])
    assert "failure_reason" in both.summary().columns
    text = repr(both)
    assert "2 runs" in text and "1 completed" in text and "1 failed" in text
    assert "40 samples" in text


def test_real_scenario_round_trip(tmp_path: Path) -> None:
    """With the real sim.scenario: a saved scenario loads back to the same YAML."""
    scenario_module = pytest.importorskip("sim.scenario")
    result = make_result()
    result.scenario = Scenario(name="tiny", seed=7)
    out = result.save(tmp_path)
    loaded = Result.load(out)
    assert isinstance(loaded.scenario, Scenario)
    assert scenario_module.to_dict(loaded.scenario) == scenario_module.to_dict(result.scenario)


def test_summary_writes_swept_values_with_units() -> None:
    """The table migsim prints: 8 MiB, not 8388608; a list as xbzrle,multifd, not a tuple."""
    runs = [make_result("a", params={"migration.xbzrle_cache_size": 8 * MiB,
                                     "migration.capabilities": ("xbzrle", "multifd"),
                                     "link.bandwidth": 125e6}),
            make_result("b", params={"migration.xbzrle_cache_size": 64 * MiB,
                                     "migration.capabilities": (),
                                     "link.bandwidth": 1.25e9})]
    summary = Result.concat(runs).summary()
    assert list(summary["migration.xbzrle_cache_size"]) == ["8 MiB", "64 MiB"]
    assert list(summary["migration.capabilities"]) == ["xbzrle,multifd", "none"]
    assert list(summary["link.bandwidth"]) == ["1 Gbit/s", "10 Gbit/s"]


def test_runs_csv_writes_list_values_comma_joined(tmp_path: Path) -> None:
    """runs.csv shows a swept list as xbzrle,multifd (as the capabilities column does), not
    "('xbzrle', 'multifd')"; the same after a round trip through Parquet (numpy arrays)."""
    both = Result.concat([make_result("a", params={"migration.capabilities": ("xbzrle", "multifd")}),
                          make_result("b", params={"migration.capabilities": ()})])
    first = both.save(tmp_path / "first")
    csv = pd.read_csv(first / "runs.csv", keep_default_na=False)
    assert list(csv["migration.capabilities"]) == ["xbzrle,multifd", ""]
    assert "(" not in (first / "runs.csv").read_text()
    again = Result.load(first, with_scenario=False).save(tmp_path / "again")
    assert (again / "runs.csv").read_bytes() == (first / "runs.csv").read_bytes()
