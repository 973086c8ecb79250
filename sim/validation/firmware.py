"""QEMU's RAM blocks besides the guest's RAM, and which of their pages are zero.

Why: QEMU migrates every RAMBlock, not only the guest's RAM (``pc.ram``). On the ``pc`` machine
the harness runs there are five more: the BIOS (``pc.bios``, 256 KiB), the option-ROM area
(``pc.rom``, 128 KiB) and three fw_cfg blobs (``/rom@etc/acpi/tables``, 128 KiB, and two of one
page), 130 pages sent after ``pc.ram`` in QEMU's block list order (``ram_block_add`` in
``softmmu/physmem.c`` keeps it sorted by maximum size, largest first). On QEMU 7.2, 80 of the
130 are zero (all of ``pc.rom``, most of the ACPI blob, 18 of the BIOS). The model sees RAM as
one range of pages; these blocks are its last pages, and their zero pages go into
``vm.zero_regions`` with the guest RAM's own. Until 2026-12-07 the harness counted only the
guest RAM's zero pages, so the model took these 80 for data and sent 80 raw pages at the end of
its first round where QEMU sent zero pages, 20 ms at 16 MiB/s, and ``xbzrle-medium``'s later
syncs came one 100 ms window late (6 against QEMU's 8; with the blocks in place 8, and its
bytes, total time and XBZRLE pages within 0.4%).

Measured, not assumed (another QEMU build or machine type has other blocks): a QEMU with the
harness's command line, stopped before its first instruction (``-S``), is migrated into a file
(``exec:``) and the stream parsed with :mod:`sim.stream`. Its ``pc.ram`` is still all zero then;
the guest RAM's zero pages come from a dump of the running guest just before ``migrate``, read
guest-physically from address 0, which is ``pc.ram``'s own order for guests of up to 3 GiB (a
larger pc guest has part of its RAM mapped above 4 GiB; the harness's guests are at most 1 GiB).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.stream import PAGE_BYTES, Record, StreamError, StreamParser

#: the guest's RAM block on QEMU's pc machine: its zero pages come from the running guest
GUEST_RAM = "pc.ram"
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Blocks:
    """QEMU's migrated RAM blocks in the order it sends them: (name, pages), and for every block
    but the guest's RAM which of its pages are zero (bool per page)."""

    order: tuple[tuple[str, int], ...]
    zero: dict[str, np.ndarray]

    def zero_ranges(self, guest_zero: np.ndarray) -> tuple[tuple[int, int], ...]:
        """Every zero page of the migration as (first page, count) runs, pages numbered in send
        order (the guest's RAM first on the pc machine), with ``guest_zero`` (bool per page) for
        the guest's RAM."""
        parts = []
        for name, pages in self.order:
            flags = guest_zero if name == GUEST_RAM else self.zero[name]
            if len(flags) != pages:
                raise ValueError(f"block {name}: {len(flags)} pages known, {pages} migrated")
            parts.append(np.asarray(flags, np.bool_))
        return runs(np.concatenate(parts) if parts else np.zeros(0, np.bool_))


def runs(flags: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(first, count) of each run of True in ``flags``."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return tuple((int(a), int(b - a)) for a, b in zip(starts, ends, strict=True))


def parse(stream: bytes) -> Blocks:
    """The blocks of a migration stream of a guest that never ran: each block's pages once, in
    the first round."""
    records: list[Record] = []
    parser = StreamParser(records.append, keep_content=False)
    parser.feed(stream, 0.0)
    summary = parser.close()
    order = tuple((b.name, b.used_bytes // PAGE_BYTES) for b in summary.blocks)
    zero = {name: np.zeros(pages, np.bool_) for name, pages in order}
    for r in records:
        if r.kind == "zero" and r.block in zero:
            zero[r.block][r.page] = True
    return Blocks(order, zero)


class ProbeError(RuntimeError):
    """The probe's migration failed or its stream could not be read."""


async def probe(q: Any, out: Path) -> Blocks:
    """The blocks of ``q``, a QEMU (:class:`sim.validation.qemu.QemuProcess`) with the harness's
    command line plus ``-S``, not yet started: migrated into the file ``out``, then closed."""
    try:
        q.start()
        await q.connect()
        await q.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(out))}"})
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (status := (await q.execute("query-migrate")).get("status")) not in (
                "completed", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise ProbeError(f"firmware probe: migration still {status} after "
                                 f"{PROBE_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.02)
        if status != "completed":
            raise ProbeError(f"firmware probe: migration {status}")
    finally:
        await q.close()
    # `cat` may still be writing the stream's tail when QEMU reports completion
    for _ in range(40):
        try:
            blocks = parse(out.read_bytes())
            break
        except StreamError as err:
            error = err
            await asyncio.sleep(0.05)
    else:
        raise ProbeError(f"firmware probe: the stream in {out}: {error}")
    out.unlink()
    return blocks
