"""Where a real QEMU's downtime goes: its switchover timed from QEMU's own trace points.

QMP gives a migration's downtime in whole milliseconds and nothing of its parts. QEMU's trace
events (``-trace enable=...``; the distribution's build logs them to stderr as
``PID@SECONDS:event args``) mark each step of the switchover in the source's migration thread
(``migration/migration.c``: ``migration_completion``; ``migration/savevm.c``:
``qemu_savevm_state_complete_precopy``; ``migration/ram.c``: ``ram_save_complete``) and on the
destination (``ram_load_complete``, ``qemu_loadvm_state_post_main``). With ``migsim validate
--real-qemu --qemu-trace`` the harness enables a handful of them (section-level, never per page;
still off by default, since the source writes a line for each device section inside the
downtime being timed) and this module reads them back as one row per run:

* ``final_pages``: the pages the stop-and-copy sends: the pending bytes of the last
  ``migrate_pending`` before ``migration_thread_low_pending`` (after the sync that decided it;
  the completion's own sync, under a millisecond later, adds a handful, which the trace cannot
  tell: its ``dirty_pages`` is the count since the rate period began, not since the last sync);
* ``stop_ms``: the vCPUs stopped (``runstate_set`` to finish-migrate, the downtime's start) until
  the RAM section begins;
* ``ram_source_ms``: the source's last RAM section (``savevm_section_start ram`` to its
  ``savevm_section_end``); ``ram_destination_ms``: from the same start until the destination's
  last ``ram_load_complete`` (it loaded the final RAM section): the slower end sets the pace,
  and the socket's buffers let the source finish a few milliseconds early;
* ``device_ms``: the device-state sections; ``tail_ms``: from the last section to the state
  ``completed`` (the stream's last flush);
* ``downtime_ms``: the switchover's length from the trace (QMP rounds it).

Nothing here feeds the model: the rows are reported beside the model's own downtime
(``qemu-phases.csv``), so a downtime miss can be read as a count miss (pages) or a pace miss
(microseconds a page).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAGE = 4096

#: the trace points the harness enables (section-level: a handful of lines a pass)
EVENTS = ("migrate_pending", "migration_thread_low_pending", "runstate_set",
          "savevm_state_complete_precopy", "savevm_section_start",
          "savevm_section_end", "migrate_set_state", "ram_load_complete",
          "qemu_loadvm_state_post_main")

#: ``PID@SECONDS.MICROS:event args`` (QEMU's log trace backend)
_LINE = re.compile(r"^\d+@(\d+\.\d+):(\w+) ?(.*)$")


def trace_args() -> list[str]:
    """QEMU command-line arguments that enable :data:`EVENTS` (``-msg timestamp=on``: without
    it the log backend writes no ``PID@SECONDS:`` prefix; QEMU's own messages get a date)."""
    return ["-msg", "timestamp=on",
            *(arg for event in EVENTS for arg in ("-trace", f"enable={event}"))]


def is_trace_line(line: str) -> bool:
    """Whether ``line`` of a QEMU log is a trace record (not QEMU's own message)."""
    return _LINE.match(line) is not None


def _records(text: str) -> list[tuple[float, str, str]]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((float(m.group(1)), m.group(2), m.group(3)))
    return out


@dataclass(frozen=True)
class Phases:
    """The stop-and-copy of one real pre-copy migration, from QEMU's trace (times in ms)."""

    final_pages: int
    stop_ms: float
    ram_source_ms: float
    ram_destination_ms: float
    device_ms: float
    tail_ms: float
    downtime_ms: float

    def _per_page(self, ms: float) -> float:
        return 1000 * ms / self.final_pages if self.final_pages else math.nan

    @property
    def us_per_page_source(self) -> float:
        return self._per_page(self.ram_source_ms)

    @property
    def us_per_page_destination(self) -> float:
        return self._per_page(self.ram_destination_ms)

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "us_per_page_source": self.us_per_page_source,
                "us_per_page_destination": self.us_per_page_destination}


