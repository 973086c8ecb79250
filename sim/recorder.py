"""The run's logbook: the engine appends plain rows while simulating; four DataFrames come out at the end.

The four tables and their columns are DESIGN §6. Column names and dtypes live here and nowhere
else; every row must name every column of its table (a missing one is a ``KeyError`` naming it), so
the engine cannot silently leave a column out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

TABLES: tuple[str, ...] = ("runs", "passes", "samples", "events")

RUNS_COLUMNS: tuple[str, ...] = (
    "run_id",
    "scenario",
    "seed",
    # <swept parameters> go here, after seed
    "status",  # completed | failed | cancelled
    "failure_reason",
    "negotiation",
    "capabilities",  # in force, comma-joined
    "total_time_s",
    "setup_time_s",
    "downtime_s",
    "expected_downtime_s",
    "transferred_bytes",
    "precopy_bytes",
    "downtime_bytes",
    "normal_pages",
    "zero_pages",
    "xbzrle_pages",  # QEMU's xbzrle "pages": cache hits (encoded, unchanged or overflowed)
    "xbzrle_records",  # XBZRLE records sent (hits that went out encoded)
    "xbzrle_bytes",
    "xbzrle_cache_miss",
    "xbzrle_cache_miss_rate",
    "xbzrle_encoding_rate",
    "xbzrle_overflow",
    "plugin_pages",  # records of plug-in encoders (sim.plugins), all of them together
    "plugin_bytes",  # their wire bytes
    "dirty_sync_count",
    "mbps",
    "max_throttle_pct",
    "guest_cpu_lost_s",  # vCPU-seconds auto-converge took from the guest
    "postcopy_faults",  # remote page faults after the switch to post-copy
    "postcopy_stall_s",  # vCPU-seconds stalled on them (per vCPU, overlapping stalls count once); at most vm.vcpus x the post-copy phase (postcopy-active to the end)
    "pages_lost",
)
# A cluster's runs (sim.cluster.tables): after ``vm``, one row per migration attempt.
CLUSTER_RUNS_COLUMNS: tuple[str, ...] = (
    "migration_id",  # 0, 1, ... in start order
    "attempt",  # 1 for a first try; 0: never started (no host had room)
    "step",  # the plan's step: evacuate, moves, drain <host>, return <host>
    "source_host",
    "destination_host",
    "path",  # the links crossed, comma-joined
    "queued_s",  # time in the queue before this attempt started
    "start_s",  # sim time the attempt started
    "end_s",  # sim time it ended
    "source_supports",  # what each side's QEMU supported then, comma-joined
    "destination_supports",
)
# Only in exact content mode; appended after RUNS_COLUMNS when present.
RUNS_OPTIONAL_COLUMNS: tuple[str, ...] = ("memory_match",)

PASSES_COLUMNS: tuple[str, ...] = (
    "run_id",
    "pass",
    "t_start_s",
    "t_end_s",
    "dirty_pages_at_sync",
    "pages_sent",
    "bytes_sent",
    "zero_pages",
    "xbzrle_pages",  # cache hits, as in runs and QEMU's counter
    "xbzrle_records",  # records sent: normal + zero + xbzrle_records + plug-ins = pages_sent
    "normal_pages",
    "throttle_pct",
)

SAMPLES_COLUMNS: tuple[str, ...] = (
    "run_id",
    "t_s",
    "bandwidth_bytes_per_s",
    "threshold_bytes",
    "pending_bytes",
    "expected_downtime_s",
    "dirty_pages_rate",
    "transferred_bytes",
    "throttle_pct",
    "status",
)

EVENTS_COLUMNS: tuple[str, ...] = (
    "run_id",
    "t_s",
    "endpoint",  # source | destination | link | management | harness
    "event",
    "detail",  # one JSON object: MIGRATION {status}, MIGRATION_PASS {pass}, dirty-sync {reason, pending_before_bytes, pending_after_bytes, threshold_bytes, transferred_bytes}, throttle {kind, pct}, bytes-wasted {bytes}, fault {kind, duration_s, bandwidth_bytes_per_s}, encoder-stats {encoder, pages, bytes}, QMP commands their arguments or reply; free text (errors, switchover) as {message}
)

COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": RUNS_COLUMNS,
    "passes": PASSES_COLUMNS,
    "samples": SAMPLES_COLUMNS,
    "events": EVENTS_COLUMNS,
}

# Column kinds: "int" -> int64, "float" -> float64 (None -> NaN), "str" -> strings (None -> ""),
# "bool" -> bool. A name appearing in several tables has the same kind in all of them.
KINDS: dict[str, str] = {
    "run_id": "str",
    "scenario": "str",
    "seed": "int",
    "status": "str",
    "failure_reason": "str",
    "negotiation": "str",
    "capabilities": "str",
    "total_time_s": "float",
    "setup_time_s": "float",
    "downtime_s": "float",
    "expected_downtime_s": "float",
    "transferred_bytes": "int",
    "precopy_bytes": "int",
    "downtime_bytes": "int",
    "normal_pages": "int",
    "zero_pages": "int",
    "xbzrle_pages": "int",
    "xbzrle_records": "int",
    "xbzrle_bytes": "int",
    "xbzrle_cache_miss": "int",
    "xbzrle_cache_miss_rate": "float",
    "xbzrle_encoding_rate": "float",
    "xbzrle_overflow": "int",
    "plugin_pages": "int",
    "plugin_bytes": "int",
    "dirty_sync_count": "int",
    "mbps": "float",
    "max_throttle_pct": "float",
    "guest_cpu_lost_s": "float",
    "postcopy_faults": "int",
    "postcopy_stall_s": "float",
    "pages_lost": "int",
    "migration_id": "int",
    "attempt": "int",
    "step": "str",
    "source_host": "str",
    "destination_host": "str",
    "path": "str",
    "queued_s": "float",
    "start_s": "float",
    "end_s": "float",
    "source_supports": "str",
    "destination_supports": "str",
    "memory_match": "bool",
    "pass": "int",
    "t_start_s": "float",
    "t_end_s": "float",
    "dirty_pages_at_sync": "int",
    "pages_sent": "int",
    "bytes_sent": "int",
    "throttle_pct": "float",
    "t_s": "float",
    "bandwidth_bytes_per_s": "float",
    "threshold_bytes": "float",
    "pending_bytes": "int",
    "dirty_pages_rate": "float",
    "endpoint": "str",
    "event": "str",
    "detail": "str",
}

# The dtype pandas gives a column of strings: object (pandas 2) or str (pandas 3).
STRING_DTYPE = pd.Series(["x"]).dtype


def missing_value(column: str) -> Any:
    """What a column holds where its quantity is unknown: NaN (floats), 0 (counts), "" or
    False; a column without a kind is a float by its unit suffix, else a count."""
    kind = KINDS.get(column) or ("float" if column.endswith(("_s", "_rate", "_pct")) else "int")
    return {"float": math.nan, "str": "", "bool": False}.get(kind, 0)


def runs_row(**known: Any) -> dict[str, Any]:
    """A runs row (every column but ``run_id`` and ``scenario``) from the quantities known by
    name; the others hold :func:`missing_value`. The one builder of runs rows: a simulated
    migration's (from its state), a sweep member's that could not run, a real QEMU's."""
    unknown = sorted(set(known) - set(RUNS_COLUMNS) - set(RUNS_OPTIONAL_COLUMNS))
    if unknown:
        raise KeyError(f"runs: unknown column(s) {', '.join(unknown)}")
    row = {c: known.get(c, missing_value(c)) for c in RUNS_COLUMNS[2:]}
    row.update({c: known[c] for c in RUNS_OPTIONAL_COLUMNS if c in known})
    return row


