"""The Recorder: fixed columns per DESIGN §6, strict rows, dtypes fixed at the end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim.recorder import (
    EVENTS_COLUMNS,
    PASSES_COLUMNS,
    RUNS_COLUMNS,
    SAMPLES_COLUMNS,
    STRING_DTYPE,
    Recorder,
    empty_frame,
)
from sim.units import MiB

RUN_ROW = dict(
    seed=1, status="completed", failure_reason="", negotiation="qemu", capabilities="xbzrle",
    total_time_s=2.5, setup_time_s=0.01, downtime_s=0.12, expected_downtime_s=0.1,
    transferred_bytes=300 * MiB, precopy_bytes=290 * MiB, downtime_bytes=10 * MiB,
    normal_pages=70000, zero_pages=1000, xbzrle_pages=500, xbzrle_records=450, xbzrle_bytes=40000,
    xbzrle_cache_miss=20, xbzrle_cache_miss_rate=0.04, xbzrle_encoding_rate=12.5,
    xbzrle_overflow=0, plugin_pages=0, plugin_bytes=0, dirty_sync_count=4, mbps=1000.0, max_throttle_pct=0.0, guest_cpu_lost_s=0.0, postcopy_faults=0, postcopy_stall_s=0.0, pages_lost=0,
)

SAMPLE_ROW = dict(
    t_s=0.1, bandwidth_bytes_per_s=100.0 * MiB, threshold_bytes=30.0 * MiB,
    pending_bytes=200 * MiB, expected_downtime_s=2.0, dirty_pages_rate=1000.0,
    transferred_bytes=10 * MiB, throttle_pct=0.0, status="active",
)

PASS_ROW = {
    "pass": 1, "t_start_s": 0.0, "t_end_s": 1.0, "dirty_pages_at_sync": 65536,
    "pages_sent": 65536, "bytes_sent": 65536 * 4104, "zero_pages": 0, "xbzrle_pages": 0, "xbzrle_records": 0,
    "normal_pages": 65536, "throttle_pct": 0.0,
}


def test_column_names_are_design_section_6() -> None:
    """The column constants are exactly DESIGN §6's lists, in order."""
    assert RUNS_COLUMNS == (
        "run_id", "scenario", "seed", "status", "failure_reason", "negotiation", "capabilities",
        "total_time_s", "setup_time_s", "downtime_s", "expected_downtime_s", "transferred_bytes",
        "precopy_bytes", "downtime_bytes", "normal_pages", "zero_pages", "xbzrle_pages", "xbzrle_records",
        "xbzrle_bytes", "xbzrle_cache_miss", "xbzrle_cache_miss_rate", "xbzrle_encoding_rate",
        "xbzrle_overflow", "plugin_pages", "plugin_bytes", "dirty_sync_count", "mbps", "max_throttle_pct", "guest_cpu_lost_s", "postcopy_faults", "postcopy_stall_s", "pages_lost",
    )
    assert PASSES_COLUMNS == (
        "run_id", "pass", "t_start_s", "t_end_s", "dirty_pages_at_sync", "pages_sent",
        "bytes_sent", "zero_pages", "xbzrle_pages", "xbzrle_records", "normal_pages", "throttle_pct",
    )
    assert SAMPLES_COLUMNS == (
        "run_id", "t_s", "bandwidth_bytes_per_s", "threshold_bytes", "pending_bytes",
        "expected_downtime_s", "dirty_pages_rate", "transferred_bytes", "throttle_pct", "status",
    )
    assert EVENTS_COLUMNS == ("run_id", "t_s", "endpoint", "event", "detail")


def _recorder() -> Recorder:
    rec = Recorder("r1", "tiny")
    rec.event(0.0, "source", "MIGRATION", "setup")
    rec.event(0.5, "source", "MIGRATION_PASS", "1")
    rec.sample(**SAMPLE_ROW)
    rec.sample(**{**SAMPLE_ROW, "t_s": 0.2, "pending_bytes": 150 * MiB})
    rec.pass_row(**PASS_ROW)
    return rec


