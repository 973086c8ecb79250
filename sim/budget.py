"""What a scenario will need in memory to simulate, estimated from its keys before anything is
allocated, so that ``migsim check`` (and ``run``, which loads the same way) refuses a scenario this
machine cannot hold with one line naming the key that drives the need, instead of ending in
``MemoryError`` (or the kernel's OOM killer) after a run started.

The estimate follows the engine's data structures (:mod:`sim.engine`), per guest:

* the page state: three bit-packed page sets (pending, dirty, zero: 1 bit a page each) and a
  32-bit write count per page (``vm.memory``);
* the dirty list: page numbers dirtied since the last sync, at most the pages, assumed here to
  hold about a second of writes (a heuristic: the list grows with the writes between syncs);
* the write buffer: one 50 ms chunk of writes, 24 bytes each (``workload.writes_per_s``); a
  long wait with nothing sent (``migration.start``) is applied in steps of a bounded number of
  writes (:data:`sim.engine.writes.STEP_WRITES`), so the start does not count;
* exact content: the source's and the destination's bytes, twice ``vm.memory`` (``vm.content``);
* the page cache, when XBZRLE or a delta plug-in may be in force: 28 bytes a slot, plus a page a
  slot in exact mode, for at most the guest's pages (``migration.xbzrle_cache_size``);
* the modelled size tables: 2 × 65 × 48 synthetic pages (``vm.page_size``).

It leaves out what does not grow with the scenario (Python, numpy, the compiled kernels: about
0.3 GiB) and the result tables (they grow with simulated time, one row per 100 ms window).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .spec import MigrationSpec, Scenario, VmSpec, WorkloadSpec
from .units import GiB, format_size

#: Scenarios whose estimate is above this share of the machine's RAM are refused.
SHARE_OF_RAM = 0.8
#: ``MIGSIM_MEMORY_LIMIT`` (bytes, or a size such as ``4GiB``) replaces the machine's RAM.
LIMIT_ENV = "MIGSIM_MEMORY_LIMIT"

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
        Need(f"{prefix}vm.memory", "dirty list", 8 * min(pages, 65536 + rate), size),
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
