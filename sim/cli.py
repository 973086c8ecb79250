"""The ``migsim`` command: run scenarios, check them, list the plug-ins, redraw figures (DESIGN §7).

A mistake in a scenario prints one line, ``file:line: key.path: problem (got X)``, and exits 2; a bug
in migsim prints ``migsim: internal error: ...`` and exits 1. ``--debug`` adds the traceback.
Modules are imported inside each command, so one that is broken or missing only breaks the
commands that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from sim.errors import PluginError, ResultsError, ScenarioError
from sim.units import MiB
from sim.version import version

if TYPE_CHECKING:
    import pandas as pd

    from sim.result import Result
    from sim.spec import Scenario

# What Result.save writes, in the order they are reported.
# what a result folder holds, as listed after a run (those present: a cluster's queues and links)
SAVED_FILES = ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
               "queues.parquet", "links.parquet", "runs.csv", "scenario.yaml", "provenance.json")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class UsageError(Exception):
    """A mistake on the command line (not in a scenario file); printed as one line, exit 2."""


# -- helpers -------------------------------------------------------------------------------------


def _module(name: str) -> ModuleType:
    # import_module returns the module even when a package attribute of the same name is a function
    # (``sim.run`` the module vs ``sim.run`` the re-exported function).
    return importlib.import_module(name)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["link.bandwidth=1Gbit/s", ...]`` -> ``{"link.bandwidth": "1Gbit/s"}``.

    Values stay strings; the scenario loader parses them with the key's own rules.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item}: expected key.path=value")
        overrides[key] = value.strip()
    return overrides


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_line(err: BaseException) -> str:
    """The one line printed for a user-facing error."""
    if isinstance(err, ScenarioError | UsageError | ResultsError | PluginError):
        return _one_line(str(err))
    if isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or type(err).__name__
        return _one_line(f"{err.filename}: {reason[:1].lower()}{reason[1:]}")
    mark = getattr(err, "problem_mark", None)
    if mark is not None:  # a yaml.MarkedYAMLError the loader did not wrap
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
        return _one_line(f"{mark.name}:{mark.line + 1}: {problem}")
    return _one_line(str(err))


def _is_user_error(err: BaseException) -> bool:
    if isinstance(err, ScenarioError | UsageError | ResultsError | PluginError | OSError):
        return True
    try:
        import yaml
    except ImportError:  # pragma: no cover - yaml is a dependency
        return False
    return isinstance(err, yaml.YAMLError)


def _check_files(paths: Sequence[str]) -> None:
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UsageError(f"{p}: no such file")
        if not path.is_file():
            raise UsageError(f"{p}: not a file")


class Progress:
    """A one-line ``\\r`` progress bar on a terminal's stderr, shown once a run has taken ~2 s of
    wall time. Silent (and free) when the stream is not a TTY."""

    def __init__(self, label: str, stream: IO[str] | None = None, *, delay_s: float = 2.0,
                 every_s: float = 0.1, enabled: bool | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.label = label
        self.delay_s = delay_s
        self.every_s = every_s
        self.width = width
        self.started = time.monotonic()
        self.last_draw = -math.inf
        self.drawn = False

    def __call__(self, sim_time_s: float, max_sim_time_s: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.delay_s or now - self.last_draw < self.every_s:
            return
        self.last_draw = now
        frac = min(max(sim_time_s / max_sim_time_s, 0.0), 1.0) if max_sim_time_s > 0 else 0.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        line = f"\r{self.label} [{bar}] {frac * 100:5.1f}%  sim {sim_time_s:.1f} s"
        self.stream.write(line)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False


class LogProgress:
    """Progress for a log (stderr not a TTY): a plain line every ``every_s`` of wall time, the
    first after ``every_s``, so a long run in CI or under ``nohup`` shows it is alive."""

    enabled = True

    def __init__(self, label: str, stream: IO[str] | None = None, *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def __call__(self, sim_time_s: float, max_sim_time_s: float) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        frac = min(max(sim_time_s / max_sim_time_s, 0.0), 1.0) if max_sim_time_s > 0 else 0.0
        self.stream.write(f"migsim: {self.label}: sim {sim_time_s:.1f} s of at most "
                          f"{max_sim_time_s:g} s ({frac * 100:.1f}%), {now - self.started:.0f} s "
                          "of wall time\n")
        self.stream.flush()

    def close(self) -> None:
        pass


# -- the summary table ---------------------------------------------------------------------------


def format_summary(summary: pd.DataFrame) -> str:
    """A fixed-width text table (numbers right-aligned) of ``Result.summary()``."""
    from sim import labels

    columns = [c for c in summary.columns if c != "run_id" or summary["run_id"].nunique() > 1]
    if "scenario" in columns and summary["scenario"].nunique() <= 1 and len(summary) > 1:
        columns.remove("scenario")
    headers: list[str] = []
    cells: list[list[str]] = []
    right: list[bool] = []
    for c in columns:
        shown = labels.summary_column(c)
        headers.append(shown.terminal)
        cells.append([labels.format_cell(v, shown.format) for v in summary[c]])
        right.append(shown.format != "s")
    widths = [max([len(h), *(len(x) for x in col)]) for h, col in zip(headers, cells, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w)
            for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rows = [line(headers), line(["-" * w for w in widths])]
    rows += [line([col[i] for col in cells]) for i in range(len(summary))]
    return "\n".join(rows)


# -- commands ------------------------------------------------------------------------------------


def _load(path: str, overrides: dict[str, Any]) -> Scenario:
    import yaml

    scenario_module = _module("sim.scenario")
    try:
        scenario: Scenario = scenario_module.load_scenario(path, overrides=overrides or None)
    except yaml.YAMLError as err:  # the loader should wrap these; name the file if it did not
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(_one_line(problem), file=path, line=line) from err
    return scenario


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name).strip("._") or "scenario"


def overrides_tag(overrides: dict[str, Any]) -> str:
    """Six hex digits naming a set of ``--set``/``--seed`` overrides, whatever their order."""
    text = json.dumps(overrides, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _output_dirs(names: Sequence[str], output: str | None,
                 overrides: dict[str, Any] | None = None) -> list[Path]:
    """One directory per scenario: ``-o DIR`` for a single one, else ``DIR/<name>`` (default
    ``results/<name>``), with ``-2``, ``-3`` ... when two scenarios share a name. Without ``-o``,
    a run with overrides goes to ``results/<name>-<tag>`` (:func:`overrides_tag`), so it never
    replaces the results of the scenario as written."""
    if output is not None and len(names) == 1:
        return [Path(output)]
    base = Path(output) if output is not None else Path("results")
    tag = f"-{overrides_tag(overrides)}" if output is None and overrides else ""
    seen: dict[str, int] = {}
    dirs = []
    for name in names:
        safe = _safe_name(name) + tag
        seen[safe] = seen.get(safe, 0) + 1
        dirs.append(base / (safe if seen[safe] == 1 else f"{safe}-{seen[safe]}"))
    return dirs


def cmd_run(args: argparse.Namespace) -> int:
    _check_files(args.scenarios)
    overrides = parse_sets(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    # Validate every file before running any, so a typo in the last one costs nothing.
    scenarios = [_load(p, overrides) for p in args.scenarios]
    outdirs = _output_dirs([s.name for s in scenarios], args.output, overrides)
    result_mod = _module("sim.result")
    inputs = [*args.scenarios, *(t for s in scenarios for t in _input_files(s))]
    for outdir in outdirs:
        result_mod.refuse_inputs_inside(outdir, inputs)
    run = _module("sim.run").run
    for n, (scenario, outdir) in enumerate(zip(scenarios, outdirs, strict=True)):
        progress: Progress | LogProgress = Progress(scenario.name)
        if not progress.enabled:  # a log, not a terminal: a line every few seconds instead
            progress = LogProgress(scenario.name)
        try:
            result: Result = run(scenario, progress=progress) if progress.enabled else run(scenario)
        finally:
            progress.close()
        if n:
            print()
        if len(scenarios) > 1:
            print(f"== {scenario.name} ({args.scenarios[n]})")
        print(format_summary(result.summary()))
        drawn: list[str] = []

        def draw(tmp: Path, result: Result = result, outdir: Path = outdir,
                 drawn: list[str] = drawn) -> None:
            if not args.no_plots:
                figures = _module("sim.figures")
                drawn.extend(p.name for p in figures.draw_standard_figures(
                    result, tmp, source=outdir.name))

        # Tables, figures and report go into a temporary folder that then replaces outdir whole.
        result.save(outdir, command=args.command_line, extra=draw)
        written = [name for name in SAVED_FILES if (outdir / name).is_file()]
        written += [name for name in drawn if name not in written]
        print(f"wrote {outdir}/: {' '.join(written)}")
    return EXIT_OK


class _StopSignals:
    """SIGINT and SIGTERM during a sweep: the first raises KeyboardInterrupt (the sweep cancels its
    members and keeps what finished); later ones are ignored, so the clean-up, which is bounded,
    is never cut short by a traceback. ``first`` is the signal that stopped the sweep, if any."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.first: int | None = None
        self._armed = True
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self._armed and self.first is None:
            self.first = signum
            self._armed = False
            raise KeyboardInterrupt

    def disarm(self) -> None:
        """From now on a signal is ignored (the sweep is over; what is left is bounded)."""
        self._armed = False

    def __enter__(self) -> _StopSignals:
        with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
            for signum in self.SIGNALS:
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.first in self.SIGNALS:
            # stopped by a signal: the process is on its way out, and a second Ctrl-C while the
            # interpreter shuts down (the pool's thread is joined) would kill it with SIGINT;
            # SIG_IGN is the one handler that finalisation does not reset
            for signum in self._saved:
                signal.signal(signum, signal.SIG_IGN)
            return
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    @property
    def status(self) -> int:
        return EXIT_TERMINATED if self.first == signal.SIGTERM else EXIT_INTERRUPTED


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep's members in worker processes or on a dask cluster (DESIGN §7, §8)."""
    import shlex

    _check_files([args.scenario])
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected a positive number")
    overrides = parse_sets(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    scenario = _load(args.scenario, overrides)
    outdir = _output_dirs([scenario.name], args.output, overrides)[0]
    _module("sim.result").refuse_inputs_inside(outdir, [args.scenario, *_input_files(scenario)])
    sweep_mod = _module("sim.sweep")
    bar = Progress(scenario.name, delay_s=0.0)

    def progress(done: int, total: int, failed: int) -> None:
        filled = int(round(done / total * bar.width)) if total else bar.width
        extra = f", {failed} failed" if failed else ""
        bar.stream.write(f"\r{bar.label} [{'#' * filled}{'.' * (bar.width - filled)}] "
                         f"{done}/{total} runs{extra}")
        bar.stream.flush()
        bar.drawn = True

    stops = _StopSignals()
    with stops:  # until the resume line is out: one line, whatever else the user presses
        try:
            try:
                result: Result = sweep_mod.sweep(scenario, out_dir=outdir, workers=args.workers,
                                                 scheduler=args.scheduler, resume=args.resume,
                                                 progress=progress if bar.enabled else None)
            finally:
                stops.disarm()
        except (sweep_mod.SweepInterrupted, sweep_mod.SweepBroken) as stop:
            bar.close()
            again = ["migsim", "sweep", args.scenario, "-o", str(outdir)]
            again += [f"--set={item}" for item in args.set]
            again += [] if args.seed is None else ["--seed", str(args.seed)]
            again += [] if args.scheduler is None else ["--scheduler", args.scheduler]
            reason = "sweep terminated" if stops.first == signal.SIGTERM else stop.reason
            print(f"migsim: {reason}: {stop.done} of {stop.total} runs "
                  f"kept in {outdir}/; finish with: {shlex.join(again)} --resume", file=sys.stderr)
            return stops.status if isinstance(stop, KeyboardInterrupt) else EXIT_INTERNAL
        finally:
            bar.close()
    print(format_summary(result.summary()))
    written = [name for name in SAVED_FILES if (outdir / name).is_file()]
    if not args.no_plots:
        written += [n for n in _redraw(result, outdir) if n not in written]
    print(f"wrote {outdir}/: {' '.join(written)} members/")
    status = result.runs["status"] if "status" in result.runs else None
    if status is not None and len(status) and bool((status == "failed").all()):
        first = str(result.runs["failure_reason"].iloc[0]) if "failure_reason" in result.runs else ""
        print(f"migsim: every run of the sweep failed ({len(status)} of {len(status)}); first: "
              f"{_one_line(first)}", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    overrides = parse_sets(args.set)
    status = EXIT_OK
    for p in args.scenarios:
        try:
            _check_files([p])
            scenario = _load(p, overrides)
            expand = getattr(_module("sim.scenario"), "expand", None)
            _check_traces(p, expand(scenario) if expand is not None else [scenario])
        except Exception as err:
            if not _is_user_error(err):
                raise
            if args.debug:
                traceback.print_exc()
            print(_error_line(err), file=sys.stderr)
            status = EXIT_USAGE
        else:
            print(f"ok {p}")
    return status


def _check_traces(path: str, members: Sequence[Any]) -> None:
    """``check`` also wants every trace file a run will read to exist (``run`` records a missing
    one as that run's failure, so a sweep's other members still run)."""
    for member in members:
        if not isinstance(member, _module("sim.spec").Scenario):
            continue  # a stand-in loader's object (the CLI's tests)
        guests = [("", member.workload)] + [(f"vms[{i}].", g.workload)
                                              for i, g in enumerate(member.vms)]
        for prefix, workload in guests:
            if workload.kind == "trace" and workload.trace and not Path(workload.trace).exists():
                raise ScenarioError(f"no such file: {workload.trace}", file=path,
                                    key=f"{prefix}workload.trace")


def _doc_line(obj: Any) -> str:
    doc = getattr(obj, "doc", None)
    if not isinstance(doc, str) or not doc.strip():
        doc = getattr(obj, "__doc__", None) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return sentence if len(sentence) <= 100 else sentence[:97].rstrip() + "..."


def _plugin_note(item: Any) -> str:
    """" [plug-in: module]" for an encoder that does not come with migsim."""
    module = getattr(item, "__module__", "") if isinstance(item, type) else ""
    return f" [plug-in: {module}]" if module else ""


def _registry(module: str, attribute: str) -> dict[str, Any] | str:
    """The registry dict, or the one-line reason it is unavailable."""
    try:
        registry = getattr(_module(module), attribute)
    except (ImportError, AttributeError) as err:
        return f"(unavailable: {_one_line(str(err))})"
    return dict(registry)


def _print_section(title: str, entries: dict[str, str] | str) -> None:
    print(f"{title}:")
    if isinstance(entries, str):
        print(f"  {entries}")
        return
    if not entries:
        print("  (none)")
        return
    width = max(len(name) for name in entries)
    for name in sorted(entries):
        print(f"  {name.ljust(width)}  {entries[name]}".rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    # Scenarios named here are loaded first, so the encoders and capabilities their plug-ins
    # register are listed too.
    _check_files(args.scenarios)
    for path in args.scenarios:
        _load(path, {})
    first = True
    for title, module, attribute in (
        ("encoders", "sim.encoders", "ENCODERS"),
        ("workloads", "sim.workloads", "WORKLOADS"),
        ("capabilities", "sim.capabilities", "CAPABILITIES"),
        ("controllers", "sim.controllers", "CONTROLLERS"),
    ):
        registry = _registry(module, attribute)
        built_in = (getattr(_module(module), "BUILT_IN", None)
                    if attribute == "ENCODERS" and not isinstance(registry, str) else None)
        entries = registry if isinstance(registry, str) else {
            str(name): _doc_line(item) + (_plugin_note(item) if built_in is not None
                                          and name not in built_in else "")
            for name, item in registry.items()
        }
        if not first:
            print()
        first = False
        _print_section(title, entries)
    print()
    _print_section("negotiation modes", dict(_module("sim.choices").NEGOTIATION_MODES))
    return EXIT_OK


def results_folders(results_dir: Path) -> list[Path]:
    """The results folders under ``results_dir``: itself when it holds tables, else each
    subfolder that does (``migsim run A B -o DIR`` writes one per scenario), sorted; itself when
    neither (loading it then says what is missing)."""
    if (results_dir / "runs.parquet").is_file() or not results_dir.is_dir():
        return [results_dir]
    subfolders = sorted(p for p in results_dir.iterdir() if (p / "runs.parquet").is_file())
    return subfolders or [results_dir]


def cmd_plot(args: argparse.Namespace) -> int:
    folders = results_folders(Path(args.results_dir))
    load = _module("sim.result").Result.load
    results = [(folder, load(folder, with_scenario=False)) for folder in folders]
    for folder, result in results:  # every folder loads before any is redrawn
        for name in _redraw(result, folder):
            print(f"wrote {folder / name}")
    return EXIT_OK


def _redraw(result: Result, outdir: Path) -> list[str]:
    """Draw the standard figures and the report into a copy of ``outdir``, swapped in whole."""
    figures = _module("sim.figures")
    drawn: list[str] = []

    def draw(tmp: Path) -> None:
        for old in tmp.glob("*.png"):  # figures that no longer apply go
            old.unlink()
        drawn.extend(p.name for p in figures.draw_standard_figures(result, tmp,
                                                                   source=outdir.name))

    _module("sim.result").replace_folder(outdir, draw, keep_results=True)
    return drawn


def _input_files(scenario: Scenario) -> list[str]:
    """Files a scenario reads besides itself (``trace:`` or ``capture:`` of any workload, phase or
    guest), which an -o folder must not hold."""
    import dataclasses

    found: list[str] = []

    def walk(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                item = getattr(value, f.name)
                if f.name in ("trace", "capture") and isinstance(item, str | Path):
                    found.append(str(item))
                else:
                    walk(item)
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)

    walk(scenario)
    return found


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two saved results; exit 1 on drift beyond --rtol (DESIGN §7)."""
    compare = _module("sim.compare")
    try:
        comparison = compare.compare(args.baseline_dir, args.current_dir, args.rtol,
                                     match=args.match)
    except compare.CompareInputError as err:
        raise UsageError(_one_line(str(err))) from None
    outdir = Path(args.output) if args.output is not None else Path(args.current_dir) / "compare"
    written = compare.write_comparison(comparison, outdir)
    print(compare.summary_line(comparison, (args.baseline_dir, args.current_dir)))
    if not comparison.ok:
        print(compare.format_drift(comparison.drifted))
    print(f"wrote {outdir}/: {' '.join(p.name for p in written)}")
    return EXIT_OK if comparison.ok else compare.EXIT_DRIFT


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion script for ``args.shell``, generated from this parser."""
    print(_module("sim.completion").script(args.shell, build_parser()), end="")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Closed forms, published results and (``--real-qemu``) real QEMU against the model;
    exit 1 if any quantity is out of tolerance (sim/validation)."""
    if args.host is not None:
        _check_files([args.host])
    if args.linux and not args.real_qemu:
        raise UsageError("validate: --linux needs --real-qemu")
    if not 1 <= args.repeat <= 20:
        raise UsageError(f"validate: --repeat {args.repeat}: give 1 to 20 runs")
    return int(_module("sim.validation.command").main(
        real_qemu=args.real_qemu, output=args.output, patterns=args.case, host=args.host,
        linux=args.linux, repeat=args.repeat, qemu_trace=args.qemu_trace))


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure this host with short real migrations (or refit recorded ones) and write a host
    profile (sim/validation/calibrate.py)."""
    cal = _module("sim.validation.calibrate")
    qemu = _module("sim.validation.qemu")
    if args.real_qemu == (args.from_dir is not None):
        raise UsageError("calibrate: give --real-qemu (measure this host) or --from DIR "
                         "(refit recorded runs), one of them")
    recorded = None
    if args.from_dir is not None:
        recorded = Path(args.from_dir)
        if not recorded.is_dir():
            raise UsageError(f"--from {args.from_dir}: no such folder")
    elif qemu.find_qemu() is None:
        raise UsageError("calibrate --real-qemu: qemu-system-x86_64 not found "
                         "(apt-get install --no-install-recommends qemu-system-x86)")
    elif importlib.util.find_spec("qemu") is None or importlib.util.find_spec("qemu.qmp") is None:
        raise UsageError("calibrate --real-qemu: the qemu.qmp client is not installed "
                         "(pip install qemu.qmp)")
    out = Path(args.output)
    print(f"migsim calibrate: {'refitting ' + str(recorded) if recorded else 'measuring this host'}"
          f" -> {out}", file=sys.stderr)
    if recorded is None and (note := qemu.memory_note()) is not None:
        print(note, file=sys.stderr)  # said once by validate when it calibrates
    try:
        cal.calibrate(out, recorded is None, recorded,
                      log=lambda line: print(line, file=sys.stderr))
    except (cal.CalibrationError, qemu.QemuError) as err:
        # recorded runs that cannot be read or fitted are bad input; a measurement that failed
        # on this host is a failed run
        print(f"migsim calibrate: {err}", file=sys.stderr)
        return EXIT_USAGE if recorded is not None else EXIT_INTERNAL
    print(f"wrote {out}")
    return EXIT_OK


def cmd_qmp(args: argparse.Namespace) -> int:
    """Serve the scenario's source and destination over QMP until interrupted (DESIGN §7)."""
    import logging

    _check_files([args.scenario])
    overrides = parse_sets(args.set)
    scenario = _load(args.scenario, overrides)
    server_mod = _module("sim.qmp.server")
    addresses = {}
    for role in ("source", "destination"):
        try:
            addresses[role] = server_mod.parse_address(getattr(args, role))
        except server_mod.AddressError as err:
            raise UsageError(f"--{role}: {err}") from None
    src, dst = addresses["source"], addresses["destination"]
    same_unix = src.kind == dst.kind == "unix" and (
        os.path.realpath(src.path) == os.path.realpath(dst.path))
    same_tcp = src.kind == dst.kind == "tcp" and src.port == dst.port != 0 and (
        src.host == dst.host or {src.host, dst.host} <= {"localhost", "127.0.0.1"})
    if same_unix or same_tcp:
        raise UsageError(f"--source and --destination are both {src}: each endpoint needs its "
                         "own socket")
    if not (args.speed > 0 and math.isfinite(args.speed)):
        raise UsageError(f"--speed {args.speed:g}: expected a positive number")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                            format="migsim qmp: %(levelname)s: %(message)s")
    # Compile (or load) the numba kernels now, so a client's first migration does not stall the
    # server for the ~20 s a fresh install needs.
    spec = _module("sim.spec")
    _module("sim.run").run_one(spec.Scenario(name="warm-up", vm=spec.VmSpec(memory=16 * MiB)))
    testbed = _module("sim.run").Testbed(scenario)
    testbed.destination.autostart = args.autostart

    def ready(server: Any) -> None:
        print(f"migsim qmp: {scenario.name}: source on {server.addresses['source']}, "
              f"destination on {server.addresses['destination']}, speed {args.speed:g}x "
              f"(Ctrl-C to stop)", flush=True)

    try:
        server_mod.run_server(testbed, addresses["source"], addresses["destination"],
                              args.speed, on_ready=ready)
    except server_mod.AddressError as err:
        raise UsageError(_one_line(str(err))) from None
    if args.output is not None:
        outdir = Path(args.output)
        testbed.result().save(outdir, command=args.command_line)
        written = [name for name in SAVED_FILES if (outdir / name).is_file()]
        print(f"wrote {outdir}/: {' '.join(written)}")
    return EXIT_OK


def cmd_capture(args: argparse.Namespace) -> int:
    """Record a real QEMU migration arriving on a loopback socket (sim/capture.py)."""
    server_mod = _module("sim.qmp.server")
    addresses = {}
    for option in ("listen", "forward"):
        text = getattr(args, option)
        if text is None:
            continue
        try:
            address = server_mod.parse_address(text)
        except server_mod.AddressError as err:
            raise UsageError(f"--{option}: {err}") from None
        if address.kind != "tcp":
            raise UsageError(f"--{option} {text}: expected HOST:PORT (QEMU migrates over tcp:)")
        addresses[option] = address
    if "forward" in addresses and addresses["forward"].port == 0:
        raise UsageError(f"--forward {args.forward}: give the destination's port")
    if args.qmp is not None and not Path(args.qmp).exists():
        raise UsageError(f"--qmp {args.qmp}: no such socket")
    out = Path(args.output)

    def ready(where: str) -> None:
        print(f"migsim capture: waiting for one migration on {where}", flush=True)

    # Ctrl-C (or SIGTERM) mid-stream keeps what came. The handlers are installed here rather
    # than left to Python's default: a capture started from a script's background job inherits
    # SIGINT ignored, and then nothing but SIGKILL would stop it.
    with _StopSignals():
        cap = _module("sim.capture").run_capture(
            addresses["listen"], out, forward=addresses.get("forward"), content=args.content,
            qmp=args.qmp, on_ready=ready, command=args.command_line)
    if cap.qmp_error:
        print(f"migsim capture: warning: --qmp {cap.qmp_error}", file=sys.stderr)
    if cap.error is not None:
        print(f"migsim capture: {out}: {_one_line(str(cap.error))} (records before it written)",
              file=sys.stderr)
        return EXIT_USAGE
    count = len(cap.records.columns["kind"])
    print(f"wrote {out}/: {count} page records, {cap.chunks[-1][1] if cap.chunks else 0} bytes")
    return EXIT_OK


# -- parser and entry point ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Command-line misuse is one line and exit 2, like every other bad input (argparse prints
    the whole usage block first); ``-h`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    parser = _Parser(
        prog="migsim", parents=[common],
        description="Discrete-event simulator of QEMU pre-copy live migration.",
    )
    parser.add_argument("--version", action="version", version=f"migsim {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", parents=[common], help="run scenarios; summary table, files, plots")
    run.add_argument("scenarios", nargs="+", metavar="SCENARIO.yaml")
    run.add_argument("-o", "--output", metavar="DIR",
                     help="results directory (default results/<scenario name>, or "
                          "results/<scenario name>-<hash of the overrides> with --set/--seed; "
                          "with several scenarios, one subfolder each)")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a scenario key (repeatable)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--no-plots", action="store_true", help="do not draw figures")
    run.set_defaults(func=cmd_run)

    swp = sub.add_parser("sweep", parents=[common],
                         help="run a sweep's members in parallel (local processes or dask)")
    swp.add_argument("scenario", metavar="SCENARIO.yaml")
    swp.add_argument("-o", "--output", metavar="DIR",
                     help="results directory (default results/<scenario name>, or "
                          "results/<scenario name>-<hash of the overrides> with --set/--seed); "
                          "each finished run is kept in DIR/members/")
    swp.add_argument("--workers", type=int, metavar="N",
                     help="local worker processes (default: one per CPU; 1 runs in this process)")
    swp.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                     help="run the members on this dask.distributed scheduler instead")
    swp.add_argument("--resume", action="store_true",
                     help="reuse the runs already in DIR/members/ and run only the rest")
    swp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a scenario key (repeatable)")
    swp.add_argument("--seed", type=int, help="override the scenario's seed")
    swp.add_argument("--no-plots", action="store_true", help="do not draw figures")
    swp.set_defaults(func=cmd_sweep)

    check = sub.add_parser("check", parents=[common], help="validate scenarios only; exit 0 or 2")
    check.add_argument("scenarios", nargs="+", metavar="SCENARIO.yaml")
    check.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a scenario key (repeatable)")
    check.set_defaults(func=cmd_check)

    lst = sub.add_parser("list", parents=[common],
                         help="encoders, workloads, capabilities, controllers, negotiation modes")
    lst.add_argument("scenarios", nargs="*", metavar="SCENARIO.yaml",
                     help="load these first, so their plug-ins are listed too")
    lst.set_defaults(func=cmd_list)

    qmp = sub.add_parser("qmp", parents=[common],
                         help="serve the source and destination over QMP (libvirt, qemu.qmp)")
    qmp.add_argument("scenario", metavar="SCENARIO.yaml")
    qmp.add_argument("--source", required=True, metavar="SOCKET",
                     help="the source's QMP socket: a unix socket path or HOST:PORT (loopback)")
    qmp.add_argument("--destination", required=True, metavar="SOCKET",
                     help="the destination's QMP socket: a unix socket path or HOST:PORT")
    qmp.add_argument("--speed", type=float, default=100.0,
                     help="simulated seconds per wall-clock second (default 100)")
    qmp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a scenario key (repeatable)")
    qmp.add_argument("--autostart", action="store_true",
                     help="the destination runs the guest as soon as the migration completes "
                          "(default: it waits for cont, as QEMU run with -S)")
    qmp.add_argument("-o", "--output", metavar="DIR",
                     help="on exit, save the result tables to DIR")
    qmp.set_defaults(func=cmd_qmp)

    cap = sub.add_parser("capture", parents=[common],
                         help="record a real QEMU migration stream (a sink, or --forward)")
    cap.add_argument("--listen", required=True, metavar="HOST:PORT",
                     help="where the source's `migrate tcp:HOST:PORT` connects (loopback; "
                          "port 0: any free port, printed)")
    cap.add_argument("-o", "--output", required=True, metavar="DIR",
                     help="records.parquet, the four tables and (--content) pages.zst")
    cap.add_argument("--forward", metavar="HOST:PORT",
                     help="relay the stream to a real destination (`migrate-incoming` there)")
    cap.add_argument("--content", action="store_true",
                     help="also keep every sent page version (pages.zst)")
    cap.add_argument("--qmp", metavar="SOCKET",
                     help="the source's QMP unix socket: poll query-migrate, join its counters")
    cap.set_defaults(func=cmd_capture)

    plot = sub.add_parser("plot", parents=[common], help="(re)draw the standard figures")
    plot.add_argument("results_dir", metavar="RESULTS_DIR",
                      help="a results folder, or a folder of them (migsim run A B -o DIR)")
    plot.set_defaults(func=cmd_plot)

    cmp = sub.add_parser("compare", parents=[common],
                         help="compare two results directories; exit 1 on drift")
    cmp.add_argument("baseline_dir", metavar="BASELINE_DIR")
    cmp.add_argument("current_dir", metavar="CURRENT_DIR")
    cmp.add_argument("--rtol", type=float, default=0.05,
                     help="relative tolerance per metric (default 0.05)")
    cmp.add_argument("--match", choices=("run_id", "position", "params"), default="run_id",
                     help="pair runs by run_id (default), by position (the i-th run of each "
                          "side: an A/B of two scenarios) or by equal swept values")
    cmp.add_argument("-o", "--output", metavar="OUT",
                     help="where drift.csv and the figures go (default CURRENT_DIR/compare)")
    cmp.set_defaults(func=cmd_compare)

    val = sub.add_parser("validate", parents=[common],
                         help="check the model against closed forms, published results and "
                              "real QEMU; exit 1 if out of tolerance")
    val.add_argument("--real-qemu", action="store_true",
                     help="also migrate a tiny guest between two real QEMUs on loopback and "
                          "compare (skipped if qemu-system-x86_64 is missing)")
    val.add_argument("--linux", action="store_true",
                     help="with --real-qemu: also migrate real Linux guests (idle, Redis, "
                          "memcached, stress-ng) through a capture and check its page counts "
                          "against QEMU's (skipped per guest if its packages are missing)")
    val.add_argument("-o", "--output", metavar="DIR",
                     help="where validation.csv, the figure and the QEMU tables go "
                          "(default results/validation)")
    val.add_argument("--case", action="append", default=[], metavar="GLOB",
                     help="only the cases whose id matches (repeatable)")
    val.add_argument("--host", metavar="FILE",
                     help="with --real-qemu: predict the real cases with this host profile "
                          "(default: calibrate this host first, into DIR/host.yaml)")
    val.add_argument("--repeat", type=int, default=1, metavar="N",
                     help="with --real-qemu: migrate each real case N times and judge the "
                          "model against QEMU's mean (default 1)")
    val.add_argument("--qemu-trace", action="store_true",
                     help="with --real-qemu: time each real switchover from QEMU's trace points "
                          "into DIR/qemu-phases.csv (off by default: tracing adds its own "
                          "writes to the downtime it measures)")
    val.set_defaults(func=cmd_validate)

    cal = sub.add_parser("calibrate", parents=[common],
                         help="measure this host with short real migrations; write a host profile")
    cal.add_argument("--real-qemu", action="store_true",
                     help="run the calibration migrations between two real QEMUs on loopback")
    cal.add_argument("--from", dest="from_dir", metavar="DIR",
                     help="refit from runs recorded by an earlier --real-qemu (HOST-runs/)")
    cal.add_argument("-o", "--output", metavar="FILE", default="host.yaml",
                     help="the host profile to write (default host.yaml); the runs are kept in "
                          "FILE's stem + '-runs/'")
    cal.set_defaults(func=cmd_calibrate)

    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                          description="Print a completion script for migsim; load it with "
                                      "`source <(migsim completion bash)` (zsh: `completion "
                                      "zsh`), or save it where your shell reads completions.")
    comp.add_argument("shell", choices=("bash", "zsh"))
    comp.set_defaults(func=cmd_completion)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``migsim`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.command_line = ["migsim", *(sys.argv[1:] if argv is None else argv)]
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("migsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        if _is_user_error(err):
            print(_error_line(err), file=sys.stderr)
            return EXIT_USAGE
        print(f"migsim: internal error: {type(err).__name__}: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
