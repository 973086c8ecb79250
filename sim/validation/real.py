"""Real-QEMU cases: migrate the validation guest between two QEMUs, then simulate the same thing.

A real case file (``real/*.yaml``) describes the QEMU side::

    qemu:
      memory: 64MiB                       # -m
      guest: {base: 16MiB, pages: 2048, stride: 4KiB, bytes_per_touch: 16, touches_per_s: 4000}
      migration: {capabilities: [xbzrle], max_bandwidth: 8MiB/s, downtime_limit: 300ms,
                  xbzrle_cache_size: 16MiB, max_time: 30s}
    model:                                # what QMP cannot tell the simulator
      link: {bandwidth: 400MB/s}
      variants: {free-cpu: {source_cpu: {...}}}   # optional, reported only

The scenario handed to the simulator is built from the case and from what was *measured* about
the guest (never from QEMU's migration results): RAM size (``ram.total``: RAM plus ROM blocks),
the zero pages found in a RAM dump just before ``migrate``, and the touch rate the guest's own
counters show (PIT ticks can be lost on a busy host). The guest's touches become a ``sequential``
workload over its working set, ``write_size`` = bytes per touch. ``device_state`` is 0 because
QEMU 7.2's ``ram.transferred`` counts RAM records only, not the device state sent at the end.
QEMU's values are the expected ones; the tolerance is the case's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sim import units
from sim.engine.switchover import PACED_DETAIL
from sim.result import Result
from sim.spec import Scenario

from .cases import REAL_DIR, Case, Check, deep_merge, load_cases
from .guest import PAGE, PIT_HZ, GuestParams
from .qemu import Measurement, MigrationSettings, find_qemu, measure
from .qemu_tables import tables
from .qemu_trace import Phases, model_row
from .quantities import extract
from .suite import Row, judge


def guest_params(case: Case) -> GuestParams:
    q = case.qemu or {}
    g = q["guest"]
    return GuestParams(base=units.parse_size(g["base"]), pages=int(g["pages"]),
                       stride=units.parse_size(g.get("stride", PAGE)),
                       bytes_per_touch=units.parse_size(g.get("bytes_per_touch", 64)),
                       touches_per_s=float(g["touches_per_s"]),
                       fill_end=units.parse_size(q["memory"]))


def settings(case: Case) -> MigrationSettings:
    q = case.qemu or {}
    m = q.get("migration", {})
    max_time = m.get("max_time")
    changes = tuple((units.parse_time(c["at"]), _qmp_values(
        {k: v for k, v in c.items() if k != "at"})) for c in m.get("changes", ()))
    return MigrationSettings(
        memory=units.parse_size(q["memory"]),
        capabilities=tuple(m.get("capabilities", ())),
        max_bandwidth=int(units.parse_rate(m.get("max_bandwidth", "128MiB/s"))),
        downtime_limit_ms=round(units.parse_time(m.get("downtime_limit", "300ms")) * 1000),
        xbzrle_cache_size=units.parse_size(m.get("xbzrle_cache_size", "64MiB")),
        max_time=units.parse_time(max_time) if max_time is not None else None,
        parameters=tuple(sorted((str(k), int(v)) for k, v in m.get("parameters", {}).items())),
        changes=changes, postcopy_at_pass=m.get("postcopy_at_pass"))


#: live-change keys of a case (snake_case, with units) -> QMP parameter and QMP's unit
_LIVE = {"max_bandwidth": ("max-bandwidth", units.parse_rate),
         "downtime_limit": ("downtime-limit", lambda v: units.parse_time(v) * 1000)}


def _qmp_values(change: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """A case's ``changes`` item (``max_bandwidth: 32MiB/s``, ...) as QMP parameters."""
    out = []
    for key, value in change.items():
        if key not in _LIVE:
            raise ValueError(f"changes: {key}: not a live change the harness knows "
                             f"({', '.join(_LIVE)})")
        name, parse = _LIVE[key]
        out.append((name, round(parse(value))))
    return tuple(sorted(out))


