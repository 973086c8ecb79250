"""The replay check of ``migsim validate --real-qemu --linux`` (sim/validation/linux_replay.py)
without QEMU: its judging, its replay scenarios on the repository's captures, and the case ids."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from sim.replay import fit
from sim.units import MiB
from sim.validation.command import _linux_ids
from sim.validation.linux_replay import (
    MAX_TIME_S,
    REPLAY_APPS,
    REPLAY_SETTINGS,
    TOLERANCE,
    XBZRLE_SLACK_PAGES,
    Setting,
    compare,
    real_quantities,
    replay_data,
    replay_quantities,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "scenarios" / "captures" / "synthetic-hotset"
REAL = {"status": "completed", "total_time_s": 8.0, "transferred_bytes": 1.2e8,
        "xbzrle_pages": 1000.0, "dirty_sync_count": 6.0}


def test_the_settings_are_the_issues() -> None:
    """Tight bandwidth with XBZRLE, auto-converge, another bandwidth; QEMU's defaults besides."""
    s = REPLAY_SETTINGS
    assert s["xbzrle-16MiB"].capabilities == ("xbzrle",)
    assert s["xbzrle-16MiB"].parameters() == (("max-bandwidth", 16 * MiB),
                                              ("xbzrle-cache-size", 64 * MiB))
    assert s["auto-converge-8MiB"].capabilities == ("auto-converge",)
    assert s["32MiB"].parameters() == (("max-bandwidth", 32 * MiB),)
    assert set(REPLAY_APPS) == {"redis", "memcached", "stress-ng"}


def rows_ok(setting: str, model: dict) -> dict[str, bool | None]:
    return {r.quantity: r.ok for r in compare("redis", REPLAY_SETTINGS[setting], REAL, model)}


def test_judged_within_15_percent_and_the_outcome_equal() -> None:
    inside = {k: (v * (1 + 0.9 * TOLERANCE) if isinstance(v, float) else v)
              for k, v in REAL.items()}
    ok = rows_ok("xbzrle-16MiB", inside)
    assert ok == {"status": True, "total_time_s": True, "transferred_bytes": True,
                  "xbzrle_pages": True, "dirty_sync_count": None}  # syncs: reported
    outside = dict(inside, total_time_s=8.0 * (1 + 1.1 * TOLERANCE), status="not completed")
    ok = rows_ok("xbzrle-16MiB", outside)
    assert ok["total_time_s"] is False and ok["status"] is False
    # XBZRLE pages: 15% or 64 pages; judged only with XBZRLE on
    ok = rows_ok("xbzrle-16MiB", dict(inside, xbzrle_pages=1000.0 + 1.2 * 150))
    assert ok["xbzrle_pages"] is False
    none = dict(REAL, xbzrle_pages=0.0)
    rows = compare("memcached", REPLAY_SETTINGS["xbzrle-16MiB"], none,
                   dict(none, xbzrle_pages=float(XBZRLE_SLACK_PAGES)))
    assert {r.quantity: r.ok for r in rows}["xbzrle_pages"] is True
    assert "xbzrle_pages" not in rows_ok("32MiB", inside)
    # a failed run: every judged row fails, with the error in the note
    rows = compare("redis", REPLAY_SETTINGS["32MiB"], {}, {}, "error: boom")
    assert all(r.ok is not True for r in rows) and all(r.note == "error: boom" for r in rows)
    assert {r.case for r in rows} == {"linux-replay-redis-32MiB"}


