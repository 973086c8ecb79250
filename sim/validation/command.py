"""``migsim validate``: run the validation cases, print the table, write the CSV and the figure.

Exit status 1 when any judged quantity is out of tolerance, else 0. Real-QEMU cases run only with
``--real-qemu``; without ``qemu-system-x86_64`` (or GNU ``as``/``ld``) they are skipped with a
message, which is not a failure.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .cases import CASES_DIR, Case, load_cases
from .report import draw, format_table, write_csv
from .suite import Row, failures, judge, run_cases

EXIT_NO_CASE = 2  # nothing to validate is a usage error, never a pass
DEFAULT_OUTPUT = Path("results") / "validation"
CSV_NAME = "validation.csv"
FIGURE_NAME = "validation.png"


def _selected(cases: list[Case], patterns: Sequence[str]) -> list[Case]:
    if not patterns:
        return cases
    return [c for c in cases if any(fnmatch.fnmatch(c.id, p) for p in patterns)]


def _progress(out: Callable[[str], None]) -> Callable[[Case, list[Row], float], None]:
    def report(case: Case, rows: list[Row], wall_s: float) -> None:
        judged = [r for r in rows if r.ok is not None]
        good = sum(1 for r in judged if r.ok)
        out(f"  {case.id}: {good}/{len(judged)} within tolerance ({wall_s:.1f} s)")
    return report


def _real_rows(patterns: Sequence[str], outdir: Path, out: Callable[[str], None],
               host: Path | None = None, repeat: int = 1, trace: bool = False) -> list[Row]:
    from sim.errors import ScenarioError

    from .qemu import QemuError, congestion_note, find_qemu, memory_note
    from .real import PHASES_CSV, load_real_cases, run_real_case

    binary = find_qemu()
    if binary is None:
        out("real QEMU: skipped: qemu-system-x86_64 not found "
            "(apt-get install --no-install-recommends qemu-system-x86)")
        return []
    if importlib.util.find_spec("qemu") is None or importlib.util.find_spec("qemu.qmp") is None:
        out("real QEMU: skipped: the qemu.qmp client is not installed (pip install qemu.qmp)")
        return []
    if shutil.which("as") is None or shutil.which("ld") is None:
        out("real QEMU: skipped: GNU as/ld not found (apt-get install binutils)")
        return []
    cases = _selected(load_real_cases(), patterns)
    if not cases:
        return []
    for note in (memory_note(), congestion_note()):
        if note is not None:
            out(note)
    (outdir / PHASES_CSV).unlink(missing_ok=True)  # rows are appended run by run
    if host is None:
        # Measure this host first (a profile fitted only on calibration runs, never on the
        # cases judged here), then predict the cases with it.
        from .calibrate import CalibrationError, calibrate

        host = outdir / "host.yaml"
        out(f"calibrating this host (migsim calibrate --real-qemu -o {host}):")
        try:
            calibrate(host, True, None, log=out)
        except (QemuError, CalibrationError) as err:
            out(f"real QEMU: calibration failed: {err}")
            return [judge(case, check, None, None, note=f"calibration failed: {err}")
                    for case in cases for check in case.checks]
    else:
        out(f"host profile: {host}")

    def runner(case: Case) -> list[Row]:
        try:
            return run_real_case(case, outdir, binary, log=out, host=host, repeat=repeat,
                                 trace=trace)
        except (QemuError, ScenarioError) as err:  # a failed validation, not a crash
            return [judge(case, check, None, None, note=f"error: {err}") for check in case.checks]

    out(f"real QEMU ({binary}{f'; QEMU and model: mean of {repeat} runs' if repeat > 1 else ''}):")
    rows = run_cases(cases, runner=runner, on_case=_progress(out))
    if trace and (outdir / PHASES_CSV).is_file():
        from .qemu_trace import draw

        if (figure := draw(outdir / PHASES_CSV, outdir / "qemu-phases.png")) is not None:
            out(f"where QEMU's downtime went: {outdir / PHASES_CSV}, {figure}")
    return rows


def _linux_rows(patterns: Sequence[str], outdir: Path, out: Callable[[str], None]) -> list[Row]:
    """The real Linux guests (``--linux``), each migrated through a capture relay."""
    from .linux_capture import LINUX_CASES, run_linux
    from .qemu import find_qemu

    binary = find_qemu()
    apps = [a for a in LINUX_CASES if not patterns or any(fnmatch.fnmatch(f"linux-{a}", p)
                                                   for p in patterns)]
    if binary is None or not apps:
        return []  # _real_rows has said why
    if importlib.util.find_spec("qemu") is None or importlib.util.find_spec("qemu.qmp") is None:
        return []
    out(f"real Linux guests through migsim capture ({binary}; captures in {outdir / 'linux'}):")
    return run_linux(apps, outdir, log=out, binary=binary)


def _replay_rows(patterns: Sequence[str], outdir: Path, out: Callable[[str], None],
                 host: str | Path | None) -> list[Row]:
    """Each application captured at QEMU's defaults, replayed under other settings, against
    real runs of those settings (``--linux``; the host profile: ``host`` or the one
    ``_real_rows`` fitted)."""
    from .linux_replay import REPLAY_APPS, REPLAY_SETTINGS, run_replay
    from .qemu import find_qemu

    binary = find_qemu()
    ids = [(a, s) for a in REPLAY_APPS for s in REPLAY_SETTINGS
           if not patterns or any(fnmatch.fnmatch(f"linux-replay-{a}-{s}", p) for p in patterns)]
    if binary is None or not ids or importlib.util.find_spec("qemu.qmp") is None:
        return []
    profile = Path(host) if host is not None else outdir / "host.yaml"
    if not profile.is_file():  # _real_rows ran no case (--case picked only replays)
        from .calibrate import CalibrationError, calibrate
        from .qemu import QemuError

        out(f"calibrating this host (migsim calibrate --real-qemu -o {profile}):")
        try:
            calibrate(profile, True, None, log=out)
        except (QemuError, CalibrationError) as err:
            out(f"replays: calibration failed ({err}); replayed on migsim's default host")
    apps = sorted({a for a, _ in ids}, key=REPLAY_APPS.index)
    chosen = [s for s in REPLAY_SETTINGS if any(s == t for _, t in ids)]
    out(f"Linux guests captured at QEMU's defaults, replayed under other settings "
        f"(captures in {outdir / 'linux-replay'}):")
    return run_replay(apps, outdir, profile if profile.is_file() else None, log=out,
                      binary=binary, settings=chosen)


def _linux_ids() -> list[str]:
    from .linux_capture import LINUX_CASES
    from .linux_replay import REPLAY_APPS, REPLAY_SETTINGS

    return [f"linux-{a}" for a in LINUX_CASES] + [
        f"linux-replay-{a}-{s}" for a in REPLAY_APPS for s in REPLAY_SETTINGS]


def _load_real_cases() -> list[Case]:
    from .real import load_real_cases

    return load_real_cases()


def _no_case(message: str) -> int:
    print(f"migsim validate: {message}", file=sys.stderr)
    return EXIT_NO_CASE


def main(real_qemu: bool = False, output: str | Path | None = None,
         patterns: Sequence[str] = (), out: Callable[[str], None] = print,
         host: str | Path | None = None, linux: bool = False, repeat: int = 1,
         qemu_trace: bool = False) -> int:
    """Run the suite; returns the exit status."""
    outdir = Path(output) if output is not None else DEFAULT_OUTPUT
    started = time.monotonic()
    every = load_cases()
    if not every:  # the package data is missing: an installation that would validate nothing
        return _no_case(f"no validation case in {CASES_DIR}; is migsim installed with its "
                        "package data (sim/validation/cases/*.yaml)?")
    cases = _selected(every, patterns)
    if patterns and not cases:
        real = _load_real_cases() if real_qemu else []
        linux_ids = _linux_ids() if real_qemu and linux else []
        if not _selected(real, patterns) and not [
                i for i in linux_ids if any(fnmatch.fnmatch(i, p) for p in patterns)]:
            ids = ", ".join([c.id for c in every + real] + linux_ids)
            return _no_case(f"--case {' '.join(patterns)}: matches none of the cases ({ids})")
    out(f"closed forms and published results ({len(cases)} cases):")
    rows = run_cases(cases, on_case=_progress(out))
    if real_qemu:
        rows += _real_rows(patterns, outdir, out, Path(host) if host is not None else None,
                           repeat, qemu_trace)
        if linux:
            rows += _linux_rows(patterns, outdir, out)
            rows += _replay_rows(patterns, outdir, out, host)
    if not rows:
        return _no_case("no case was run (the real-QEMU cases were skipped)")
    out("")
    out(format_table(rows))
    csv_path = write_csv(rows, outdir / CSV_NAME)
    fig_path = draw(rows, outdir / FIGURE_NAME)
    bad = failures(rows)
    judged = sum(1 for r in rows if r.ok is not None)
    out("")
    out(f"{judged - len(bad)}/{judged} quantities within tolerance "
        f"({time.monotonic() - started:.0f} s); wrote {csv_path} and {fig_path}")
    for row in bad:
        out(f"out of tolerance: {row.case}: {row.quantity}: expected {row.expected}, "
            f"model {row.model} ({row.tolerance}){'; ' + row.note if row.note else ''}")
    return 1 if bad else 0
