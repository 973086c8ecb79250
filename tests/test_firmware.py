"""QEMU's RAM blocks besides the guest's RAM (sim/validation/firmware.py): which of their pages
are zero, read from a migration stream, and where they sit among the migration's pages."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from sim.validation.firmware import GUEST_RAM, Blocks, parse, runs
from tests.test_capture import RAM, ROM, Stream, page_of


def test_runs_are_the_stretches_of_true():
    assert runs(np.array([], bool)) == ()
    assert runs(np.array([0, 0], bool)) == ()
    assert runs(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == ((0, 2), (3, 1), (6, 1))


def _stream_of_a_guest_that_never_ran() -> bytes:
    """pc.ram (8 pages, all zero) then pc.rom (2 pages: raw, zero), then device state."""
    s = Stream().config().start(2, "ram").mem_size().eos().footer(2)
    s.header(2, 2)
    s.zero(1, "pc.ram", 0)
    for page in range(1, RAM // 4096):
        s.zero(1, "pc.ram", page, cont=True)
    s.raw(1, "pc.rom", 0, page_of(7)).zero(1, "pc.rom", 1, cont=True)
    s.eos().footer(2)
    s.start(3, "timer", full=True)
    s.data += b"device state" * 4
    s.footer(3)
    s.data += b"\x00"
    return bytes(s.data)


def test_the_blocks_come_in_send_order_with_their_zero_pages():
    blocks = parse(_stream_of_a_guest_that_never_ran())
    assert blocks.order == ((GUEST_RAM, RAM // 4096), ("pc.rom", ROM // 4096))
    assert blocks.zero["pc.rom"].tolist() == [False, True]


def test_zero_ranges_put_the_guest_ram_first_then_the_other_blocks():
    """The guest's RAM takes its zero pages from the running guest (the probe's guest never
    ran); the blocks after it keep theirs, numbered after the guest's pages."""
    blocks = parse(_stream_of_a_guest_that_never_ran())
    guest = np.array([0, 0, 1, 1, 0, 0, 0, 1], bool)
    assert blocks.zero_ranges(guest) == ((2, 2), (7, 1), (9, 1))
    with pytest.raises(ValueError, match="pc.ram: 3 pages known, 8 migrated"):
        blocks.zero_ranges(np.zeros(3, bool))
    assert Blocks((), {}).zero_ranges(np.zeros(0, bool)) == ()


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("as") is None,
                    reason="qemu-system-x86_64 or GNU binutils not installed")
def test_probe_reads_a_real_qemus_blocks(tmp_path):
    """A real QEMU (about 0.2 s): the guest's RAM first and all zero (the probe never runs the
    guest), other blocks after it (the pc machine's firmware), some of them zero."""
    pytest.importorskip("qemu.qmp")
    from sim.units import MiB
    from sim.validation import firmware
    from sim.validation.guest import GuestParams, assemble, write_image
    from sim.validation.qemu import QemuProcess, find_qemu

    image = write_image(tmp_path / "probe.img", GuestParams(base=4 * MiB, pages=16),
                        assemble(tmp_path))
    q = QemuProcess("firmware", find_qemu(), image, 32 * MiB, tmp_path, incoming=False)
    q.args.append("-S")
    blocks = asyncio.run(firmware.probe(q, tmp_path / "firmware.stream"))
    assert blocks.order[0] == (GUEST_RAM, 32 * MiB // 4096)
    assert blocks.zero[GUEST_RAM].all()
    others = blocks.order[1:]
    assert others and sum(blocks.zero[name].sum() for name, _ in others) > 0
    assert not (tmp_path / "firmware.stream").exists()
