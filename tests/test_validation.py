"""The validation suite (sim/validation): its case data, its judging, its tables and its command.

The model cases themselves run here (all of them, well under a minute); the real-QEMU smoke set
is in tests/test_real_qemu.py (slow).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.guest import Guest
from sim.recorder import EVENTS_COLUMNS, PASSES_COLUMNS, RUNS_COLUMNS, SAMPLES_COLUMNS
from sim.scenario import from_dict
from sim.units import MiB
from sim.validation import command
from sim.validation.cases import CaseError, Check, load_case, load_cases
from sim.validation.guest import PARAMS_OFFSET, GuestParams, assemble, patch
from sim.validation.qemu import Measurement
from sim.validation.qemu_tables import Observed, downtime_s, tables
from sim.validation.real import load_real_cases, scenario_data
from sim.validation.suite import failures, formula_agreement, run_model_case

CASES = load_cases()


def test_case_files_load_with_unique_ids_and_sources():
    ids = [c.id for c in CASES] + [c.id for c in load_real_cases()]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 10 and len(load_real_cases()) >= 6
    for case in CASES:
        assert case.source and case.checks and case.runs
        assert any(c.judged for c in case.checks)


@pytest.mark.parametrize("case", [c for c in CASES if c.formula], ids=lambda c: c.id)
def test_expected_values_are_the_formulas(case):
    """Every literal expected value that a formula covers is that formula's value: exact ones to
    1e-9, published (rounded) ones to the 4 significant digits they are printed with."""
    agreement = formula_agreement(case)
    assert agreement, f"{case.id}: the formula covers no check"
    for check, written, derived in agreement:
        exact = (check.rule == "abs" and check.tol == 0) or (check.rule == "rel"
                                                            and check.tol <= 1e-6)
        assert written == pytest.approx(derived, rel=1e-9 if exact else 5e-4, abs=1e-12), \
            check.quantity


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_model_case_within_tolerance(case):
    rows = run_model_case(case)
    assert len(rows) == len(case.checks)
    assert not failures(rows), [(r.quantity, r.expected, r.model, r.note) for r in failures(rows)]


@pytest.mark.parametrize("rule,tol,expected,model,ok", [
    ("rel", 0.1, 10.0, 10.9, True), ("rel", 0.1, 10.0, 11.1, False),
    ("abs", 1, 5, 6, True), ("abs", 1, 5, 7, False),
    ("at_least", 0, 100, 150, True), ("at_least", 0, 100, 99, False),
    ("at_most", 0, 0.003, 0.001, True), ("at_most", 0, 0.003, 0.004, False),
    ("equals", 0, "completed", "completed", True), ("equals", 0, "completed", "failed", False),
    ("rel", 0.1, 1.0, math.nan, False), ("rel", 0.1, 1.0, None, False),
    ("report", 0, 1.0, 5.0, None),
])
def test_check_rules(rule, tol, expected, model, ok):
    assert Check("q", rule, expected, tol).judge(expected, model)[1] is ok


@pytest.mark.parametrize("model,ok", [(0.5, True), (0.1, True), (1.0, True), (0.09, False),
                                      (1.01, False), (math.nan, False)])
def test_a_range_holds_both_bounds(model, ok):
    check = Check("q", "between", 0.1, upper=1.0)
    assert check.judge(0.1, model)[1] is ok
    assert check.tolerance_text() == "in [0.1, 1]"


def _bounds_case(tmp_path, bounds: str):
    path = tmp_path / "bounds.yaml"
    path.write_text("id: x\ntitle: t\nsource: s\nscenario: {}\n"
                    f"checks: [{{quantity: downtime_s, {bounds}}}]\n")
    return path


def test_a_one_sided_bound_is_refused(tmp_path):
    """A lone at_most passed a value 800x under it: every bound needs its other side."""
    for bounds in ("at_most: 0.00317", "at_least: 100"):
        with pytest.raises(CaseError, match="bounds.yaml.*needs its other side"):
            load_case(_bounds_case(tmp_path, bounds))
    with pytest.raises(CaseError, match="at_least ≤ at_most"):
        load_case(_bounds_case(tmp_path, "at_least: 2, at_most: 1"))
    (check,) = load_case(_bounds_case(tmp_path, "at_least: 1.8e-5, at_most: 0.00317")).checks
    assert (check.rule, check.expected, check.upper) == ("between", 1.8e-5, 0.00317)


def test_no_case_bound_is_one_sided_or_wider_than_three_decades():
    """The ranges in the shipped cases are derived, not 'anything under 3 ms': each spans at
    most a factor 2000 (a lower bound of 0 says 'possibly nothing', and its upper bound is
    what is judged)."""
    for case in CASES:
        for check in case.checks:
            assert check.rule not in ("at_least", "at_most"), (case.id, check.quantity)
            if check.rule == "between" and float(check.expected or 0) > 0:
                assert float(check.upper or 0) / float(check.expected) <= 2000, check.quantity


def test_bounds_have_no_relative_error():
    assert math.isnan(Check("q", "at_least", 100).judge(100, 4000)[0])


def test_malformed_case_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: t\nsource: s\nscenario: {}\n"
                   "checks: [{quantity: downtime_s, expected: 1, rel: 0.1, abs: 1}]\n")
    with pytest.raises(CaseError, match="bad.yaml.*exactly one"):
        load_case(bad)
    bad.write_text("id: x\ntitle: t\nsource: s\nqemu: {}\n"
                   "checks: [{quantity: status, expected: completed, equals: true}]\n")
    with pytest.raises(CaseError, match="from QEMU"):
        load_case(bad)


def _write_case(directory: Path, expected: float) -> None:
    (directory / "idle.yaml").write_text(f"""