def parse(source: str, destination: str) -> Phases | None:
    """The switchover of a completed pre-copy migration from the two QEMUs' logs, or None when
    the logs hold no such switchover (no trace backend, post-copy, a cancelled run)."""
    src = _records(source)
    if any(ev == "migrate_set_state" and args.endswith("postcopy-active") for _, ev, args in src):
        return None  # a post-copy switch sends no stop-and-copy of RAM
    stop = next((i for i, (_, ev, args) in enumerate(src)
                 if ev == "runstate_set" and "(finish-migrate)" in args.split("new_state")[-1]),
                None)
    if stop is None:
        return None
    t_stop = src[stop][0]
    before, after = src[:stop], src[stop:]
    pending = next((args for _, ev, args in reversed(before) if ev == "migrate_pending"), None)
    m = re.search(r"pending size (\d+)", pending or "")
    if m is None:
        return None
    pages = int(m.group(1)) // PAGE
    ram_start = ram_end = done = None
    last_section = None
    for t, ev, args in after:
        if ev == "savevm_section_start" and args.startswith("ram,") and ram_start is None:
            ram_start = t
        elif ev == "savevm_section_end" and args.startswith("ram,") and ram_end is None:
            ram_end = t
        elif ev == "savevm_section_end":
            last_section = t
        elif ev == "migrate_set_state" and args.endswith("completed"):
            done = t
            break
    if ram_start is None or ram_end is None or done is None:
        return None
    dst = _records(destination)
    # the final RAM section is the last one the destination loads
    loads = [t for t, ev, _ in dst if ev == "ram_load_complete"]
    ram_dst_end = loads[-1] if loads else ram_end
    last_section = last_section or ram_end
    return Phases(final_pages=pages,
                  stop_ms=1000 * (ram_start - t_stop),
                  ram_source_ms=1000 * (ram_end - ram_start),
                  ram_destination_ms=1000 * (max(ram_dst_end, ram_end) - ram_start),
                  device_ms=1000 * (last_section - ram_end),
                  tail_ms=1000 * (done - last_section),
                  downtime_ms=1000 * (done - t_stop))


def model_row(runs: Mapping[str, Any] | Any, final_pages: int, stop_s: float) -> dict[str, Any]:
    """The model's counterparts of a :class:`Phases` row: its downtime, the pages its
    stop-and-copy sent and the pace that implies (downtime less the profile's fixed stop cost,
    a page)."""
    downtime_ms = 1000 * float(runs["downtime_s"])
    pace = 1000 * (downtime_ms - 1000 * stop_s) / final_pages if final_pages else math.nan
    return {"model_downtime_ms": downtime_ms, "model_stop_ms": 1000 * stop_s,
            "model_final_pages": final_pages, "model_us_per_page": pace}


def _pace(value: str) -> str:
    """A CSV pace as a label; no pages, no pace."""
    pace = float(value) if value else math.nan
    return f"{pace:.2f} µs/page" if math.isfinite(pace) else "no pages"


def draw(csv_path: Path, path: Path) -> Path | None:
    """``qemu-phases.png``: a panel a run, its downtime as stacked bars, QEMU's (stop, RAM burst
    on the source, device state, final flush) over the model's (its fixed stop cost, then the
    pages), each labelled with its pages and µs a page. None when ``csv_path`` has no row."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    # one panel a run, each on its own scale: a 1 GiB guest's 250 ms would flatten a 2 ms one
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.9 * len(rows) + 1.2), squeeze=False)
    parts = (("stop_ms", "stop", "#999999"), ("ram_source_ms", "RAM (source)", "#1f77b4"),
             ("device_ms", "device state", "#ff7f0e"), ("tail_ms", "final flush", "#2ca02c"))
    for i, (row, ax) in enumerate(zip(rows, axes[:, 0], strict=True)):
        left = 0.0
        for key, label, colour in parts:
            width = float(row[key])
            ax.barh(1, width, left=left, height=0.8, color=colour,
                    label=label if i == 0 else None)
            left += width
        ax.text(left, 1, f"  QEMU: {_pace(row['us_per_page_source'])}, "
                f"{row['final_pages']} pages", va="center", fontsize=8)
        model, stop = float(row["model_downtime_ms"]), float(row["model_stop_ms"])
        ax.barh(0, stop, height=0.8, color="#999999")
        ax.barh(0, model - stop, left=stop, height=0.8, color="#9467bd",
                label="model: pages" if i == 0 else None)
        ax.text(model, 0, f"  model: {_pace(row['model_us_per_page'])}, "
                f"{row['model_final_pages']} pages", va="center", fontsize=8)
        ax.set_yticks([1, 0], ["QEMU", "model"], fontsize=7)
        ax.set_xlim(0, 1.6 * max(left, model))
        ax.set_title(row["run"], fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("downtime (ms); QEMU's from its trace points")
    fig.legend(loc="upper right", fontsize=7, ncol=5)
    fig.suptitle("Where the downtime goes: QEMU vs model", x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["EVENTS", "Phases", "draw", "is_trace_line", "model_row", "parse", "trace_args"]
