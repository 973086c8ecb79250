"""What a run leaves behind: the four DESIGN §6 tables plus the Scenario that produced them.

``Result.save(dir)`` writes ``runs/passes/samples/events.parquet``, ``runs.csv`` (for eyes),
``scenario.yaml`` and ``provenance.json`` (version, scenario hash, command line), whole or not at
all (a temporary sibling folder renamed over ``dir``); ``Result.load(dir)`` reads them back. Saving
the same tables twice gives the same table bytes, so saved results can be diffed and checked into
regression baselines.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.errors import ResultsError
from sim.labels import format_param
from sim.recorder import (
    CLUSTER_RUNS_COLUMNS,
    COLUMNS,
    RUNS_COLUMNS,
    RUNS_OPTIONAL_COLUMNS,
    TABLES,
    empty_frame,
    runs_column_order,
)
from sim.spec import Scenario
from sim.units import MiB

SCENARIO_FILE = "scenario.yaml"
RUNS_CSV = "runs.csv"
PROVENANCE_FILE = "provenance.json"
REPORT_FILE = "report.html"
# The files a results folder is made of (plus the *.png figures): replaced together.
RESULT_FILES = frozenset({"runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
                          RUNS_CSV, SCENARIO_FILE, PROVENANCE_FILE, REPORT_FILE,
                          "queues.parquet", "links.parquet"})
#: tables a run may add to the four (a cluster's, :mod:`sim.cluster.tables`): saved and loaded
#: when present
EXTRA_TABLES: tuple[str, ...] = ("queues", "links")
FILE_MODE = 0o644


def _csv_cell(value: Any) -> Any:
    """A list value (a swept ``migration.capabilities``) as ``xbzrle,multifd``, as the
    ``capabilities`` column writes it; anything else as it is."""
    ndim = getattr(value, "ndim", None)  # lists come back from Parquet as numpy arrays
    if isinstance(value, list | tuple) or (isinstance(ndim, int) and ndim > 0):
        return ",".join(str(v) for v in (value if isinstance(value, list | tuple)
                                         else value.tolist()))
    return value


def runs_csv(runs: pd.DataFrame) -> str:
    """``runs.csv``: the runs table as text, list values comma-joined (not Python tuples)."""
    objects = [c for c in runs.columns if runs[c].dtype == object]
    return runs.assign(**{c: runs[c].map(_csv_cell) for c in objects}).to_csv(index=False)


class Result:
    """The tables of one or more runs (``runs``, ``passes``, ``samples``, ``events``) and their scenario.

    ``scenario`` is the Scenario that was run (for a sweep, preferably the base scenario with its
    ``sweep:`` block), a list of member Scenarios, or None (tables loaded without one).
    """

    def __init__(
        self,
        runs: pd.DataFrame | None = None,
        passes: pd.DataFrame | None = None,
        samples: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        scenario: Scenario | list[Scenario] | None = None,
    ) -> None:
        self.runs = runs if runs is not None else empty_frame("runs")
        self.passes = passes if passes is not None else empty_frame("passes")
        self.samples = samples if samples is not None else empty_frame("samples")
        self.events = events if events is not None else empty_frame("events")
        self.scenario = scenario
        #: the tables a run adds to the four, by name (EXTRA_TABLES; a cluster's queues, links)
        self.extra: dict[str, pd.DataFrame] = {}

    # -- building -------------------------------------------------------------------------------

    def tables(self) -> dict[str, pd.DataFrame]:
        """The four tables by name, in DESIGN §6 order."""
        return {
            "runs": self.runs,
            "passes": self.passes,
            "samples": self.samples,
            "events": self.events,
        }

    @classmethod
    def concat(cls, results: Iterable[Result]) -> Result:
        """One Result holding the rows of all ``results`` in order; scenarios become a list.

        Swept-parameter columns that only some runs have are NaN for the others.
        """
        results = list(results)
        if not results:
            return cls()
        if len(results) == 1:
            only = results[0]
            copy = cls(**_copy_tables(only), scenario=only.scenario)
            copy.extra = {name: frame.copy() for name, frame in only.extra.items()}
            return copy
        tables: dict[str, pd.DataFrame] = {}
        for name in TABLES:
            frames = [getattr(r, name) for r in results]
            nonempty = [f for f in frames if len(f)] or frames[:1]
            frame = pd.concat(nonempty, ignore_index=True, sort=False)
            if name == "runs":
                frame = frame[runs_column_order(frame.columns)]
            tables[name] = frame
        scenarios: list[Scenario] = []
        for r in results:
            if isinstance(r.scenario, list):
                scenarios.extend(r.scenario)
            elif r.scenario is not None:
                scenarios.append(r.scenario)
        out = cls(**tables, scenario=scenarios or None)
        for name in EXTRA_TABLES:
            extra = [r.extra[name] for r in results if name in r.extra]
            if extra:
                out.extra[name] = pd.concat(extra, ignore_index=True, sort=False)
        return out

    # -- files ----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *,
             command: Sequence[str] | None = None,
             extra: Callable[[Path], object] | None = None) -> Path:
        """Write the tables (Parquet each, plus ``runs.csv``), ``scenario.yaml`` and
        ``provenance.json`` into ``directory``, whole or not at all.

        Everything is written into a temporary sibling folder, then that folder replaces
        ``directory`` by rename (see ``replace_folder``): a failure at any point leaves the
        previous contents untouched. ``extra(tmp)`` may add files (figures, the report) to the
        folder before it is swapped in. ``command`` is the command line recorded in
        ``provenance.json`` (default ``sys.argv``). Returns the directory.

        Raises:
            ResultWriteError: the folder could not be written; the message names it.
        """
        out = Path(directory)

        def fill(tmp: Path) -> None:
            prov = provenance(self.scenario, command)
            meta = parquet_metadata(prov)
            for name, frame in [*self.tables().items(), *self.extra.items()]:
                write_file(tmp / f"{name}.parquet", _parquet_bytes(frame, meta))
            write_file(tmp / RUNS_CSV, runs_csv(self.runs).encode())
            if self.scenario is not None:
                write_file(tmp / SCENARIO_FILE, scenario_yaml(self.scenario).encode())
            write_file(tmp / PROVENANCE_FILE,
                       (json.dumps(prov, indent=2, sort_keys=True) + "\n").encode())
            if extra is not None:
                extra(tmp)

        replace_folder(out, fill)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, with_scenario: bool = True) -> Result:
        """Read a directory written by ``save``. The scenario is loaded when ``scenario.yaml`` exists.

        Raises:
            FileNotFoundError: a table's Parquet file is missing.
            sim.errors.ResultsError: a table is damaged or not a migsim table.
            sim.errors.ScenarioError: ``scenario.yaml`` does not load.
        """
        src = Path(directory)
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: no such results directory")
        tables = {}
        for name in TABLES:
            path = src / f"{name}.parquet"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing (is {src} a migsim results directory?)")
            tables[name] = _read_table(path, name)
        scenario = None
        if with_scenario and (src / SCENARIO_FILE).exists():
            scenario = _load_scenarios(src / SCENARIO_FILE)
        result = cls(**tables, scenario=scenario)
        for name in EXTRA_TABLES:
            if (src / f"{name}.parquet").exists():
                result.extra[name] = _read_table(src / f"{name}.parquet", name)
        return result

    # -- views ----------------------------------------------------------------------------------

    @property
    def params(self) -> list[str]:
        """The swept-parameter columns of ``runs`` (dotted scenario keys)."""
        known = set(RUNS_COLUMNS) | set(RUNS_OPTIONAL_COLUMNS) | set(CLUSTER_RUNS_COLUMNS)
        return [c for c in self.runs.columns if c not in known]

    def summary(self) -> pd.DataFrame:
        """One compact row per run, units in the column names (for printing, not for analysis)."""
        runs = self.runs
        out = pd.DataFrame(index=runs.index)

        def take(column: str, label: str, scale: float | None = None) -> None:
            if column in runs.columns:
                out[label] = runs[column] * scale if scale is not None else runs[column]

        take("run_id", "run_id")
        take("scenario", "scenario")
        for p in self.params:  # swept values as people write them: 8 MiB, xbzrle,multifd
            out[p] = [format_param(p, v) for v in runs[p]]
        take("status", "status")
        take("total_time_s", "total_s")
        take("downtime_s", "downtime_ms", 1e3)
        take("transferred_bytes", "transferred_MiB", 1.0 / MiB)
        take("dirty_sync_count", "syncs")
        take("mbps", "mbps")
        take("xbzrle_pages", "xbzrle_pages")
        take("max_throttle_pct", "throttle_pct")
        take("memory_match", "memory_match")
        if "failure_reason" in runs.columns and runs["failure_reason"].fillna("").astype(str).ne("").any():
            out["failure_reason"] = runs["failure_reason"]
        return out.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.runs)

    def __repr__(self) -> str:
        n = len(self.runs)
        status = ""
        if n and "status" in self.runs.columns:
            counts = self.runs["status"].value_counts(sort=False)
            status = ": " + ", ".join(f"{int(k)} {s}" for s, k in sorted(counts.items()))
        if isinstance(self.scenario, list):
            names = sorted({s.name for s in self.scenario})
            if len(names) == 1:
                scen = f"; scenario {names[0]!r}"
            elif len(names) <= 3:
                scen = f"; scenarios {', '.join(names)}"
            else:
                scen = f"; {len(names)} scenarios"
        elif self.scenario is not None:
            scen = f"; scenario {self.scenario.name!r}"
        else:
            scen = ""
        return (
            f"<Result {n} run{'s' if n != 1 else ''}{status}; {len(self.passes)} passes, "
            f"{len(self.samples)} samples, {len(self.events)} events{scen}>"
        )


# -- helpers --------------------------------------------------------------------------------------


def _read_table(path: Path, name: str) -> pd.DataFrame:
    """One table of a results folder; a damaged or foreign file is a ResultsError naming it."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, TypeError, pa.ArrowException) as err:
        raise ResultsError(f"{path}: not a readable Parquet table ({type(err).__name__}: "
                           f"{' '.join(str(err).split())[:200]})") from None
    missing = [c for c in COLUMNS.get(name, ()) if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ResultsError(f"{path}: not a migsim {name} table (missing columns: {shown})")
    return frame


def _copy_tables(result: Result) -> dict[str, pd.DataFrame]:
    return {name: frame.copy() for name, frame in result.tables().items()}


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with mixed value types (a swept parameter) become strings for Parquet."""
    fixed = None
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        types = {type(v) for v in frame[column] if not _is_missing(v)}
        if len(types) > 1:
            if fixed is None:
                fixed = frame.copy()
            fixed[column] = [None if _is_missing(v) else str(v) for v in frame[column]]
    return frame if fixed is None else fixed


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _parquet_bytes(frame: pd.DataFrame, metadata: dict[bytes, bytes] | None = None) -> bytes:
    table = pa.Table.from_pandas(_arrow_safe(frame), preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with mode 0644 less the umask, and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it: ``path`` is always whole.

    The file gets mode 0644 (less the umask), like any file a program creates.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- whole folders --------------------------------------------------------------------------------


class ResultWriteError(OSError):
    """A results folder could not be written; ``str(err)`` is one line naming the folder."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"{folder}: cannot write results: {reason}")
        self.folder = folder
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror[:1].lower()}{err.strerror[1:]}{where}"
    return f"{type(err).__name__}: {err}"