def _check_keys(table: str, given: Iterable[str], expected: Sequence[str]) -> None:
    given_set = set(given)
    missing = [c for c in expected if c not in given_set]
    if missing:
        raise KeyError(f"{table} row is missing column(s): {', '.join(missing)}")
    unknown = sorted(given_set.difference(expected))
    if unknown:
        raise KeyError(
            f"{table} row has unknown column(s): {', '.join(unknown)}; "
            f"the columns are: {', '.join(expected)}"
        )


def _int_array(name: str, values: Sequence[Any]) -> np.ndarray:
    for v in values:
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
                continue
            raise TypeError(f"column {name!r} holds integers (got {v!r})")
    return np.asarray(values, dtype=np.int64).reshape(len(values))


def _float_array(name: str, values: Sequence[Any]) -> np.ndarray:
    for v in values:
        if isinstance(v, str | bytes):
            raise TypeError(f"column {name!r} holds numbers (got {v!r})")
    try:
        return np.asarray(
            [math.nan if v is None else v for v in values], dtype=np.float64
        ).reshape(len(values))
    except (TypeError, ValueError) as e:
        raise TypeError(f"column {name!r} holds numbers: {e}") from e


def _column(name: str, values: Sequence[Any]) -> pd.Series:
    kind = KINDS.get(name)
    if kind == "int":
        return pd.Series(_int_array(name, values), dtype=np.int64, name=name)
    if kind == "float":
        return pd.Series(_float_array(name, values), dtype=np.float64, name=name)
    if kind == "bool":
        return pd.Series(np.asarray([bool(v) for v in values], dtype=bool), name=name)
    if kind == "str":
        out = []
        for v in values:
            if v is None:
                out.append("")
            elif isinstance(v, str):
                out.append(v)
            else:
                raise TypeError(f"column {name!r} holds strings (got {v!r})")
        return pd.Series(out, dtype=STRING_DTYPE, name=name)
    # A swept parameter: whatever type its values have.
    return pd.Series(list(values), name=name)


