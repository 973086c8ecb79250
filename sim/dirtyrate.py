"""QEMU's dirty-rate estimate by page sampling (``calc-dirty-rate`` / ``query-dirty-rate``, QEMU
``migration/dirtyrate.c``), applied to the model's memory.

QEMU's ``page-sampling`` mode picks ``sample-pages`` random pages per GiB of guest RAM, hashes
their content at the start, hashes them again ``calc-time`` later, and counts the pages whose
hash changed. The estimate, in MiB/s, is the changed share of the samples times the RAM (MiB)
divided by the measuring time. Here the "content" of a page is its bytes in ``exact`` mode and
its write counter in ``modelled`` mode (a page written in the window counts as changed, even if
the write left the same bytes: QEMU would miss that rare case).

Model notes: only ``page-sampling`` is modelled (``dirty-bitmap`` and ``dirty-ring`` are refused
with a GenericError); ``start-time`` is the simulated time in seconds. The measurement does not
disturb a running migration (it reads pages, writes nothing).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from .errors import QmpError
from .units import GiB, MiB

DEFAULT_SAMPLE_PAGES = 512  # per GiB
SAMPLE_PAGES_RANGE = (128, 4096)  # per GiB, as QEMU accepts them
CALC_TIME_MS_RANGE = (100, 60_000)
MODES = ("page-sampling", "dirty-bitmap", "dirty-ring")


@dataclass
class DirtyRateJob:
    """One measurement, as ``query-dirty-rate`` shows it."""

    status: str = "unstarted"
    start_time: float = 0.0
    calc_time: int = 0
    unit: str = "second"
    sample_pages: int = DEFAULT_SAMPLE_PAGES
    mode: str = "page-sampling"
    rate_mib_s: int = 0

    def info(self, unit: str | None = None) -> dict[str, Any]:
        """QEMU's DirtyRateInfo (``dirty-rate`` only once measured)."""
        shown = unit or self.unit
        calc_ms = self.calc_time * (1000 if self.unit == "second" else 1)
        out: dict[str, Any] = {"status": self.status}
        if self.status == "measured":
            out["dirty-rate"] = self.rate_mib_s
        out.update({"mode": self.mode, "start-time": int(self.start_time),
                    "calc-time": calc_ms // 1000 if shown == "second" else calc_ms,
                    "calc-time-unit": shown, "sample-pages": self.sample_pages})
        return out


def check(calc_time: int, unit: str, sample_pages: int | None, mode: str) -> float:
    """QEMU's checks of the arguments (its refusals, in our words); returns the seconds."""
    if mode != "page-sampling":
        raise QmpError(f"migsim: dirty-rate mode '{mode}' is not modelled; use page-sampling")
    ms = calc_time * 1000 if unit == "second" else calc_time
    lo, hi = CALC_TIME_MS_RANGE
    if not lo <= ms <= hi:
        raise QmpError(f"Calc-time is out of range [{lo}, {hi}] ms.")
    if sample_pages is not None and not SAMPLE_PAGES_RANGE[0] <= sample_pages <= \
            SAMPLE_PAGES_RANGE[1]:
        raise QmpError(f"sample-pages is out of range [{SAMPLE_PAGES_RANGE[0]}, "
                       f"{SAMPLE_PAGES_RANGE[1]}].")
    return ms / 1000


def sample(pages: int, page_size: int, per_gib: int, rng: np.random.Generator) -> np.ndarray:
    """The sampled page numbers: ``per_gib`` per GiB of RAM (rounded down), with repeats."""
    count = (pages * page_size * per_gib) // GiB
    return rng.integers(0, pages, size=count, dtype=np.int64)


def snapshot(guest: Any, where: np.ndarray) -> np.ndarray:
    """What a sampled page's hash stands for: its bytes (exact) or its write counter."""
    return guest.memory64[where].copy() if guest.exact else guest.version[where].copy()


def estimate(changed: int, samples: int, ram_bytes: int, seconds: float) -> int:
    """QEMU's formula: changed share x RAM in MiB / seconds, truncated to an integer."""
    if samples == 0 or seconds <= 0:
        return 0
    return int(changed / samples * (ram_bytes // MiB) / seconds)


def measure(env: simpy.Environment, mig: Any, job: DirtyRateJob, seconds: float,
            rng: np.random.Generator) -> Generator[simpy.Event, None, None]:
    """The measurement as a SimPy process: sample, wait ``seconds``, count the changed."""
    guest = mig.guest
    where = sample(guest.pages, guest.page_size, job.sample_pages, rng)
    mig.writes.apply_until(env.now)  # every write so far is in the pages
    before = snapshot(guest, where)
    guest.version_readers += 1  # the writes from now on must count (Guest.counts_versions)
    try:
        yield env.timeout(seconds)
        mig.writes.apply_until(env.now)
        after = snapshot(guest, where)
    finally:
        guest.version_readers -= 1
    differs = after != before
    changed = int(np.count_nonzero(differs.any(axis=1) if differs.ndim == 2 else differs))
    job.rate_mib_s = estimate(changed, where.size, guest.pages * guest.page_size, seconds)
    job.status = "measured"
