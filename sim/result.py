"""What a run leaves behind: the four DESIGN §6 tables plus the Scenario that produced them.

``Result.save(dir)`` writes ``runs/passes/samples/events.parquet``, ``runs.csv`` (for eyes) and
``scenario.yaml``; ``Result.load(dir)`` reads them back. Saving the same tables twice gives the same
bytes, so saved results can be diffed and checked into regression baselines.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.recorder import (
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
            return cls(**_copy_tables(only), scenario=only.scenario)
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
        return cls(**tables, scenario=scenarios or None)

    # -- files ----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the tables (Parquet each, plus ``runs.csv``) and ``scenario.yaml`` into ``directory``.

        Each file is written to a temporary name and renamed, so a crash never leaves half a file.
        Returns the directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in self.tables().items():
            write_atomic(out / f"{name}.parquet", _parquet_bytes(frame))
        write_atomic(out / RUNS_CSV, self.runs.to_csv(index=False).encode())
        if self.scenario is not None:
            write_atomic(out / SCENARIO_FILE, scenario_yaml(self.scenario).encode())
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, with_scenario: bool = True) -> Result:
        """Read a directory written by ``save``. The scenario is loaded when ``scenario.yaml`` exists.

        Raises:
            FileNotFoundError: a table's Parquet file is missing.
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
            tables[name] = pd.read_parquet(path)
        scenario = None
        if with_scenario and (src / SCENARIO_FILE).exists():
            scenario = _load_scenarios(src / SCENARIO_FILE)
        return cls(**tables, scenario=scenario)

    # -- views ----------------------------------------------------------------------------------

    @property
    def params(self) -> list[str]:
        """The swept-parameter columns of ``runs`` (dotted scenario keys)."""
        known = set(RUNS_COLUMNS) | set(RUNS_OPTIONAL_COLUMNS)
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
        for p in self.params:
            out[p] = runs[p]
        take("status", "status")
        take("total_time_s", "total_s")
        take("downtime_s", "downtime_ms", 1e3)
        take("transferred_bytes", "transferred_MiB", 1.0 / MiB)
        take("dirty_sync_count", "passes")
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


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(_arrow_safe(frame), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it: ``path`` is always whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