def build_frame(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """A DataFrame from row tuples, in ``columns`` order and with each column's fixed dtype."""
    data = {name: _column(name, [row[i] for row in rows]) for i, name in enumerate(columns)}
    return pd.DataFrame(data, columns=list(columns))


#: the samples columns compiled code writes, in the block's row order (:meth:`Recorder.sample_block`)
BLOCK_COLUMNS = ("t_s", "bandwidth_bytes_per_s", "threshold_bytes", "pending_bytes",
                 "expected_downtime_s", "transferred_bytes")


#: samples rows a block of the recorder holds (a block is never grown: a full one is kept as is)
SAMPLE_BLOCK = 8192

#: the samples block's rows, in order (the status's code comes last)
_BLOCK_NAMES = (*BLOCK_COLUMNS, "dirty_pages_rate", "throttle_pct")


def _number(name: str, value: Any) -> float:
    """One samples value, checked as :func:`_column` checks a whole column."""
    if KINDS[name] == "int":
        return float(_int_array(name, [value])[0])
    return float(_float_array(name, [value])[0])


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"column {name!r} holds strings (got {value!r})")
    return value


def _samples_frame(recorders: Sequence[Recorder]) -> pd.DataFrame:
    """The samples table of several runs, built from columns (not one row tuple a window)."""
    per_run = [r._sample_pieces() for r in recorders]
    counts = [r.n_samples for r in recorders]
    data: dict[str, pd.Series] = {
        "run_id": string_column([r.run_id for r in recorders],
                                np.repeat(np.arange(len(recorders)), counts))}
    labels: list[str] = []
    codes: list[np.ndarray] = []
    for pieces, statuses in per_run:  # one list of labels for all runs
        labels.extend(s for s in statuses if s not in labels)
        index = np.asarray([labels.index(s) for s in statuses], np.int32)
        codes.extend(index[piece[-1].astype(np.int32)] for piece in pieces)
    for name in SAMPLES_COLUMNS[1:]:
        if name == "status":
            data[name] = string_column(labels, np.concatenate(codes) if codes else [])
            continue
        dtype = np.int64 if KINDS[name] == "int" else np.float64
        row = _BLOCK_NAMES.index(name)
        # one copy: every run's every block's rows straight into the column
        values = np.concatenate([piece[row] for pieces, _ in per_run for piece in pieces] or
                                [np.empty(0)], dtype=dtype, casting="unsafe")
        data[name] = pd.Series(values, dtype=dtype, name=name, copy=False)
    # copy=False: no consolidation of the columns into one 2-D block (a copy of the table)
    return pd.DataFrame(data, columns=list(SAMPLES_COLUMNS), copy=False)


