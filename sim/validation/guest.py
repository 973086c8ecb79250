"""The validation guest: assemble ``guest/guest.S`` and patch its working-set parameters.

Why a hand-written boot sector: a real OS would add background dirtying we cannot describe to the
simulator. This 512-byte guest writes exactly the pages it is told to, at a rate set by the PIT
(ticks/s x touches/tick), so the same workload can be written down as a migsim ``sequential``
workload and the two compared (see ``guest/guest.S`` for the guest's own notes).

The sector is assembled from source at run time with GNU ``as``/``ld`` (Debian ``binutils``); no
binary is kept in the repository.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sim.units import MiB

SOURCE = Path(__file__).with_name("guest") / "guest.S"
SECTOR = 512
PAGE = 4096
PARAMS_OFFSET = 0x1A0  # `.org 0x1a0` in guest.S
MAGIC = b"MGSG"
PIT_HZ = 1193182  # the PIT's input clock
# At 1000 ticks/s QEMU (TCG, 2 host cores) loses ~15% of PIT interrupts: the vCPU is not always
# scheduled before the next edge, and an unacknowledged IRQ0 edge is dropped. At 100 ticks/s
# (10 ms of slack) fewer than 1% are lost; the touches of a tick are made in one burst.
MAX_TICKS_PER_S = 100
# Guest-physical addresses of the guest's little-endian dword counters.
TICKS_ADDR, TOUCHES_ADDR, SWEEPS_ADDR = 0x500, 0x504, 0x508
IMAGE_SIZE = MiB  # the disk image is padded to 1 MiB so SeaBIOS sees an ordinary disk


class GuestBuildError(RuntimeError):
    """GNU as/ld are missing or failed."""


@dataclass(frozen=True)
class GuestParams:
    """What the guest writes: ``pages`` pages from ``base``, one touch every ``stride`` bytes,
    ``bytes_per_touch`` bytes per touch, ``touches_per_s`` touches per second."""

    base: int
    pages: int
    stride: int = PAGE
    bytes_per_touch: int = 64
    touches_per_s: float = 1000.0
    fill_end: int = 0  # every page in [1 MiB, fill_end) gets a non-zero dword at boot

    def __post_init__(self) -> None:
        if self.base % PAGE or self.base < MiB:
            raise ValueError(f"base must be page-aligned and above 1 MiB (got {self.base:#x})")
        if self.pages < 1 or self.stride < 1 or (self.pages * PAGE) % self.stride:
            raise ValueError("the working set must be a whole number of strides")
        if not 1 <= self.bytes_per_touch <= min(self.stride, PAGE):
            raise ValueError("bytes_per_touch must be 1 .. min(stride, 4096)")
        if not self.touches_per_s > 0:
            raise ValueError("touches_per_s must be positive")

    @property
    def touches_per_sweep(self) -> int:
        return self.pages * PAGE // self.stride

    @property
    def end(self) -> int:
        """First byte after the working set."""
        return self.base + self.pages * PAGE

    def pacing(self) -> tuple[int, int]:
        """(touches per tick, PIT divisor) that give ``touches_per_s`` with at most 100 ticks/s."""
        per_tick = max(1, math.ceil(self.touches_per_s / MAX_TICKS_PER_S))
        divisor = round(PIT_HZ * per_tick / self.touches_per_s)
        if not 1 <= divisor <= 0xFFFF:
            raise ValueError(f"touches_per_s {self.touches_per_s:g} is below the PIT's range")
        return per_tick, divisor

    @property
    def actual_touches_per_s(self) -> float:
        """The rate the PIT really produces (the divisor is an integer)."""
        per_tick, divisor = self.pacing()
        return per_tick * PIT_HZ / divisor


def assemble(workdir: Path | None = None) -> bytes:
    """The boot sector assembled from ``guest.S`` (512 bytes, parameters at their defaults)."""
    as_, ld = shutil.which("as"), shutil.which("ld")
    if as_ is None or ld is None:
        raise GuestBuildError("GNU as/ld not found (apt-get install binutils)")
    with tempfile.TemporaryDirectory(prefix="migsim-guest-", dir=workdir) as tmp:
        obj, out = Path(tmp) / "guest.o", Path(tmp) / "guest.bin"
        for cmd in ([as_, "--32", "-o", str(obj), str(SOURCE)],
                    [ld, "-m", "elf_i386", "-Ttext=0x7c00", "-e", "_start", "--oformat",
                     "binary", "-o", str(out), str(obj)]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise GuestBuildError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()}")
        sector = out.read_bytes()
    if len(sector) != SECTOR or sector[-2:] != b"\x55\xaa":
        raise GuestBuildError(f"guest.S did not assemble to a boot sector ({len(sector)} bytes)")
    if sector[PARAMS_OFFSET:PARAMS_OFFSET + 4] != MAGIC:
        raise GuestBuildError(f"parameter block not found at {PARAMS_OFFSET:#x}")
    return sector


def patch(sector: bytes, params: GuestParams) -> bytes:
    """``sector`` with ``params`` written into its parameter block."""
    per_tick, divisor = params.pacing()
    block = MAGIC + struct.pack("<7I", params.base, params.touches_per_sweep, params.stride,
                                params.bytes_per_touch, per_tick, divisor, params.fill_end)
    return sector[:PARAMS_OFFSET] + block + sector[PARAMS_OFFSET + len(block):]


def write_image(path: Path, params: GuestParams, sector: bytes | None = None) -> Path:
    """A raw disk image whose boot sector runs ``params``."""
    data = patch(sector if sector is not None else assemble(path.parent), params)
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(IMAGE_SIZE)
    return path