def is_result_file(name: str) -> bool:
    """A file a results folder is made of (replaced as a whole); anything else in the folder
    (``members/``, ``compare/``, files of the user's) is carried over untouched."""
    return name in RESULT_FILES or name.endswith(".png")


def replace_folder(target: Path, fill: Callable[[Path], object], *,
                   keep_results: bool = False, lock_timeout_s: float = 600.0) -> None:
    """Build a new ``target`` in a temporary sibling with ``fill(tmp)``, then swap it in by rename.

    Entries of the old folder that are not result files (``is_result_file``) move into the new
    one; with ``keep_results`` the old result files are linked (or copied) in first, so ``fill``
    only adds or replaces some (``migsim plot``). Writers of one folder are serialised by an
    ``flock`` on its parent directory. On any error the temporary folder is removed, the old
    folder is left as it was, and ``ResultWriteError`` names ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not target.is_dir():
            raise ResultWriteError(target, "exists and is not a folder")
        with _folder_lock(target.parent, lock_timeout_s, target):
            _replace_locked(target, fill, keep_results)
    except ResultWriteError:
        raise
    except OSError as err:
        raise ResultWriteError(target, _reason(err)) from err


@contextlib.contextmanager
def _folder_lock(parent: Path, timeout_s: float, target: Path) -> Iterator[None]:
    fd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ResultWriteError(target, "another migsim is writing there") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _replace_locked(target: Path, fill: Callable[[Path], object], keep_results: bool) -> None:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = target.with_name(f".{target.name}.new-{token}")
    old = target.with_name(f".{target.name}.old-{token}")
    os.mkdir(tmp, 0o777)  # the umask applies, as for any folder
    moved: list[str] = []
    swapped = False
    try:
        existing = sorted(os.listdir(target)) if target.is_dir() else []
        if keep_results:
            for name in existing:
                if is_result_file(name) and (target / name).is_file():
                    _link_or_copy(target / name, tmp / name)
        fill(tmp)
        for name in existing:
            if not is_result_file(name) and not (tmp / name).exists():
                os.rename(target / name, tmp / name)
                moved.append(name)
        if target.is_dir():
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            if old.exists():
                os.rename(old, target)
            raise
        swapped = True
    except BaseException:
        if not swapped:
            for name in reversed(moved):  # give the old folder back what it had
                with contextlib.suppress(OSError):
                    os.rename(tmp / name, target / name)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def refuse_inputs_inside(folder: Path, inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise ResultWriteError when ``folder`` holds (at any depth) one of ``inputs``, or is the
    current directory or one of its parents: replacing it would lose them."""
    out = Path(folder).resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise ResultWriteError(Path(folder), "it is the current directory or holds it; "
                                             "choose another -o folder")
    for item in inputs:
        path = Path(item).resolve()
        if out == path or out in path.parents:
            raise ResultWriteError(Path(folder), f"it holds the input {item}; "
                                                 "choose another -o folder")