def test_real_quantities_from_query_migrate() -> None:
    """Outcome, total time and syncs from QEMU's query-migrate; bytes: the whole stream the
    relay counted; a cancelled run counts as not completed at the time limit."""
    summary = SimpleNamespace(ram_bytes=100_000_000, device_bytes=113_421)
    final = {"status": "completed", "total-time": 7630, "ram": {"dirty-sync-count": 6},
             "xbzrle-cache": {"pages": 496}}
    run = SimpleNamespace(final=final, capture=SimpleNamespace(
        parser=SimpleNamespace(summary=summary)))
    q = real_quantities(run)  # type: ignore[arg-type]
    assert q == {"status": "completed", "total_time_s": 7.63,
                 "transferred_bytes": 100_113_421.0, "xbzrle_pages": 496.0,
                 "dirty_sync_count": 6.0}
    run.final = {"status": "cancelled"}
    q = real_quantities(run)  # type: ignore[arg-type]
    assert q["status"] == "not completed" and q["total_time_s"] == MAX_TIME_S
    assert q["xbzrle_pages"] == 0.0 and math.isnan(q["dirty_sync_count"])
    # the counters of a cancelled run: the relay's last poll that had them
    run.capture.samples = [(1.0, {"status": "active", "ram": {"dirty-sync-count": 9},
                                  "xbzrle-cache": {"pages": 77}}),
                           (2.0, {"status": "cancelling"})]
    q = real_quantities(run)  # type: ignore[arg-type]
    assert (q["status"], q["xbzrle_pages"], q["dirty_sync_count"]) == ("not completed", 77.0, 9.0)


def test_the_replay_scenario_of_a_capture() -> None:
    """QEMU 7.2's settings, the capture's RAM and device bytes, exact content with pages.zst."""
    setting = REPLAY_SETTINGS["xbzrle-16MiB"]
    data = replay_data(EXAMPLE, setting, 1234, seed=2)
    assert data["vm"] == {"memory": fit(EXAMPLE).memory, "device_state": 1234,
                          "content": "exact"}
    assert data["workload"] == {"kind": "replay", "capture": str(EXAMPLE)}
    m = data["migration"]
    assert (m["max_bandwidth"], m["downtime_limit"], m["capabilities"], m["max_time"]) == (
        16 * MiB, 0.3, ["xbzrle"], MAX_TIME_S)
    assert data["seed"] == 2


def test_a_replay_runs_and_a_slower_link_takes_longer() -> None:
    """The shipped synthetic capture (4 MiB) replayed through the harness's own path, on the
    default host: at 1 MiB/s its 4 MiB take over 3 s; at 2 MiB/s about half."""
    slow = replay_quantities(EXAMPLE, Setting("1MiB", ("xbzrle",), 1 * MiB, 1 * MiB), 0, None,
                             seeds=(1, 2))
    fast = replay_quantities(EXAMPLE, Setting("2MiB", ("xbzrle",), 2 * MiB, 1 * MiB), 0, None,
                             seeds=(1, 2))
    assert slow["status"] == fast["status"] == "completed"
    assert slow["total_time_s"] > 3.0
    assert fast["total_time_s"] == pytest.approx(slow["total_time_s"] / 2, rel=0.3)
    assert slow["xbzrle_pages"] > 0
    assert slow["transferred_bytes"] > 0.5 * 4 * MiB


def test_a_capture_given_relative_to_the_working_folder_replays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make validate` writes to a relative folder (`-o ci-artifacts/validation`): the replay
    scenario's file sits inside the capture, so its `capture:` must not be read relative to it."""
    import shutil

    shutil.copytree(EXAMPLE, tmp_path / "out" / "redis" / "capture-defaults")
    monkeypatch.chdir(tmp_path)
    relative = Path("out/redis/capture-defaults")
    assert replay_data(relative, REPLAY_SETTINGS["32MiB"], 0, seed=1)["workload"]["capture"] == (
        str(tmp_path / relative))
    q = replay_quantities(relative, Setting("2MiB", ("xbzrle",), 2 * MiB, 1 * MiB), 0, None,
                          seeds=(1,))
    assert q["status"] == "completed"


def test_the_case_ids() -> None:
    ids = _linux_ids()
    assert "linux-replay-redis-xbzrle-16MiB" in ids and "linux-redis" in ids
    assert len([i for i in ids if i.startswith("linux-replay-")]) == 9