def test_frames_have_fixed_columns_and_dtypes() -> None:
    """Each table comes out in DESIGN order with int64/float64/string dtypes and run_id filled in."""
    rec = _recorder()
    rec.finish(**RUN_ROW)
    frames = rec.frames()
    assert list(frames) == ["runs", "passes", "samples", "events"]
    assert tuple(frames["runs"].columns) == RUNS_COLUMNS
    assert tuple(frames["passes"].columns) == PASSES_COLUMNS
    assert tuple(frames["samples"].columns) == SAMPLES_COLUMNS
    assert tuple(frames["events"].columns) == EVENTS_COLUMNS
    runs = frames["runs"]
    assert runs.loc[0, "run_id"] == "r1" and runs.loc[0, "scenario"] == "tiny"
    assert runs["seed"].dtype == np.int64
    assert runs["transferred_bytes"].dtype == np.int64
    assert runs["downtime_s"].dtype == np.float64
    assert runs["status"].dtype == STRING_DTYPE
    samples = frames["samples"]
    assert samples["pending_bytes"].dtype == np.int64
    assert samples["t_s"].dtype == np.float64
    assert list(samples["pending_bytes"]) == [200 * MiB, 150 * MiB]
    assert set(frames["events"]["run_id"]) == {"r1"}
    assert frames["passes"]["pass"].dtype == np.int64


def test_missing_column_is_a_key_error_naming_it() -> None:
    """A row without one of its table's columns is refused, naming the column."""
    rec = Recorder("r1", "tiny")
    row = dict(SAMPLE_ROW)
    del row["threshold_bytes"]
    with pytest.raises(KeyError, match="threshold_bytes"):
        rec.sample(**row)
    run = dict(RUN_ROW)
    del run["pages_lost"]
    with pytest.raises(KeyError, match="pages_lost"):
        rec.finish(**run)
    with pytest.raises(KeyError, match="t_end_s"):
        rec.pass_row(**{k: v for k, v in PASS_ROW.items() if k != "t_end_s"})


def test_unknown_column_is_refused() -> None:
    """A column that is not in the table is a KeyError too (swept params go through params=)."""
    rec = Recorder("r1", "tiny")
    with pytest.raises(KeyError, match="bogus"):
        rec.sample(**SAMPLE_ROW, bogus=1)
    with pytest.raises(KeyError, match=r"migration\.xbzrle_cache_size"):
        rec.finish(**RUN_ROW, **{"migration.xbzrle_cache_size": 1})


def test_params_go_after_seed_and_memory_match_last() -> None:
    """Swept parameters become columns right after seed; memory_match (exact mode) comes last."""
    rec = Recorder("r1", "tiny")
    params = {"migration.xbzrle_cache_size": 16 * MiB, "workload.writes_per_s": 1000.0}
    rec.finish(params=params, memory_match=True, **RUN_ROW)
    runs = rec.frames()["runs"]
    assert list(runs.columns) == [
        "run_id", "scenario", "seed", *params, *RUNS_COLUMNS[3:], "memory_match",
    ]
    assert runs.loc[0, "migration.xbzrle_cache_size"] == 16 * MiB
    assert runs["memory_match"].dtype == bool
    assert bool(runs.loc[0, "memory_match"]) is True


def test_param_clashing_with_a_column_is_refused() -> None:
    rec = Recorder("r1", "tiny")
    with pytest.raises(KeyError, match="status"):
        rec.finish(params={"status": 1}, **RUN_ROW)


def test_finish_once_and_frames_after_finish() -> None:
    """frames() needs the runs row; a second finish() is a bug in the engine."""
    rec = _recorder()
    with pytest.raises(RuntimeError, match="before finish"):
        rec.frames()
    rec.finish(**RUN_ROW)
    assert rec.finished
    with pytest.raises(RuntimeError, match="already finished"):
        rec.finish(**RUN_ROW)


def test_value_types_are_checked() -> None:
    """Integers stay integers: 1.5 in an int column is an error, 2.0 is accepted; None -> NaN / ''."""
    rec = Recorder("r1", "tiny")
    with pytest.raises(TypeError, match="pending_bytes"):  # at once: the row's origin
        rec.sample(**{**SAMPLE_ROW, "pending_bytes": 1.5})
    with pytest.raises(TypeError, match="status"):
        rec.sample(**{**SAMPLE_ROW, "status": 3})
    with pytest.raises(TypeError, match="t_s"):
        rec.sample(**{**SAMPLE_ROW, "t_s": "soon"})

    rec = Recorder("r1", "tiny")
    rec.sample(**{**SAMPLE_ROW, "pending_bytes": 2.0, "expected_downtime_s": None})
    rec.finish(**{**RUN_ROW, "downtime_s": None, "failure_reason": None, "seed": np.int64(3)})
    frames = rec.frames()
    assert frames["samples"].loc[0, "pending_bytes"] == 2
    assert math.isnan(frames["samples"].loc[0, "expected_downtime_s"])
    assert math.isnan(frames["runs"].loc[0, "downtime_s"])
    assert frames["runs"].loc[0, "failure_reason"] == ""

    rec = Recorder("r1", "tiny")
    rec.finish(**{**RUN_ROW, "mbps": "fast"})
    with pytest.raises(TypeError, match="mbps"):
        rec.frames()