# -- provenance -----------------------------------------------------------------------------------


def migsim_version() -> str:
    try:
        return metadata.version("migsim")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(scenario: Scenario | Sequence[Scenario] | None,
               command: Sequence[str] | None = None) -> dict[str, Any]:
    """What made a result: migsim's version, the sha256 of the saved ``scenario.yaml`` text (None
    without a scenario) and the command line (default ``sys.argv``)."""
    digest = None
    if scenario is not None:
        digest = hashlib.sha256(scenario_yaml(scenario).encode()).hexdigest()
    return {
        "migsim_version": migsim_version(),
        "scenario_sha256": digest,
        "command": [str(a) for a in (sys.argv if command is None else command)],
    }


def parquet_metadata(prov: dict[str, Any]) -> dict[bytes, bytes]:
    """The Parquet key-value metadata of every table: the version and the scenario's hash. The
    command line stays out (it differs between two runs of one scenario; the tables must not)."""
    meta = {b"migsim.version": str(prov["migsim_version"]).encode()}
    if prov.get("scenario_sha256"):
        meta[b"migsim.scenario_sha256"] = str(prov["scenario_sha256"]).encode()
    return meta


def read_provenance(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``provenance.json`` of a results folder, or None when it has none (or it does not parse)."""
    try:
        data = json.loads((Path(directory) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plain(value: Any) -> Any:
    """YAML-safe: tuples become lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def scenario_yaml(scenario: Scenario | Sequence[Scenario]) -> str:
    """The text ``save`` writes to ``scenario.yaml``: one YAML document, or one per member."""
    from sim.scenario import to_dict

    if isinstance(scenario, Scenario):
        return yaml.safe_dump(_plain(to_dict(scenario)), sort_keys=False, allow_unicode=True)
    docs = [_plain(to_dict(s)) for s in scenario]
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)


def _load_scenarios(path: Path) -> Scenario | list[Scenario]:
    from sim.scenario import load_scenario

    text = path.read_text()
    docs = list(yaml.safe_load_all(text))
    if len(docs) <= 1:
        return load_scenario(path)
    # Several member scenarios: each document is loaded as its own file.
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="migsim-scenarios-") as tmp:
        for i, doc in enumerate(docs):
            member = Path(tmp) / f"{path.stem}-{i}.yaml"
            member.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
            scenarios.append(load_scenario(member))
    return scenarios