def scenario_data(case: Case, m: Measurement) -> dict[str, Any]:
    """The migsim scenario (as a mapping) of a real case, from the case and the measured guest."""
    g, s = guest_params(case), settings(case)
    pages = m.ram_total // PAGE
    migration: dict[str, Any] = {
        "max_bandwidth": s.max_bandwidth, "downtime_limit": s.downtime_limit_ms / 1000,
        "xbzrle_cache_size": s.xbzrle_cache_size, "capabilities": list(s.capabilities),
        "qemu_version": m.qemu_version or "7.2",
    }
    if s.max_time is not None:
        migration["max_time"] = s.max_time
    for name, number in s.parameters:  # unitless QEMU parameters: the same number
        migration[name.replace("-", "_")] = number
    if s.postcopy_at_pass is not None:
        # QEMU's MIGRATION_PASS n is its n-th bitmap sync; the first is the setup sync, which
        # the model's postcopy_after_passes does not count
        migration["postcopy_after_passes"] = max(1, s.postcopy_at_pass - 1)
    version = {"version": m.qemu_version or "7.2"}
    data: dict[str, Any] = {
        "name": case.id,
        # where the zero pages are, not only how many: the guest's below 1 MiB (it writes every
        # page from 1 MiB up, sim/validation/guest/guest.S), where the scan starts, and QEMU's
        # firmware blocks' after its RAM (firmware.py). Spread at random, the guest's zero pages
        # in the written region became raw pages before they were sent (73 pages short at the
        # end of xbzrle-medium's first pass); the firmware's, left out, made 80 raw pages at the
        # end of its first round where QEMU sent zero pages
        "vm": {"memory": pages * PAGE, "device_state": 0,
               "zero_regions": [{"offset": first * PAGE, "size": count * PAGE}
                                for first, count in m.zero_ranges]},
        "workload": {"kind": "sequential", "writes_per_s": _guest_rate(s, m),
                     "region": {"offset": g.base, "size": g.pages * PAGE}, "stride": g.stride,
                     # where the sweep had got to: which pages it dirties before the scan
                     # reaches them depends on it
                     "position": m.touches_at_migrate % g.touches_per_sweep * g.stride,
                     "write_size": g.bytes_per_touch, "write_pattern": "clustered",
                     # the guest's touches come in bursts on PIT ticks (sim/validation/guest.py)
                     "timer_tick": g.pacing()[1] / PIT_HZ},
        "migration": migration,
        "endpoints": {"source": version, "destination": version},
        "negotiation": "qemu",
    }
    model = {k: v for k, v in case.model.items() if k != "variants"}
    return deep_merge(data, model)


#: capabilities that slow the guest on purpose: its rate over the migration is not its own
THROTTLES = ("auto-converge", "dirty-limit")


def _guest_rate(s: MigrationSettings, m: Measurement) -> float:
    """The guest's touch rate for the model. Over the migration the guest's own counter shows
    what it managed beside the migration thread on the shared cores, which the model does not
    have, so that rate is the one to give it; but a throttle slows the guest on purpose, and
    the model applies its own, so a throttled case gets the rate measured before ``migrate``."""
    if any(c in THROTTLES for c in s.capabilities) and m.touches_before_per_s > 0:
        return m.touches_before_per_s
    return m.touches_per_s


def _value(result: Result, scenario: Scenario, check: Check) -> Any:
    try:
        return extract(result, scenario, check.quantity, check.vm)
    except (KeyError, IndexError, ValueError):
        return None


def compare(case: Case, measured: Result, model: Result, scenario: Scenario,
            variants: Mapping[str, tuple[Result, Scenario]] | None = None) -> list[Row]:
    """One row per check (QEMU expected, model judged), plus report-only rows per variant."""
    rows = []
    for check in case.checks:
        rows.append(judge(case, check, _value(measured, scenario, check),
                          _value(model, scenario, check)))
    for name, (result, sc) in (variants or {}).items():
        for check in case.checks:
            shown = Check(quantity=f"{check.quantity} ({name})", rule="report")
            rows.append(judge(case, shown, _value(measured, sc, check), _value(result, sc, check),
                              note=f"model variant {name!r}: reported, not judged"))
    return rows


def with_host(scenario: Scenario, host: Path | None, own: Mapping[str, Any]) -> Scenario:
    """The scenario with a host profile's sections under its own (``own``: the case's model
    keys, which win), as ``host: FILE`` does in a scenario file."""
    if host is None:
        return scenario
    import dataclasses
    import json

    from sim.scenario import HOST_SECTIONS, loads_scenario

    profile = loads_scenario(f"host: {json.dumps(str(Path(host).resolve()))}\n")
    return dataclasses.replace(scenario, **{name: getattr(profile, name)
                                            for name in HOST_SECTIONS if name not in own})


def simulate(scenario: Scenario,
             changes: Sequence[tuple[float, Sequence[tuple[str, int]]]] = ()) -> Result:
    """Run the model of a case; ``changes`` are issued as the harness issues them to QEMU: a
    ``migrate-set-parameters`` on the source, that long after ``migrate``."""
    from sim.negotiation import operate
    from sim.run import Testbed, run_one

    if not changes:
        return run_one(scenario)
    testbed = Testbed(scenario)
    pair = testbed.pairs[0]

    def issue(at: float, params: Sequence[tuple[str, int]]) -> Generator[Any, None, None]:
        yield testbed.env.timeout(scenario.migration.start + at)
        pair.source.migrate_set_parameters(dict(params))

    testbed.env.process(operate(pair, scenario.negotiation))
    for at, params in changes:
        testbed.env.process(issue(at, params))
    testbed.run()
    return testbed.result()


