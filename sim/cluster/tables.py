"""A cluster run's tables: the four tables of DESIGN §6, one ``runs`` row per migration attempt
with the cluster's columns, plus ``queues`` (per-host queue lengths over time) and ``links``
(link utilisation over time, from the network).

``runs`` gets, after ``vm``: ``migration_id`` (0, 1, ... in start order), ``attempt`` (1 for a
first try), ``step`` (the plan step: ``evacuate``, ``drain h1``, ``return h1``, ``moves``),
``source_host``, ``destination_host`` (empty: no host had room), ``path`` (the links crossed,
comma-joined), ``queued_s`` (time in the queue before this attempt started), ``start_s`` and
``end_s`` (sim time of the attempt's start and end), ``source_supports`` and
``destination_supports`` (what each side's QEMU supported then, comma-joined). Every table's
``run_id`` is ``<run>.m<migration_id>``; the plan's own events (steps, upgrades) are ``events``
rows with ``run_id`` ``<run>.plan`` and endpoint ``management``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..capabilities import CAPABILITIES
from ..recorder import CLUSTER_RUNS_COLUMNS, STRING_DTYPE, Recorder, build_frame, event_detail
from ..result import Result
from ..spec import Scenario
from .scheduler import QueueRow

#: a plan event: t_s, event, detail
PlanEvent = tuple[float, str, str]

QUEUES_COLUMNS: tuple[str, ...] = (
    "run_id", "t_s", "host", "outbound_queued", "outbound_running", "inbound_running")
LINKS_COLUMNS: tuple[str, ...] = (
    "run_id", "t_s", "link", "tier", "flows", "used_bytes_per_s", "cross_bytes_per_s",
    "capacity_bytes_per_s")


@dataclass
class Attempt:
    """One migration attempt's recorder and its cluster columns."""

    migration_id: int
    recorder: Recorder
    step: str
    attempt: int
    source_host: str
    destination_host: str
    links: tuple[str, ...]
    queued_s: float
    start_s: float
    source_supports: frozenset[str]
    destination_supports: frozenset[str]
    end_s: float = float("nan")

    def columns(self) -> tuple[Any, ...]:
        return (self.migration_id, self.attempt, self.step, self.source_host,
                self.destination_host, ",".join(self.links), self.queued_s, self.start_s,
                self.end_s, _names(self.source_supports), _names(self.destination_supports))


def _names(caps: frozenset[str]) -> str:
    return ",".join(c for c in CAPABILITIES if c in caps)


def result(scenario: Scenario, name: str, records: Sequence[Attempt],
           plan_events: Sequence[PlanEvent], queue_rows: Sequence[QueueRow],
           links_frame: pd.DataFrame) -> Result:
    """The tables of the run ``name`` of ``scenario`` (see the module docstring)."""
    attempts = [a for a in records if a.recorder.finished]
    results = []
    for group in _groups(attempts):
        frames = Recorder.frames_of([a.recorder for a in group])
        runs = frames["runs"]
        extra = pd.DataFrame([a.columns() for a in group], columns=list(CLUSTER_RUNS_COLUMNS))
        for i, column in enumerate(CLUSTER_RUNS_COLUMNS):
            runs.insert(2 + i, column, extra[column].to_numpy())
        results.append(Result(runs, frames["passes"], frames["samples"], frames["events"]))
    out = Result.concat(results)
    if not results:  # nothing to migrate: the tables still have a cluster's columns
        for frame in out.tables().values():
            frame.insert(1, "vm", pd.Series([], dtype=STRING_DTYPE))
        empty = pd.DataFrame([], columns=list(CLUSTER_RUNS_COLUMNS))
        for i, column in enumerate(CLUSTER_RUNS_COLUMNS):
            out.runs.insert(2 + i, column, empty[column])
    out.events = pd.concat([out.events, _plan_events(name, plan_events, out.events)],
                           ignore_index=True)
    out.scenario = scenario
    out.extra = {"queues": queues(name, queue_rows), "links": links(name, links_frame)}
    return out


def _groups(attempts: Sequence[Attempt]) -> list[list[Attempt]]:
    """Runs of attempts whose runs rows have the same columns (exact mode adds one)."""
    groups: list[list[Attempt]] = []
    for a in attempts:
        if groups and groups[-1][0].recorder.same_columns(a.recorder):
            groups[-1].append(a)
        else:
            groups.append([a])
    return groups


def _plan_events(name: str, events: Sequence[PlanEvent], like: pd.DataFrame) -> pd.DataFrame:
    run_id = f"{name}.plan"
    rows = [(run_id, t, "management", f"cluster-{event}",
             event_detail(f"cluster-{event}", detail)) for t, event, detail in events]
    frame = build_frame(("run_id", "t_s", "endpoint", "event", "detail"), rows)
    if "vm" in like.columns:
        frame.insert(1, "vm", pd.Series([""] * len(frame), dtype=STRING_DTYPE))
    return frame


def queues(name: str, rows: Sequence[QueueRow]) -> pd.DataFrame:
    """Per-host queue lengths at every change (the scheduler's counts)."""
    frame = pd.DataFrame(list(rows), columns=list(QUEUES_COLUMNS[1:]))
    frame.insert(0, "run_id", pd.Series([name] * len(frame), dtype=STRING_DTYPE))
    return frame.astype({"t_s": "float64", "outbound_queued": "int64",
                         "outbound_running": "int64", "inbound_running": "int64"})


def links(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Link utilisation over time (:meth:`sim.network.Network.links_table`), with ``run_id``."""
    frame = frame.copy()
    frame.insert(0, "run_id", pd.Series([name] * len(frame), dtype=STRING_DTYPE))
    return frame[list(LINKS_COLUMNS)]