def test_empty_tables_keep_their_dtypes() -> None:
    """A run with no passes still has a passes table with the right columns and dtypes."""
    rec = Recorder("r1", "tiny")
    rec.finish(**RUN_ROW)
    passes = rec.frames()["passes"]
    assert len(passes) == 0
    assert tuple(passes.columns) == PASSES_COLUMNS
    assert passes["bytes_sent"].dtype == np.int64
    assert passes["t_start_s"].dtype == np.float64
    pd.testing.assert_frame_equal(passes, empty_frame("passes"))


def test_every_contract_column_has_a_fixed_kind():
    from sim.recorder import COLUMNS, KINDS, RUNS_OPTIONAL_COLUMNS

    names = {c for cols in COLUMNS.values() for c in cols} | set(RUNS_OPTIONAL_COLUMNS)
    assert sorted(names - set(KINDS)) == []


# -- events.detail: one JSON object -----------------------------------------------------------

LEGACY_DETAILS = [  # migsim 0.3's plain-text details, as older result folders hold them
    ("MIGRATION", "active", {"status": "active"}),
    ("MIGRATION_PASS", "3", {"pass": 3}),
    ("dirty-sync", "reason=drain pending_before_bytes=31383552 threshold_bytes=37500000",
     {"reason": "drain", "pending_before_bytes": 31383552, "threshold_bytes": 37500000}),
    ("throttle", "auto-converge 20%", {"kind": "auto-converge", "pct": 20.0}),
    ("bytes-wasted", "395930794", {"bytes": 395930794}),
    ("fault", "link_down duration_s=2", {"kind": "link_down", "duration_s": 2}),
    ("encoder-stats", "zlib-xor pages=12 bytes=3400",
     {"encoder": "zlib-xor", "pages": 12, "bytes": 3400}),
    ("inband-offer", "xbzrle,multifd", {"capabilities": ["xbzrle", "multifd"]}),
    ("inband-accept", "", {"capabilities": []}),
    ("switchover", "guest stopped", {"message": "guest stopped"}),
    ("error", "Invalid argument: flags=0x40 x", {"message": "Invalid argument: flags=0x40 x"}),
    ("migrate-set-capabilities", '{"by":"operator","capabilities":[]}',
     {"by": "operator", "capabilities": []}),
]


@pytest.mark.parametrize(("event", "text", "fields"), LEGACY_DETAILS)
def test_event_detail_is_one_json_object(event: str, text: str, fields: dict) -> None:
    import json

    from sim.recorder import detail_fields, event_detail

    assert json.loads(event_detail(event, text)) == fields
    assert detail_fields(event, event_detail(event, text)) == fields  # read back: the same
    assert json.loads(event_detail(event, fields)) == fields  # a mapping is stored as given


def test_recorded_events_are_json_and_event_field_reads_them() -> None:
    import json

    from sim.recorder import event_field

    rec = Recorder("r", "s")
    rec.event(0.0, "source", "MIGRATION", "active")
    rec.event(0.1, "source", "dirty-sync", {"reason": "setup", "transferred_bytes": 0})
    rec.event(0.2, "source", "switchover", "guest stopped")
    rec.finish(**RUN_ROW)
    events = rec.frames()["events"]
    assert [json.loads(d) for d in events.detail] == [
        {"status": "active"}, {"reason": "setup", "transferred_bytes": 0},
        {"message": "guest stopped"}]
    assert list(event_field(events, "status")) == ["active", None, None]
    old = events.assign(detail=["active", "reason=setup transferred_bytes=0", "guest stopped"])
    assert list(event_field(old, "reason")) == [None, "setup", None]  # 0.3 results read alike