def run_real_case(case: Case, outdir: Path | None = None, binary: str | None = None,
                  log: Callable[[str], None] = print, host: Path | None = None,
                  repeat: int = 1, trace: bool = False) -> list[Row]:
    """Measure ``case`` on QEMU, simulate it, compare; tables saved under ``outdir`` if given.
    ``host``: a host profile (``migsim calibrate``) under the case's own model keys.

    ``repeat`` > 1: that many real runs, each simulated from its own measured guest (touch
    rate, sweep position, zero pages), and QEMU's mean judged against the model's mean (the
    outcome: the most common one on each side). Run ``k`` > 1's tables go to ``<id>-run<k>``.
    ``trace``: time each switchover from QEMU's trace points (``qemu-phases.csv``).
    """
    runs = [_run_once(case, outdir, binary, log, host, k, trace) for k in range(1, repeat + 1)]
    if repeat == 1:
        measured, model, scenario, variants = runs[0]
        return compare(case, measured, model, scenario, variants)
    rows = []
    for check in case.checks:
        q = [_value(r[0], r[2], check) for r in runs]
        m = [_value(r[1], r[2], check) for r in runs]
        rows.append(judge(case, check, _mean(q), _mean(m),
                          note=f"mean of {repeat} runs: QEMU {_spread(q)}, model {_spread(m)}"))
    return rows


def _mean(values: Sequence[Any]) -> Any:
    """The mean of the numbers, or the most common value (an outcome); None if none."""
    import statistics

    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return float(statistics.fmean(present))
    return statistics.mode(present)


def _spread(values: Sequence[Any]) -> str:
    return " / ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)


def _run_once(case: Case, outdir: Path | None, binary: str | None,
              log: Callable[[str], None], host: Path | None,
              k: int, trace: bool = False,
              ) -> tuple[Result, Result, Scenario, dict[str, tuple[Result, Scenario]]]:
    from sim.scenario import from_dict

    m = measure(case.id, guest_params(case), settings(case), binary=binary,
                keep=outdir / "qemu-logs" if outdir is not None else None, trace=trace)
    measured = tables(m.observed, case.id)
    data = scenario_data(case, m)
    scenario = with_host(from_dict(data, file=str(case.path)), host, case.model)
    live = settings(case).changes
    model = simulate(scenario, live)
    variants = {}
    for name, over in (case.model.get("variants") or {}).items():
        sc = with_host(from_dict(deep_merge(data, over), file=str(case.path)), host,
                       {**case.model, **over})
        variants[str(name)] = (simulate(sc, live), sc)
    nominal = guest_params(case).actual_touches_per_s
    log(f"  {case.id}: QEMU {m.qemu_version}, guest {m.touches_per_s:.0f} touches/s measured "
        f"({nominal:.0f} nominal), {sum(n for _, n in m.zero_ranges)} zero pages of "
        f"{m.ram_total // PAGE} ({m.zero_pages} in guest RAM), "
        f"memory match: {m.observed.memory_match}, QEMU pair wall time {m.wall_s:.1f} s")
    name = case.id if k == 1 else f"{case.id}-run{k}"
    if m.phases is not None:
        phases = _phases_row(name, m.phases, model, scenario)
        log(f"    switchover: QEMU {m.phases.final_pages} pages, source "
            f"{m.phases.us_per_page_source:.2f} us/page, destination "
            f"{m.phases.us_per_page_destination:.2f} us/page; model "
            f"{phases['model_final_pages']} pages, {phases['model_us_per_page']:.2f} us/page")
        if outdir is not None:
            _append_csv(outdir / PHASES_CSV, phases)
    if outdir is not None:
        measured.scenario = scenario
        measured.save(outdir / "qemu" / name)
        model.save(outdir / "model" / name)
    return measured, model, scenario, variants


#: one row per real run: QEMU's switchover from its trace (qemu_trace.py) beside the model's
PHASES_CSV = "qemu-phases.csv"


def _phases_row(name: str, phases: Phases, model: Result, scenario: Scenario) -> dict[str, Any]:
    last = model.passes.iloc[-1] if len(model.passes) else None
    pages = int(last.pages_sent) if last is not None else 0
    cost = scenario.switchover_cost
    ev = model.events
    paced = bool(ev[ev.event == "switchover"].detail.str.contains(PACED_DETAIL).any())
    stop = cost.paced_stop if paced and cost.paced_stop is not None else cost.stop
    return {"run": name, **phases.row(), **model_row(model.runs.iloc[0], pages, stop)}


def _append_csv(path: Path, row: Mapping[str, Any]) -> None:
    import csv

    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def load_real_cases() -> list[Case]:
    return load_cases(REAL_DIR)


__all__ = ["compare", "find_qemu", "load_real_cases", "run_real_case", "scenario_data",
           "with_host"]
