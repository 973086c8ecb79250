"""What a scenario will need in memory to simulate, estimated from its keys before anything is
allocated, so that ``migsim check`` (and ``run``, which loads the same way) refuses a scenario this
machine cannot hold with one line naming the key that drives the need, instead of ending in
``MemoryError`` (or the kernel's OOM killer) after a run started.

The estimate follows the engine's data structures (:mod:`sim.engine`), per guest:

* the page state: three bit-packed page sets (pending, dirty, zero: 1 bit a page each) and a
  32-bit write count per page (``vm.memory``);
* the dirty list: the dirty log's words (64 pages each) dirtied since the last sync, room for
  every word (allocated at once; only what a sync interval fills is touched);
* the write buffer: one 50 ms chunk of writes, 24 bytes each (``workload.writes_per_s``); a
  long wait with nothing sent (``migration.start``) is applied in steps of a bounded number of
  writes (:data:`sim.engine.writes.STEP_WRITES`), so the start does not count;
* exact content: the source's and the destination's bytes, twice ``vm.memory`` (``vm.content``);
* the page cache, when XBZRLE or a delta plug-in may be in force: 28 bytes a slot, plus a page a
  slot in exact mode, for at most the guest's pages (``migration.xbzrle_cache_size``);
* the modelled size tables: 2 × 65 × 48 synthetic pages (``vm.page_size``).

It leaves out what does not grow with the scenario (Python, numpy, the compiled kernels: about
0.3 GiB) and the result tables (they grow with simulated time, one row per 100 ms window).

Time is bounded the same way (:func:`time_refusal`). A migration that does not converge runs
until ``migration.max_sim_time`` (or ``max_time``) after its start, and until then the engine
must draw and apply every guest write and step every chunk of at most 50 ms: that is the work, and
a page-level model cannot do less. The worst case, ``writes_per_s × (start + horizon)`` writes at
:data:`NS_PER_WRITE`, ``horizon / 50 ms`` chunks at :data:`US_PER_CHUNK` and the pages a saturated
link (or ``max-bandwidth``) carries in ``horizon``, at most the guest's pages plus one per write (a
page is sent again only after a write), at :data:`NS_PER_PAGE` (all measured on a
2-core machine: 6·10⁸ writes in 45 s; fleets' chunks 60-90 µs), is refused above
:data:`TIME_LIMIT_S` of wall time (``MIGSIM_TIME_LIMIT`` sets another limit), naming the key that
drives it. A scenario that converges early takes far less: this bounds only the absurd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .engine.profiles import max_bandwidth
from .spec import MigrationSpec, Scenario, VmSpec, WorkloadSpec
from .units import GiB, format_rate, format_size

#: Scenarios whose estimate is above this share of the machine's RAM are refused.
SHARE_OF_RAM = 0.8
#: ``MIGSIM_MEMORY_LIMIT`` (bytes, or a size such as ``4GiB``) replaces the machine's RAM.
LIMIT_ENV = "MIGSIM_MEMORY_LIMIT"

#: Scenarios whose worst case would take longer than this (seconds of wall time) are refused.
TIME_LIMIT_S = 900.0
#: ``MIGSIM_TIME_LIMIT`` (a time such as ``2h``) replaces it.
TIME_LIMIT_ENV = "MIGSIM_TIME_LIMIT"
NS_PER_WRITE = 30.0  # draw, apply and (often) send one guest write (compiled, cruising turns)
NS_PER_PAGE = 200.0  # scan, encode and send one page (make bench: 158-181 ns, 16 GiB to 4 TiB)
US_PER_CHUNK = 90.0  # one turn of the live loop, a kernel call included

_CHUNK_S = 0.05  # the engine's longest chunk (MAX_WAIT_S): the write buffer holds that much
_WRITE_BYTES = 24  # time (float64), page (int64), content seed (uint64)
_CACHE_SLOT_BYTES = 28  # address, age, last-seen stamp (int64) and version (uint32)
_SIZE_TABLE_PAGES = 2 * 65 * 48  # old and new synthetic pages of the size tables


@dataclass(frozen=True)
class Need:
    """One part of the estimate: bytes, and the scenario key that makes them."""

    key: str
    what: str
    bytes: float
    value: str = ""  # the key's value, as the error shows it


def needs(scenario: Scenario) -> list[Need]:
    """The estimate's parts, summed over a fleet's guests (keys of the first guest that has
    the largest part)."""
    if scenario.vms:
        guests = [(f"vms[{i}].", g.vm, g.workload, g.migration, g.endpoints)
                  for i, g in enumerate(scenario.vms)]
    else:
        guests = [("", scenario.vm, scenario.workload, scenario.migration, scenario.endpoints)]
    total: dict[str, Need] = {}
    for prefix, vm, workload, migration, endpoints in guests:
        caps = {*migration.capabilities, *endpoints.source.enabled,
                *endpoints.destination.enabled}
        for need in _guest(prefix, vm, workload, migration, _needs_cache(caps)):
            seen = total.get(need.what)
            total[need.what] = need if seen is None else Need(
                seen.key, need.what, seen.bytes + need.bytes, seen.value)
    return sorted(total.values(), key=lambda n: -n.bytes)


def _needs_cache(caps: set[str]) -> bool:
    """Whether the source may keep a page cache: XBZRLE, or a delta plug-in, asked for."""
    from .encoders import plugins_in_force

    return "xbzrle" in caps or any(cls.needs_previous for cls in plugins_in_force(caps))


def _guest(prefix: str, vm: VmSpec, workload: WorkloadSpec, migration: MigrationSpec,
           cache: bool) -> list[Need]:
    memory, page = int(vm.memory), int(vm.page_size)
    pages = max(1, memory // page)
    exact = vm.content == "exact"
    rate = float(workload.writes_per_s)
    size = format_size(memory, exact=True)
    out = [
        Need(f"{prefix}vm.memory", "page state", pages * (3 / 8 + 4), size),
        Need(f"{prefix}vm.memory", "dirty list", 8 * ((pages + 63) // 64), size),
        Need(f"{prefix}workload.writes_per_s", "write buffer", rate * _CHUNK_S * _WRITE_BYTES,
             f"{rate:g}"),
    ]
    if exact:
        out.append(Need(f"{prefix}vm.content", "exact content", 2.0 * pages * page, "exact"))
    if cache:
        slots = min(int(migration.xbzrle_cache_size) // page, 1 << max(0, pages - 1).bit_length())
        out.append(Need(f"{prefix}migration.xbzrle_cache_size", "page cache",
                        slots * (_CACHE_SLOT_BYTES + (page if exact else 0)),
                        format_size(int(migration.xbzrle_cache_size), exact=True)))
        out.append(Need(f"{prefix}vm.page_size", "size tables",
                        0 if exact else _SIZE_TABLE_PAGES * page,
                        format_size(page, exact=True)))
    return out


def limit() -> float:
    """The bytes a scenario may need: ``MIGSIM_MEMORY_LIMIT``, else SHARE_OF_RAM of the RAM."""
    text = os.environ.get(LIMIT_ENV)
    if text:
        from .units import parse_size

        return float(parse_size(text))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no refusal
        return float("inf")
    return SHARE_OF_RAM * ram


def refusal(scenario: Scenario) -> tuple[str, str, str] | None:
    """(key, problem, the key's value) when the scenario needs more memory than
    :func:`limit`, else None."""
    parts = needs(scenario)
    total = sum(n.bytes for n in parts)
    allowed = limit()
    if total <= allowed:
        return None
    top = parts[0]
    shown = ", ".join(f"{n.what} {format_size(int(n.bytes))}" for n in parts[:3] if n.bytes >= GiB / 8)
    where = (f"{LIMIT_ENV}={format_size(int(allowed))}" if os.environ.get(LIMIT_ENV)
             else f"{SHARE_OF_RAM:.0%} of this machine's {format_size(int(allowed / SHARE_OF_RAM))}")
    problem = (f"this scenario needs about {format_size(int(total))} of memory to simulate ({shown}); "
               f"at most {where} is allowed")
    return top.key, problem, top.value


@dataclass(frozen=True)
class Work:
    """The worst-case wall time of one guest's migration, and what drives it."""

    key: str
    seconds: float
    value: str
    detail: str


def work(scenario: Scenario) -> list[Work]:
    """The worst-case simulation work (see the module notes), largest part first: per guest its
    writes and chunks, and for the link the pages it can carry (guests share it)."""
    if scenario.vms:
        guests = [(f"vms[{i}].", g.vm, g.workload, g.migration)
                  for i, g in enumerate(scenario.vms)]
    else:
        guests = [("", scenario.vm, scenario.workload, scenario.migration)]
    out = []
    link = max([float(scenario.link.bandwidth)]
               + [float(c.bandwidth) for c in scenario.link.schedule])
    wire, page_bytes, longest, resends = 0.0, 1 << 62, 0.0, 0.0
    for prefix, vm, workload, migration in guests:
        horizon = float(migration.max_sim_time)
        if migration.max_time is not None:
            horizon = min(horizon, float(migration.max_time))
        span = float(migration.start) + horizon
        rate = _peak_rate(workload)
        writes_s = rate * span * NS_PER_WRITE * 1e-9
        chunks_s = horizon / _CHUNK_S * US_PER_CHUNK * 1e-6
        if writes_s >= chunks_s:
            key, value = f"{prefix}workload.writes_per_s", f"{rate:g}"
            detail = f"{rate:g} writes/s for up to {_duration(span)}"
        else:
            key = f"{prefix}migration.max_sim_time"
            value = _duration(float(migration.max_sim_time))
            detail = f"{horizon / _CHUNK_S:.3g} chunks of 50 ms in up to {_duration(horizon)}"
        out.append(Work(key, writes_s + chunks_s, value, detail))
        cap = max_bandwidth(migration)
        wire += cap if cap > 0 else link
        page_bytes = min(page_bytes, int(vm.page_size))
        longest = max(longest, horizon)
        # A page goes out once, and again only after a write dirtied it.
        resends += int(vm.memory) // int(vm.page_size) + rate * span
    pages = min(min(wire, link) * longest / page_bytes, resends)
    out.append(Work("link.bandwidth", pages * NS_PER_PAGE * 1e-9,
                    format_rate(link, bits=True),
                    f"{pages:.3g} pages sent in up to {_duration(longest)}"))
    return sorted(out, key=lambda w: -w.seconds)


def _peak_rate(workload: WorkloadSpec) -> float:
    """The highest write rate the workload runs at (a phased one: its busiest phase)."""
    return max([float(workload.writes_per_s)]
               + [_peak_rate(phase.workload) for phase in workload.phases])


def _duration(seconds: float) -> str:
    unit, size = next(((u, n) for u, n in (("h", 3600.0), ("min", 60.0)) if seconds >= n),
                      ("s", 1.0))
    value = seconds / size
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def time_limit() -> float:
    """Seconds of wall time a scenario may need at worst: ``MIGSIM_TIME_LIMIT``, else
    :data:`TIME_LIMIT_S`."""
    text = os.environ.get(TIME_LIMIT_ENV)
    if text:
        from .units import parse_time

        return float(parse_time(text))
    return TIME_LIMIT_S


def time_refusal(scenario: Scenario) -> tuple[str, str, str] | None:
    """(key, problem, the key's value) when the worst case would take longer than
    :func:`time_limit`, else None. Guests of a fleet run in one process: their work adds up."""
    parts = work(scenario)
    total = sum(w.seconds for w in parts)
    allowed = time_limit()
    if total <= allowed or not parts:
        return None
    top = parts[0]
    where = (f"{TIME_LIMIT_ENV}={_duration(allowed)}" if os.environ.get(TIME_LIMIT_ENV)
             else f"{_duration(allowed)}")
    problem = (f"a migration that does not converge would take about {_duration(total)} of wall "
               f"time to simulate ({top.detail}); at most {where} is allowed: lower "
               "migration.max_sim_time, the write rate or the start")
    return top.key, problem, top.value