def string_column(labels: Sequence[str], codes: Any) -> pd.Series:
    """A string column from a few labels and each row's index into them, built in Arrow
    (a Python string per row costs seconds and gigabytes for tens of millions of rows)."""
    indices = pa.array(np.asarray(codes, np.int32))
    array = pa.DictionaryArray.from_arrays(indices, pa.array(list(labels), pa.large_string()))
    strings = array.cast(pa.large_string())
    return pd.Series(strings.to_pandas(types_mapper={pa.large_string(): STRING_DTYPE}.get),
                     dtype=STRING_DTYPE)


def empty_frame(table: str) -> pd.DataFrame:
    """The table with no rows, its columns and dtypes in place."""
    return build_frame(COLUMNS[table], [])


def runs_column_order(columns: Iterable[str]) -> list[str]:
    """The order of a runs table's columns: DESIGN §6, with swept parameters after ``seed`` and a
    fleet's ``vm`` after ``run_id``."""
    columns = list(columns)
    known = set(RUNS_COLUMNS) | set(RUNS_OPTIONAL_COLUMNS) | {"vm"} | set(CLUSTER_RUNS_COLUMNS)
    params = [c for c in columns if c not in known]
    head = [c for c in RUNS_COLUMNS[:1] + ("vm", *CLUSTER_RUNS_COLUMNS) + RUNS_COLUMNS[1:3]
            if c in columns]
    tail = [c for c in RUNS_COLUMNS[3:] + RUNS_OPTIONAL_COLUMNS if c in columns]
    return head + params + tail


# -- events.detail: one JSON object --------------------------------------------------------------

# A plain-text detail of these events is one value, under this key.
DETAIL_VALUE_KEYS: dict[str, str] = {"MIGRATION": "status", "MIGRATION_PASS": "pass",
                                     "bytes-wasted": "bytes"}
# A plain-text detail of these events starts with a word (then key=value pairs), under this key.
DETAIL_LEAD_KEYS: dict[str, str] = {"fault": "kind", "encoder-stats": "encoder",
                                    "throttle": "kind"}
# A plain-text detail of these events is a comma-joined list, under this key.
DETAIL_LIST_KEYS: dict[str, str] = {"inband-offer": "capabilities",
                                    "inband-accept": "capabilities"}
_PAIR = re.compile(r"^([A-Za-z_][\w.-]*)=(\S*)$")


def _value(text: str) -> Any:
    """``12`` -> 12, ``0.5`` -> 0.5, ``20%`` -> 20.0; anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.endswith("%"):
        try:
            return float(text[:-1])
        except ValueError:
            pass
    return text


def detail_fields(event: str, detail: str | Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one event's detail. A mapping is taken as it is and a JSON object read; a
    plain text (migsim 0.3's details, which mixed bare values, ``key=value`` pairs and prose)
    is read by the event's rule, and prose becomes ``{"message": text}``."""
    if isinstance(detail, Mapping):
        return dict(detail)
    text = str(detail)
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    if event in DETAIL_LIST_KEYS:
        return {DETAIL_LIST_KEYS[event]: [c for c in text.split(",") if c]}
    if not text:
        return {}
    if event in DETAIL_VALUE_KEYS:
        return {DETAIL_VALUE_KEYS[event]: _value(text)}
    words = text.split()
    lead: dict[str, Any] = {}
    if event in DETAIL_LEAD_KEYS and words and "=" not in words[0]:
        lead = {DETAIL_LEAD_KEYS[event]: words[0]}
        words = words[1:]
        if event == "throttle" and len(words) == 1 and words[0].endswith("%"):
            return {**lead, "pct": _value(words[0])}
    pairs = [_PAIR.match(w) for w in words]
    if all(pairs) and (pairs or lead):
        return {**lead, **{m.group(1): _value(m.group(2)) for m in pairs if m}}
    return {"message": text}


def event_detail(event: str, detail: str | Mapping[str, Any]) -> str:
    """``events.detail``: the detail's fields (:func:`detail_fields`) as compact JSON."""
    return json.dumps(detail_fields(event, detail), separators=(",", ":"), ensure_ascii=False)


def event_field(events: pd.DataFrame, key: str) -> pd.Series:
    """One field of every event's detail (None where it has none), from this version's JSON
    details or an older result's plain text alike."""
    if not len(events):
        return pd.Series([], dtype=object, index=events.index)
    return pd.Series([detail_fields(e, d).get(key) for e, d in
                      zip(events["event"], events["detail"], strict=True)],
                     index=events.index, dtype=object)


