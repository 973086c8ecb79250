"""``migsim calibrate``: measure a host once, write a host profile, predict any migration on it.

Why: migsim's pre-copy rules follow QEMU, but what a page costs depends on the host. On a fast
link the pace is set by the migration thread and the destination's load path (and, on loopback,
by both sharing the host's cores), and the switchover has fixed costs QEMU's threshold test does
not know. Those numbers cannot be guessed by a user; they are measured here.

``--real-qemu`` runs :data:`RUNS` short real migrations (:data:`REPEAT` rounds of them all, each
run's median fitted) of the validation guest
(:mod:`sim.validation.guest`) between two QEMUs on loopback with the real-QEMU harness
(:mod:`sim.validation.qemu`), at an unlimited ``max-bandwidth`` so that the host, not the rate
limit, sets the pace:

* ``written``: every page of RAM holds data (raw page records);
* ``zero``: RAM never written (zero-page records).

and fits, from QMP's counters only (never from the cases the profile is judged on):

* the time per zero-page record ``a`` and per raw-page record ``b`` (everything the source
  thread, the socket and the destination spend on it: on loopback they share the cores, so only
  their sum can be seen): ``total - setup - fixed = a · zero pages + b · normal pages``, two runs,
  two unknowns;
* the switchover's fixed cost ``c``: the ``zero`` run's downtime less what its last pages cost,
  the least of the run's repeats: a fixed cost plus disturbances of the host that only add.
  The median was chance (zero runs of 128 MiB to 1 GiB here gave 1, 1, 1, 1, 2, 1, 1, 2, 1 ms,
  and a fitted 2 ms put small final sets' downtimes at 2-2.7 ms where QEMU measured 0-1), and
  so was a mean that left out repeats far from the median: three calibrations on 2026-12-07
  had paced repeats of 2, 1, 5 / 3, 4, 5 / 6, 2, 4 ms while the cases run after each had 1-2
  ms; that mean gave 1.5, 4.0 and 4.0 ms, and 10 small downtimes of CI's last run missed at
  4-5.6 ms. The least gives 1, 3 and 2. (QMP's whole milliseconds make the least up to 1 ms
  low for a cost of about 1 ms, within the validation's 1.5 ms slack.)

A third run, ``multifd`` (RAM written, 4 channels), gives how many cores multifd's channels
could use (``source_cpu.cores``, fractional): the model divides a raw page's copy (``b - a``) by
min(channels, cores), so the run's time solves for it. On loopback both ends' threads share the
host's cores: on this 2-core host 4 channels moved a written 128 MiB guest in 28-36 ms against
39-49 ms for one stream, a gain of about 1.3, where a core per channel would have halved the
time twice over.

A fourth run, ``paced`` (RAM written, ``max-bandwidth`` 256 MiB/s, downtime limit 2 ms),
gives the switchover's fixed cost after a rate-limited live phase,
``switchover_cost.paced_stop``: its downtime less its last few pages. On the 2-core Firecracker
VMs this was built on, a switchover after a paced phase took 4-10 ms where the unlimited zero
run's took 2-3 at some times, and 1-2 ms at others (minutes to hours apart), the same QEMU
and guest: in a paced phase QEMU's threads sleep out most of each 100 ms window, and what it
costs to resume depends on a state of the host's that was not pinned down
(docs/validation.md). The model charges ``paced_stop`` when the last 100 ms window before the
stop spent its budget (:func:`sim.engine.switchover.paced`); the burst's pages keep the
calibrated pace. Not fitted: after a *slow* paced phase (a few MiB/s) a large
final burst went at 1-5.5 µs a page, in modes a run cannot know beforehand. Much of the slow
mode is the kernel's TCP congestion control: under BBR the burst took a median 32 ms in twelve
runs, under CUBIC 15 (the model: 11.6); not TCP's ``tcp_slow_start_after_idle``
(docs/validation.md).

The profile puts ``a`` and ``b`` on the source thread (``per_page = a``, ``copy_rate = page /
(b - a)``, no separate scan cost), ``c`` in ``switchover_cost.stop`` (QMP cannot split stop from
start; ``stop`` counts in the downtime with or without a return path), ``accelerator: tcg`` (the
harness runs QEMU under TCG), and a loopback ``link`` fast enough never to set the pace (the
kernel's copy is in ``b``). It then simulates the calibration runs with the profile and prints
each run's residuals.

``--from DIR`` refits from runs recorded earlier (``DIR/<run>/runs.parquet``, as ``--real-qemu``
keeps them beside the profile, with ``calibration.yaml``: the guest's RAM as QEMU counts it).

Not fitted yet: a page's first arrival costs the destination more than a page sent again (a page
fault and a fresh page: ``destination_cpu.first_touch``, modelled), the dirty-bitmap sync, and
XBZRLE's encoder; two idle runs cannot separate them, and they keep their defaults.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim import units

from .guest import PAGE, GuestParams
from .qemu import MigrationSettings

#: guest RAM of the calibration runs: TCG boots and migrates it in seconds, and its written run
#: lasts about 0.15 s, so QMP's whole-millisecond times and a stray scheduling delay are small
#: against it (a 128 MiB guest's 40 ms gave raw-page costs from 1.1 to 1.5 us on one host)
MEMORY = 512 * units.MiB
#: each run is made this many times; the fit takes the one with the median total time
REPEAT = 3
#: an unlimited max-bandwidth for QEMU 7.2 to 10.x (0 meant "no limit" only in some releases)
UNLIMITED = 1 << 40
#: the loopback link of the profile: fast enough never to set the pace (its copy is in ``b``)
LOOPBACK = {"bandwidth": "100Gbit/s", "latency": "50us"}


@dataclass(frozen=True)
class CalibrationRun:
    """One real migration the fit uses: its guest and the settings QEMU gets."""

    name: str
    guest: GuestParams
    settings: MigrationSettings
    what: str


#: the multifd run's channels: more than this host class has cores, so the run shows what the
#: cores, not the channels, allow
MULTIFD_CHANNELS = 4


def _run(name: str, fill: bool, what: str, multifd: bool = False,
         max_bandwidth: int = UNLIMITED, downtime_limit_ms: int = 300) -> CalibrationRun:
    # A one-page working set touched 20 times a second (the PIT's slowest is about 18): the guest
    # is all but idle, so every page is sent once (plus the few the guest touches), and the
    # counters are the host's pace alone.
    guest = GuestParams(base=16 * units.MiB, pages=1, touches_per_s=20.0,
                        fill_end=MEMORY if fill else 0)
    settings = MigrationSettings(
        memory=MEMORY, max_bandwidth=max_bandwidth, downtime_limit_ms=downtime_limit_ms,
        max_time=60.0,
        capabilities=("multifd",) if multifd else (),
        parameters=(("multifd-channels", MULTIFD_CHANNELS),) if multifd else ())
    return CalibrationRun(name, guest, settings, what)


#: the paced run's rate limit: its windows spend their budget in a fraction of the 100 ms, so
#: QEMU's threads sleep between them, as in the rate-limited cases a profile predicts
PACED_BANDWIDTH = 256 * units.MiB
#: the paced run's downtime limit: a threshold of a few pages, so its switchover sends almost
#: nothing and its downtime is the fixed cost
PACED_DOWNTIME_LIMIT_MS = 2

RUNS = (
    _run("written", True, "every page holds data: raw-page records"),
    _run("zero", False, "RAM never written: zero-page records"),
    _run("multifd", True, f"every page holds data, {MULTIFD_CHANNELS} multifd channels",
         multifd=True),
    _run("paced", True, f"every page holds data, {PACED_BANDWIDTH // units.MiB} MiB/s, "
         f"downtime limit {PACED_DOWNTIME_LIMIT_MS} ms: the switchover after a paced phase",
         max_bandwidth=PACED_BANDWIDTH, downtime_limit_ms=PACED_DOWNTIME_LIMIT_MS),
)
#: the runs the fit cannot do without (a recording without the multifd run fits no cores)
REQUIRED = ("written", "zero")


@dataclass(frozen=True)
class Observation:
    """What the fit reads of one real run (QMP's counters)."""

    name: str
    total_s: float
    setup_s: float
    downtime_s: float
    normal_pages: int
    zero_pages: int
    downtime_bytes: float

    @classmethod
    def from_row(cls, name: str, row: pd.Series) -> Observation:
        return cls(name, float(row.total_time_s), float(row.setup_time_s),
                   float(row.downtime_s), int(row.normal_pages), int(row.zero_pages),
                   float(row.downtime_bytes))


@dataclass(frozen=True)
class Fit:
    """The fitted costs (seconds) and the profile they make."""

    per_zero_page: float
    per_raw_page: float
    switchover: float
    #: cores multifd's channels can use (``source_cpu.cores``), from the multifd run (0: not
    #: known, the default of one per channel)
    cores: float = 0.0
    #: the switchover's fixed cost after a paced live phase (``switchover_cost.paced_stop``),
    #: from the paced run (None: not known, the same as ``switchover``)
    paced_switchover: float | None = None

    def profile(self, page: int = PAGE) -> dict[str, Any]:
        extra = _round(self.per_raw_page) - _round(self.per_zero_page)
        source: dict[str, Any] = {
            "per_page": f"{_round(self.per_zero_page) * 1e9:g}ns",
            "scan_rate": 0,
            "copy_rate": f"{_round(page / extra):g}B/s" if extra > 0 else 0,
        }
        if self.cores > 0:
            source["cores"] = round(self.cores, 2)
        switchover = {"stop": f"{_round(self.switchover) * 1e6:g}us", "start": "0s"}
        if self.paced_switchover is not None:
            switchover["paced_stop"] = f"{_round(self.paced_switchover) * 1e6:g}us"
        return {
            "accelerator": "tcg",
            "link": dict(LOOPBACK),
            "source_cpu": source,
            "switchover_cost": switchover,
        }


def _round(x: float, digits: int = 4) -> float:
    """``digits`` significant digits: a measurement, not a bit pattern."""
    return float(f"{x:.{digits}g}")


class CalibrationError(ValueError):
    """The runs cannot be fitted (a run failed, or the counts leave the fit undetermined)."""


def fit(obs: dict[str, Observation]) -> Fit:
    """Solve the two runs' page times, then the fixed switchover cost (module notes)."""
    try:
        w, z = obs["written"], obs["zero"]
    except KeyError as e:
        raise CalibrationError(f"the fit needs the runs {', '.join(REQUIRED)}; "
                               f"missing {e}") from None
    # First without the fixed cost, then with the fixed cost the zero run's downtime shows.
    c = 0.0
    a = b = 0.0
    for _ in range(3):
        tw = w.total_s - w.setup_s - c
        tz = z.total_s - z.setup_s - c
        det = w.zero_pages * z.normal_pages - z.zero_pages * w.normal_pages
        if det == 0:
            raise CalibrationError("the runs' page counts do not separate zero from raw pages")
        a = (tw * z.normal_pages - tz * w.normal_pages) / det
        b = (w.zero_pages * tz - z.zero_pages * tw) / det
        if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
            raise CalibrationError(f"the fit gave no positive time per page (zero {a:.3g} s, "
                                   f"raw {b:.3g} s): were the runs disturbed?")
        a = max(a, 0.0)
        c = _fixed_cost(z, b)
    paced = obs.get("paced")
    return Fit(a, b, c, _cores(obs.get("multifd"), a, b, c),
               _fixed_cost(paced, b) if paced is not None else None)


def _fixed_cost(o: Observation, b: float) -> float:
    """A run's switchover less its last pages at the raw-page time ``b``: the fixed cost (the
    zero run's gives ``stop``, the paced run's ``paced_stop``)."""
    return max(0.0, o.downtime_s - o.downtime_bytes / (PAGE + 8) * b)


def _cores(m: Observation | None, a: float, b: float, c: float) -> float:
    """The cores multifd's channels got in the multifd run: the model divides a raw page's
    copy (``b - a``) by min(channels, cores), so ``total - setup - c = a · pages + (b - a) ·
    raw pages / cores``. Between 1 (the channels took turns) and the channels; 0 without the
    run."""
    if m is None:
        return 0.0
    copy = m.total_s - m.setup_s - c - a * (m.zero_pages + m.normal_pages)
    if copy <= 0 or m.normal_pages <= 0:
        return float(MULTIFD_CHANNELS)
    return min(float(MULTIFD_CHANNELS), max(1.0, (b - a) * m.normal_pages / copy))


def _observe_rounds(keep: Path | None, log: Callable[[str], None]
                    ) -> dict[str, tuple[Observation, Path | None]]:
    """:data:`REPEAT` rounds of the real runs, each round every run once (so a slow spell of
    the host, seconds to a minute long, falls on one repeat of several runs, not on every
    repeat of one: a profile fitted in one took all three paced runs at 3-5 ms where the
    cases, minutes later, had 1-2); each run's repeats summed up by :func:`_summarize`."""
    repeats: dict[str, list[tuple[Observation, Any, dict[str, Any]]]] = {r.name: [] for r in RUNS}
    for _ in range(REPEAT):
        for run in RUNS:
            repeats[run.name].append(_observe_real(run, log))
    return {run.name: _summarize(run, repeats[run.name], keep, log) for run in RUNS}


def _summarize(run: CalibrationRun, runs: list[tuple[Observation, Any, dict[str, Any]]],
               keep: Path | None, log: Callable[[str], None]) -> tuple[Observation, Path | None]:
    """The repeat with the median total time is fitted (and kept), so one disturbed run does
    not move the profile; its downtime is the repeats' least (module notes)."""
    runs = sorted(runs, key=lambda r: r[0].total_s)
    obs, result, meta = runs[len(runs) // 2]
    # the downtime (whole ms in QMP) and its bytes: the repeats' least (module notes)
    meta = dict(meta, downtime_s_runs=[r[0].downtime_s for r in runs],
                downtime_bytes_runs=[r[0].downtime_bytes for r in runs])
    obs = _with_least_downtime(obs, meta)
    if len(runs) > 1:
        log(f"  {run.name}: total times {', '.join(f'{r[0].total_s * 1000:.0f}' for r in runs)} "
            f"ms; fitted the median")
    folder = None
    if keep is not None:
        folder = keep / run.name
        result.save(folder, extra=lambda tmp: (tmp / "calibration.yaml").write_text(
            yaml.safe_dump(meta, sort_keys=False)))
    return obs, folder


def _with_least_downtime(obs: Observation, meta: dict[str, Any]) -> Observation:
    """``obs`` with the least downtime of the repeats ``meta`` lists, and the mean downtime
    bytes of the repeats that had it: a fixed cost plus disturbances that only add (module
    notes); a recording from before the repeats were kept: ``obs`` as it is."""
    times, sizes = meta.get("downtime_s_runs"), meta.get("downtime_bytes_runs")
    if not times or not sizes or len(times) != len(sizes):
        return obs
    t = np.asarray(times, np.float64)
    least = t <= t.min() + 1e-9
    return replace(obs, downtime_s=float(t.min()),
                   downtime_bytes=float(np.asarray(sizes, np.float64)[least].mean()))


def _observe_real(run: CalibrationRun,
                  log: Callable[[str], None]) -> tuple[Observation, Any, dict[str, Any]]:
    from .qemu import measure
    from .qemu_tables import tables

    t0 = time.monotonic()
    m = measure(f"calibrate-{run.name}", run.guest, run.settings, need_rate=False)
    result = tables(m.observed, f"calibrate-{run.name}")
    row = result.runs.iloc[0]
    if row.status != "completed":
        raise CalibrationError(f"calibration run {run.name!r} ended {row.status}: "
                               f"{row.failure_reason}")
    meta = {"run": run.name, "ram_total": m.ram_total, "zero_pages_before": m.zero_pages,
            "qemu_version": m.qemu_version}
    obs = Observation.from_row(run.name, row)
    log(f"  {run.name}: {run.what}; QEMU {m.qemu_version}, {row.status} in "
        f"{row.total_time_s:.3f} s, downtime {obs.downtime_s * 1000:.1f} ms, "
        f"{row.normal_pages} raw + {row.zero_pages} zero pages ({time.monotonic() - t0:.1f} s)")
    return obs, result, meta


def observe_recorded(folder: Path) -> dict[str, Observation]:
    """The observations kept by an earlier ``--real-qemu`` calibration (``folder/<run>/``)."""
    out = {}
    for run in RUNS:
        runs = folder / run.name / "runs.parquet"
        if not runs.is_file() and run.name not in REQUIRED:
            continue  # recorded before the run existed
        if not runs.is_file():
            raise CalibrationError(f"{folder}: no recorded run {run.name!r} "
                                   f"({runs} missing)")
        try:
            obs = Observation.from_row(run.name, pd.read_parquet(runs).iloc[0])
            meta_file = folder / run.name / "calibration.yaml"
            meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else None
            out[run.name] = _with_least_downtime(obs, meta if isinstance(meta, dict) else {})
        except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError,
                yaml.YAMLError) as e:
            raise CalibrationError(f"{folder / run.name}: not a recorded calibration run "
                                   f"({type(e).__name__}: {e})") from None
    return out


def residuals(profile: Path, obs: dict[str, Observation],
              memory_total: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Simulate each calibration run from what a user knows (guest size, its zero pages, QEMU's
    parameters) plus ``host: profile``; relative error of total time and downtime against
    QEMU's."""
    from sim.run import run_one
    from sim.scenario import loads_scenario

    rows = []
    for run in RUNS:
        if run.name not in obs:
            continue
        o = obs[run.name]
        pages = (memory_total or {}).get(run.name, 0) // PAGE or (o.normal_pages + o.zero_pages)
        zero = min(1.0, o.zero_pages / max(1, pages))
        migration: dict[str, Any] = {
            "max_bandwidth": f"{run.settings.max_bandwidth}B/s",
            "downtime_limit": f"{run.settings.downtime_limit_ms}ms", "qemu_version": "7.2"}
        if "multifd" in run.settings.capabilities:
            migration |= {"capabilities": ["multifd"], "multifd_channels": MULTIFD_CHANNELS}
        text = yaml.safe_dump({
            "name": f"calibrate-{run.name}", "host": str(profile.resolve()),
            "vm": {"memory": f"{pages * PAGE}B", "zero_fraction": zero, "device_state": 0},
            "workload": {"kind": "idle"},
            "migration": migration,
        }, sort_keys=False)
        row = run_one(loads_scenario(text)).runs.iloc[0]
        for quantity, qemu, model in (("total_time_s", o.total_s, float(row.total_time_s)),
                                      ("downtime_s", o.downtime_s, float(row.downtime_s))):
            rows.append({"run": run.name, "quantity": quantity, "qemu": qemu, "model": model,
                         "rel_error": (model - qemu) / qemu if qemu else math.nan})
    return rows


def write_profile(fitted: Fit, path: Path, how: str,
                  rows: list[dict[str, Any]] | None = None) -> None:
    lines = [f"# migsim host profile, fitted by `migsim calibrate {how}` "
             f"({time.strftime('%Y-%m-%d %H:%M')})",
             f"# per zero-page record {fitted.per_zero_page * 1e6:.3f} us, per raw-page record "
             f"{fitted.per_raw_page * 1e6:.3f} us, switchover {fitted.switchover * 1e3:.2f} ms"
             + (f" ({fitted.paced_switchover * 1e3:.2f} ms after a paced phase)"
                if fitted.paced_switchover is not None else "")]
    if rows:
        lines.append("# residuals (model vs QEMU on the calibration runs):")
        lines += [f"#   {r['run']:8s} {r['quantity']:13s} QEMU {r['qemu']:.4g}  model "
                  f"{r['model']:.4g}  ({r['rel_error']:+.1%})" for r in rows]
    body = yaml.safe_dump(fitted.profile(), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")


def calibrate(out: Path, real_qemu: bool, recorded: Path | None,
              log: Callable[[str], None] = print) -> tuple[Fit, list[dict[str, Any]]]:
    """Measure (or read) the runs, fit, check the fit on them, write the profile to ``out``."""
    t0 = time.monotonic()
    memory_total: dict[str, int] = {}
    if recorded is not None:
        obs = observe_recorded(recorded)
        for run in RUNS:
            meta = recorded / run.name / "calibration.yaml"
            if meta.is_file():
                memory_total[run.name] = int(yaml.safe_load(meta.read_text())["ram_total"])
        how = f"--from {recorded}"
    else:
        keep = out.with_name(out.stem + "-runs")
        obs = {}
        for name, (o, folder) in _observe_rounds(keep, log).items():
            obs[name] = o
            if folder is not None:
                meta = yaml.safe_load((folder / "calibration.yaml").read_text())
                memory_total[name] = int(meta["ram_total"])
        how = "--real-qemu"
        log(f"  runs kept in {keep}/ (refit with --from {keep})")
    fitted = fit(obs)
    write_profile(fitted, out, how)
    rows = residuals(out, obs, memory_total)
    write_profile(fitted, out, how, rows)
    log(f"fitted in {time.monotonic() - t0:.1f} s:")
    log(f"  source_cpu.per_page (a zero-page record)  {fitted.per_zero_page * 1e6:8.3f} us")
    log(f"  a raw-page record                          {fitted.per_raw_page * 1e6:8.3f} us")
    log(f"  switchover_cost.stop                       {fitted.switchover * 1e3:8.3f} ms")
    log(f"  source_cpu.cores (multifd's channels got)  {fitted.cores:8.2f}")
    if fitted.paced_switchover is not None:
        log(f"  switchover_cost.paced_stop                 {fitted.paced_switchover * 1e3:8.3f} ms")
    for r in rows:
        log(f"  residual {r['run']:8s} {r['quantity']:13s} QEMU {r['qemu']:9.4f}  model "
            f"{r['model']:9.4f}  {r['rel_error']:+7.1%}")
    return fitted, rows


__all__ = ["RUNS", "CalibrationError", "CalibrationRun", "Fit", "Observation", "calibrate",
           "fit", "observe_recorded", "residuals"]