id: tiny-idle
title: an idle 64 MiB guest over 64 MiB/s takes 1 s
source: arithmetic
scenario:
  vm: {{memory: 64MiB, device_state: 0B}}
  link: {{bandwidth: 64MiB/s}}
  migration: {{max_bandwidth: 0}}
  wire: {{page_header: 0B, chunk_overhead: 0B}}
  source_cpu: {{per_page: 0s, scan_rate: 0, copy_rate: 0, xbzrle_rate: 0, xbzrle_per_byte: 0s,
               sync_per_page: 0s}}
checks:
  - {{quantity: total_time_s, expected: {expected}, rel: 0.01}}
""")


@pytest.mark.parametrize("expected,status", [(1.0, 0), (2.0, 1)])
def test_command_writes_csv_and_figure_and_exits_1_out_of_tolerance(
        tmp_path, monkeypatch, capsys, expected, status):
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    _write_case(cases_dir, expected)
    monkeypatch.setattr(command, "load_cases", lambda: load_cases(cases_dir))
    assert command.main(output=tmp_path / "out") == status
    out = capsys.readouterr().out
    assert "tiny-idle" in out and "rel error" in out
    csv = pd.read_csv(tmp_path / "out" / "validation.csv")
    assert list(csv.columns[:7]) == ["case", "quantity", "expected", "model", "rel_error",
                                     "tolerance", "ok"]
    assert csv.loc[0, "model"] == pytest.approx(1.0, rel=0.01)
    assert (tmp_path / "out" / "validation.png").stat().st_size > 10_000
    if status:
        assert "out of tolerance: tiny-idle: total_time_s" in out


def test_cli_validate_subcommand(tmp_path, capsys):
    from sim.cli import main

    assert main(["validate", "--case", "v2-*", "-o", str(tmp_path)]) == 0
    assert "v2-geometric-300ms" in capsys.readouterr().out
    assert (tmp_path / "validation.csv").exists()


def _observed() -> Observed:
    """A converging migration as QMP would show it: three samples, two passes, the events."""
    ram = {"transferred": 0, "remaining": 8 * MiB, "total": 32 * MiB, "duplicate": 10,
           "normal": 0, "dirty-sync-count": 1, "mbps": 0.0, "precopy-bytes": 0,
           "downtime-bytes": 0, "dirty-pages-rate": 0}
    later = {**ram, "transferred": 4 * MiB, "normal": 1000, "dirty-sync-count": 2, "mbps": 268.4}
    final = {"status": "completed", "total-time": 300, "downtime": 12, "setup-time": 2,
             "ram": {**later, "transferred": 5 * MiB, "normal": 1200, "dirty-sync-count": 3,
                     "downtime-bytes": MiB}}
    obs = Observed("r", t0=100.0, capabilities=("xbzrle",), memory_match=True)
    obs.samples = [(100.1, {"status": "active", "expected-downtime": 300, "ram": ram}),
                   (100.2, {"status": "active", "expected-downtime": 250, "ram": later}),
                   (100.3, final)]
    obs.passes = [(100.0, 1, {"status": "active", "ram": ram}),
                  (100.15, 2, {"status": "active", "ram": later})]
    obs.events = [(100.0, "source", "MIGRATION", "active"), (100.15, "source", "MIGRATION_PASS", "2")]
    obs.command(99.9, "source", "migrate", {"uri": "tcp:127.0.0.1:1"})
    obs.final, obs.end_t = final, 100.3
    return obs


def test_qemu_tables_use_the_simulators_columns():
    result = tables(_observed(), "real")
    assert list(result.runs.columns) == list(RUNS_COLUMNS) + ["memory_match"]
    assert list(result.passes.columns) == list(PASSES_COLUMNS)
    assert list(result.samples.columns) == list(SAMPLES_COLUMNS)
    assert list(result.events.columns) == list(EVENTS_COLUMNS)
    run = result.runs.iloc[0]
    assert (run.status, run.total_time_s, run.downtime_s) == ("completed", 0.3, 0.012)
    assert (run.transferred_bytes, run.dirty_sync_count, run.capabilities) == (5 * MiB, 3, "xbzrle")
    assert run.expected_downtime_s == 0.25 and bool(run.memory_match)
    assert result.samples.threshold_bytes.isna().all()  # QEMU does not report it
    assert list(result.passes.bytes_sent) == [4 * MiB, MiB]
    assert list(result.passes.normal_pages) == [1000, 200]
    assert result.events.t_s.iloc[0] == pytest.approx(-0.1)  # `migrate` before t0 is negative


def test_qemu_72_postcopy_downtime_of_its_monotonic_clock_is_its_0_ms():
    """QEMU 7.2 reports a post-copy switchover that rounded to 0 ms as its monotonic clock
    (migration_calculate_complete; seen here: 2 472 s in a 1.7 s migration): a downtime above
    the total time is read as the 0 ms QEMU measured; any other downtime is kept."""
    assert downtime_s({"downtime": 2472000, "total-time": 1700}) == 0.0
    assert downtime_s({"downtime": 12, "total-time": 1700}) == 0.012
    assert downtime_s({"downtime": 1700, "total-time": 1700}) == 1.7
    obs = _observed()
    obs.final["downtime"] = 2472000
    assert tables(obs, "real").runs.iloc[0].downtime_s == 0.0


def test_real_scenario_comes_from_the_case_and_the_measured_guest():
    case = next(c for c in load_real_cases() if c.id == "qemu-xbzrle-tight")
    # zero pages below 1 MiB in the guest's RAM and after it in QEMU's firmware blocks
    m = Measurement(Observed("x"), ram_total=32 * MiB + 532480, zero_pages=222,
                    touches_per_s=3950.0, wall_s=1.0, qemu_version="7.2",
                    touches_at_migrate=3 * 2048 + 700,
                    zero_ranges=((2, 220), (230, 2), (8193, 49), (8288, 32)))
    data = scenario_data(case, m)
    pages = (32 * MiB + 532480) // 4096
    assert data["vm"] == {"memory": pages * 4096, "device_state": 0, "zero_regions": [
        {"offset": 2 * 4096, "size": 220 * 4096}, {"offset": 230 * 4096, "size": 2 * 4096},
        {"offset": 8193 * 4096, "size": 49 * 4096}, {"offset": 8288 * 4096, "size": 32 * 4096}]}
    # the scenario loads, and its guest has those pages zero
    sc = from_dict(data, file="case.yaml")
    zero = Guest(sc.vm, np.random.default_rng(0)).zero
    assert zero.sum() == 303 and zero[2:222].all() and zero[8288:8320].all()
    assert not zero[:2].any() and not zero[222:230].any()
    w = data["workload"]
    assert (w["kind"], w["writes_per_s"], w["write_size"]) == ("sequential", 3950.0, 16)
    assert w["region"] == {"offset": 16 * MiB, "size": 8 * MiB}
    # the guest's sweep (2048 touches of a page each) had got 700 pages in at `migrate`
    assert w["position"] == 700 * 4096
    assert data["migration"]["capabilities"] == ["xbzrle"]
    assert data["migration"]["max_bandwidth"] == 8 * MiB
    # no hand-set loopback link: the host's pace comes from a calibrated profile (with_host)
    assert "link" not in data
    assert "variants" not in data


def test_real_cases_carry_multifd_post_copy_live_changes_and_throttle_steps():
    """The case keys the harness gives QEMU reach the model as the same settings: QEMU's
    parameters by name, a post-copy switch at QEMU's pass number (whose first is the setup sync,
    which the model does not count), and the validation guest paced by its PIT tick."""
    from sim.validation.real import settings

    m = Measurement(Observed("x"), ram_total=64 * MiB, zero_pages=0, touches_per_s=4000.0,
                    wall_s=1.0, qemu_version="7.2")
    cases = {c.id: c for c in load_real_cases()}
    multifd = scenario_data(cases["qemu-multifd"], m)["migration"]
    assert (multifd["capabilities"], multifd["multifd_channels"]) == (["multifd"], 2)
    assert settings(cases["qemu-multifd"]).parameters == (("multifd-channels", 2),)
    post = cases["qemu-postcopy"]
    assert settings(post).postcopy_at_pass == 3 and settings(post).postcopy
    assert scenario_data(post, m)["migration"]["postcopy_after_passes"] == 2
    change = settings(cases["qemu-bandwidth-change"]).changes
    assert change == ((4.0, (("max-bandwidth", 64 * MiB),)),)
    steep = scenario_data(cases["qemu-auto-converge-steep"], m)["migration"]
    assert (steep["cpu_throttle_initial"], steep["cpu_throttle_increment"]) == (30, 20)
    tick = scenario_data(cases["qemu-auto-converge"], m)["workload"]["timer_tick"]
    assert tick == pytest.approx(0.01, rel=0.01)  # 4000 touches/s = 40 a tick at 100 ticks/s


def test_a_live_change_reaches_the_model_at_its_time():
    """``changes`` are issued to the model as to QEMU: migrate-set-parameters on the source that
    long after ``migrate``; an 8 MiB/s migration of an idle 64 MiB guest raised to 64 MiB/s at 2 s
    sends 16 MiB in the first 2 s, then the rest eight times as fast, down to what the link sends
    in the downtime (max-bandwidth x downtime-limit: 2.4 MiB at 8 MiB/s, 19.2 MiB at 64 MiB/s)."""
    from sim.validation.real import simulate

    sc = from_dict({"name": "live", "vm": {"memory": "64MiB", "zero_fraction": 0,
                                           "device_state": 0},
                    "link": {"bandwidth": "1GiB/s"},
                    "migration": {"max_bandwidth": "8MiB/s"}})
    slow = simulate(sc).runs.iloc[0].total_time_s
    raised = simulate(sc, [(2.0, (("max-bandwidth", 64 * MiB),))]).runs.iloc[0].total_time_s
    assert slow == pytest.approx((64 - 2.4) / 8, rel=0.02)
    # the threshold follows the measured bandwidth, which needs a window or two to see the rise
    assert 2.0 + (48 - 19.2) / 64 <= raised <= 2.0 + 48 / 64


def test_guest_pacing_stays_at_or_below_100_ticks_per_second():
    for rate in (50.0, 1000.0, 4000.0, 8000.0, 12345.0):
        g = GuestParams(base=16 * MiB, pages=16, touches_per_s=rate)
        per_tick, divisor = g.pacing()
        assert 1193182 / divisor <= 100.5
        assert g.actual_touches_per_s == pytest.approx(rate, rel=0.001)
    with pytest.raises(ValueError):
        GuestParams(base=16 * MiB + 1, pages=16)


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None,
                    reason="GNU binutils not installed")
def test_guest_assembles_to_a_boot_sector_with_patchable_parameters():
    sector = assemble()
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    patched = patch(sector, GuestParams(base=16 * MiB, pages=256, stride=8192, bytes_per_touch=8,
                                        touches_per_s=2000, fill_end=64 * MiB))
    block = patched[PARAMS_OFFSET:PARAMS_OFFSET + 32]
    assert block[:4] == b"MGSG"
    words = [int.from_bytes(block[i:i + 4], "little") for i in range(4, 32, 4)]
    assert words == [16 * MiB, 128, 8192, 8, 20, 11932, 64 * MiB]
    assert patched[:PARAMS_OFFSET] == sector[:PARAMS_OFFSET]


def test_real_qemu_is_skipped_with_a_message_when_qemu_is_missing(tmp_path, monkeypatch):
    import sim.validation.qemu as qemu

    monkeypatch.setattr(qemu, "find_qemu", lambda: None)
    lines: list[str] = []
    assert command._real_rows([], tmp_path, lines.append) == []
    assert lines == ["real QEMU: skipped: qemu-system-x86_64 not found "
                     "(apt-get install --no-install-recommends qemu-system-x86)"]


def test_validate_with_no_case_files_exits_2(tmp_path, monkeypatch, capsys):
    """An installation without the case files validates nothing: that is a failure, not a pass."""
    monkeypatch.setattr(command, "load_cases", lambda: load_cases(tmp_path))
    assert command.main(output=tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("migsim validate: no validation case in ")
    assert len(captured.err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("real_qemu", [False, True])
def test_cli_validate_case_matching_nothing_exits_2(tmp_path, capsys, real_qemu):
    from sim.cli import main

    args = ["validate", "--case", "no-such-*", "-o", str(tmp_path / "out")]
    assert main(args + (["--real-qemu"] if real_qemu else [])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("migsim validate: --case no-such-*: matches none of the cases (")
    assert "v2-geometric-300ms" in lines[0]
    assert ("qemu-converging-default" in lines[0]) == real_qemu
    assert not (tmp_path / "out").exists()


def test_a_host_profile_goes_under_the_case_model_keys(tmp_path):
    """run_real_case's host: the profile's sections replace the defaults, the case's own model
    keys (a variant's source_cpu) win, as host: FILE does in a scenario."""
    from sim.spec import Scenario
    from sim.validation.real import with_host

    host = tmp_path / "host.yaml"
    host.write_text("accelerator: tcg\nsource_cpu: {per_page: 3us}\nlink: {bandwidth: 100Gbit/s}\n")
    plain = with_host(Scenario(), host, {})
    assert plain.accelerator == "tcg" and plain.source_cpu.per_page == pytest.approx(3e-6)
    assert plain.link.bandwidth == pytest.approx(100e9 / 8)
    own = with_host(Scenario(), host, {"source_cpu": {"per_page": 0}})
    assert own.source_cpu == Scenario().source_cpu
    assert with_host(Scenario(), None, {}) == Scenario()


def test_rel_or_within_takes_the_looser_of_the_two():
    """"Downtime within 50% or 1.5 ms": 3 ms against 1 ms fails both, 2.4 ms passes on the
    absolute slack, 60 ms against 50 ms on the relative one; or_within belongs to rel only."""
    from sim.validation.cases import CaseError, _check

    check = _check({"quantity": "downtime_s", "rel": 0.5, "or_within": 0.0015}, "x")
    assert check.judge(0.001, 0.003)[1] is False
    assert check.judge(0.001, 0.0024)[1] is True
    assert check.judge(0.050, 0.060)[1] is True
    assert "or ±0.0015" in check.tolerance_text()
    with pytest.raises(CaseError, match="or_within goes with rel"):
        _check({"quantity": "downtime_s", "abs": 1, "or_within": 0.1}, "x")


def test_repeated_real_runs_are_judged_on_their_means():
    """``validate --repeat N``: numbers are averaged over the runs, an outcome is the most
    common one, a run without the value does not count."""
    from sim.validation.real import _mean

    assert _mean([0.010, 0.009, 0.012]) == pytest.approx(0.010333, rel=1e-4)
    assert _mean([4, 5, None]) == 4.5
    assert _mean(["completed", "cancelled", "completed"]) == "completed"
    assert _mean([None, None]) is None


@pytest.mark.parametrize("n", ["0", "21"])
def test_a_repeat_out_of_range_is_one_line(n, capsys):
    from sim.cli import main

    assert main(["validate", "--real-qemu", "--repeat", n]) == 2
    err = capsys.readouterr().err
    assert "--repeat" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