class Recorder:
    """Collects one run's rows as plain tuples and builds the DESIGN §6 tables once, at the end.

    ``run_id`` (every table) and ``scenario`` (runs) are filled in here; every other column must be
    passed by name.
    """

    def __init__(self, run_id: str, scenario_name: str, vm: str | None = None) -> None:
        self.run_id = run_id
        self.scenario_name = scenario_name
        self.vm = vm  # a fleet's guest: every table gets a ``vm`` column after ``run_id``
        self._passes: list[tuple[Any, ...]] = []
        #: the samples, a column a row in blocks of SAMPLE_BLOCK rows (a row each for the
        #: :data:`BLOCK_COLUMNS`, dirty_pages_rate, throttle_pct and the status's index in
        #: ``_statuses``), from Python windows and compiled ones alike: a fleet of a thousand
        #: guests closes tens of millions of windows, so no Python object per row; blocks are
        #: never grown (copied), the table copies each once
        self._blocks: list[np.ndarray] = []  # full ones
        self._block = np.empty((len(BLOCK_COLUMNS) + 3, 0), np.float64)  # being filled
        self._block_at = 0  # its first free column
        self._block_n = 0  # samples in all
        self._statuses: list[str] = []
        self._events: list[tuple[Any, ...]] = []
        self._run: dict[str, Any] | None = None
        self._params: dict[str, Any] = {}

    def event(self, t_s: float, endpoint: str, event: str,
              detail: str | Mapping[str, Any] = "") -> None:
        """One event: a MIGRATION status change, a MIGRATION_PASS, a negotiation message, an
        error. ``detail`` is stored as one JSON object (:func:`event_detail`)."""
        self._events.append((self.run_id, t_s, endpoint, event, event_detail(event, detail)))

    def sample(self, **columns: Any) -> None:
        """One 100 ms window: every SAMPLES_COLUMNS column but ``run_id``. A value of the
        wrong type (1.5 for an integer column, a string for a number) is a TypeError here."""
        if self._block_n == 0:  # the engine passes the same keys every window: check the first
            _check_keys("samples", columns, SAMPLES_COLUMNS[1:])
        at = self._room()
        for i, name in enumerate(_BLOCK_NAMES):
            self._block[i, at] = _number(name, columns[name])
        self._block[-1, at] = self._status_code(_text("status", columns["status"]))
        self.samples_written(1)

    def sample_block(self, dirty_pages_rate: float, throttle_pct: float,
                     status: str) -> tuple[np.ndarray, int, tuple[float, float, float]]:
        """Room for samples rows that compiled code writes in place (:mod:`sim.engine.cruise`),
        at least one: the block (a row per :data:`BLOCK_COLUMNS` column, then
        dirty_pages_rate, throttle_pct and the status's code), the first free column (the
        rest up to the block's end is free), and the values of those last three for these
        rows; :meth:`samples_written` counts them."""
        at = self._room()
        return self._block, at, (dirty_pages_rate, throttle_pct,
                                 float(self._status_code(status)))

    def samples_written(self, n: int) -> None:
        """``n`` rows were written from :meth:`sample_block`'s first free column on."""
        self._block_at += n
        self._block_n += n

    def _room(self) -> int:
        """Where the next samples row goes in ``_block`` (a fresh block when it is full)."""
        if self._block_at == self._block.shape[1]:
            if self._block_at:
                self._blocks.append(self._block)
            self._block = np.empty((self._block.shape[0], SAMPLE_BLOCK))
            self._block_at = 0
        return self._block_at

    def _status_code(self, status: str) -> int:
        if status not in self._statuses:
            self._statuses.append(status)
        return self._statuses.index(status)

    def pass_row(self, **columns: Any) -> None:
        """One sync interval: every PASSES_COLUMNS column but ``run_id``."""
        _check_keys("passes", columns, PASSES_COLUMNS[1:])
        self._passes.append((self.run_id, *(columns[c] for c in PASSES_COLUMNS[1:])))

    def finish(self, params: Mapping[str, Any] | None = None, **columns: Any) -> None:
        """The run's single runs row: every RUNS_COLUMNS column but ``run_id`` and ``scenario``.

        ``memory_match`` may be given (exact mode). ``params`` maps swept parameters (dotted keys)
        to their values; they become columns after ``seed``.
        """
        if self._run is not None:
            raise RuntimeError(f"run {self.run_id!r} already finished")
        expected = list(RUNS_COLUMNS[2:])
        for optional in RUNS_OPTIONAL_COLUMNS:
            if optional in columns:
                expected.append(optional)
        _check_keys("runs", columns, expected)
        # A swept key that is itself a runs column (``negotiation``) is shown by that column.
        params = {k: v for k, v in (params or {}).items()
                  if not (k in columns and columns[k] == v)}
        clash = sorted(set(params) & (set(RUNS_COLUMNS) | set(RUNS_OPTIONAL_COLUMNS)))
        if clash:
            raise KeyError(f"swept parameter(s) clash with runs columns: {', '.join(clash)}")
        self._params = params
        self._run = {"run_id": self.run_id, "scenario": self.scenario_name, **params, **columns}

    @property
    def finished(self) -> bool:
        return self._run is not None

    def frames(self) -> dict[str, pd.DataFrame]:
        """The four tables (``runs``, ``passes``, ``samples``, ``events``); needs ``finish()`` first."""
        return self.frames_of([self])

    def _rows(self) -> dict[str, list[tuple[Any, ...]]]:
        if self._run is None:
            raise RuntimeError(f"run {self.run_id!r}: frames() before finish()")
        order = [c for c in runs_column_order(self._run) if c != "vm"]
        # Some events are stamped ahead of the engine's clock (a message's arrival one latency
        # later): the table is in time order, ties in the order they were recorded.
        return {"runs": [tuple(self._run[c] for c in order)], "passes": self._passes,
                "events": sorted(self._events, key=lambda row: row[1])}

    def _sample_pieces(self) -> tuple[list[np.ndarray], list[str]]:
        """The samples rows so far as views of the blocks in the order they were recorded
        (rows as :meth:`sample_block` says; the status as an index into the list of labels
        returned). Integer columns are held as float64: exact below 2**53 bytes (8 PiB)."""
        pieces = [*self._blocks, self._block[:, :self._block_at]]
        return [p for p in pieces if p.shape[1]], list(self._statuses)

    @property
    def n_samples(self) -> int:
        return self._block_n

    @staticmethod
    def frames_of(recorders: Sequence[Recorder]) -> dict[str, pd.DataFrame]:
        """The four tables of several runs with the same runs columns (a fleet's guests), their
        rows in ``recorders`` order: each table is built once, not once per guest and then
        concatenated (a fleet of a thousand would spend seconds in pandas)."""
        first = recorders[0]
        if first._run is None:
            raise RuntimeError(f"run {first.run_id!r}: frames() before finish()")
        order = [c for c in runs_column_order(first._run) if c != "vm"]
        if any(r._run is None or list(r._run) != list(first._run) for r in recorders[1:]):
            raise ValueError("frames_of: the runs do not have the same runs columns")
        columns = {"runs": order, "passes": list(PASSES_COLUMNS),
                   "events": list(EVENTS_COLUMNS)}
        rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in columns}
        vms: dict[str, list[str]] = {name: [] for name in (*columns, "samples")}
        for rec in recorders:
            for name, mine in rec._rows().items():
                rows[name].extend(mine)
                if rec.vm is not None:
                    vms[name].extend([rec.vm] * len(mine))
        frames = {name: build_frame(columns[name], rows[name]) for name in columns}
        frames["samples"] = _samples_frame(recorders)
        if first.vm is not None:
            for name, frame in frames.items():
                column = pd.Series(vms[name], dtype=STRING_DTYPE) if name != "samples" else \
                    string_column([str(r.vm) for r in recorders],
                                  np.repeat(np.arange(len(recorders)),
                                            [r.n_samples for r in recorders]))
                frame.insert(1, "vm", column)
        return {name: frames[name] for name in ("runs", "passes", "samples", "events")}

    def same_columns(self, other: Recorder) -> bool:
        """Whether ``other``'s runs row has the same columns (so their tables build as one)."""
        return (self._run is not None and other._run is not None
                and list(self._run) == list(other._run) and (self.vm is None) == (other.vm is None))
