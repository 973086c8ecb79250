"""Run one real pre-copy migration between two QEMUs on loopback and record what QMP shows.

Why: the simulator's claims about QEMU are only as good as a comparison with QEMU itself. This
module launches a source and a destination ``qemu-system-x86_64`` (TCG, small RAM, no display,
the validation guest of :mod:`sim.validation.guest` as the boot disk), drives them with the
``qemu.qmp`` client the way guestperf does (REF §9): capabilities and parameters on both sides,
``migrate-incoming`` + ``migrate`` over ``tcp:127.0.0.1``, ``query-migrate`` every 100 ms,
MIGRATION / MIGRATION_PASS events, ``migrate_cancel`` at a deadline, and after a completion
``pmemsave`` of both sides' RAM to check they are equal byte for byte.

Both QEMU processes are killed in ``finally`` blocks and the temporary directory (sockets, disk
images, RAM dumps) is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.units import MiB

from . import firmware, qemu_trace
from .guest import (
    PAGE,
    SWEEPS_ADDR,
    TICKS_ADDR,
    TOUCHES_ADDR,
    GuestParams,
    assemble,
    write_image,
)
from .qemu_tables import FINAL_STATES, Observed, last_stats

QEMU_BINARY = "qemu-system-x86_64"
POLL_S = 0.1  # query-migrate period, as the simulator's samples
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0  # the guest's initial fill of its working set
PRE_RATE_S = 1.0  # at least this long between the guest's readiness and `migrate`: its rate
HARD_TIMEOUT_S = 180.0  # a migration still running then is cancelled and reported as failed


class QemuError(RuntimeError):
    """QEMU could not be started, died, or the guest never became ready."""


#: where Linux shows free page reporting (a VM handing its free memory back to the hypervisor)
PAGE_REPORTING = Path("/sys/module/page_reporting")
#: the kernel's TCP congestion control for new sockets (QEMU's migration socket gets it)
CONGESTION_CONTROL = Path("/proc/sys/net/ipv4/tcp_congestion_control")


def memory_note() -> str | None:
    """A warning when this host is a VM that hands freed memory back to its hypervisor (free
    page reporting): touching such memory again cost 8-9 us a 4 KiB page on the VMs CI uses
    (0.6 while still backed), so a fresh QEMU pair's costs depend on the seconds since the
    last one freed its memory (docs/validation.md). None elsewhere."""
    if not PAGE_REPORTING.is_dir():
        return None
    return ("note: this host hands freed memory back to its hypervisor (free page reporting, "
            f"{PAGE_REPORTING}): each QEMU pair may pay the hypervisor's first touch of its "
            "memory, so real runs spread more than on a host that keeps its memory "
            "(docs/validation.md)")


def congestion_note() -> str | None:
    """The kernel's TCP congestion control, named when it is BBR: after a slow paced phase the
    final burst of a migration on loopback took twice as long under BBR as under CUBIC on this
    project's CI machine class (``downtime-limit-change``: median 32 against 15 ms over twelve
    interleaved runs each, docs/validation.md), and the model charges neither. None when the
    setting cannot be read or is another algorithm."""
    try:
        name = CONGESTION_CONTROL.read_text().strip()
    except OSError:
        return None
    if name != "bbr":
        return None
    return (f"note: this host's TCP congestion control is {name} ({CONGESTION_CONTROL}): a large "
            "switchover burst after a slow paced phase runs slower under it than under cubic, "
            "so such downtimes spread above the model's (docs/validation.md)")


def find_qemu() -> str | None:
    """The path of ``qemu-system-x86_64``, or None when it is not installed."""
    return shutil.which(QEMU_BINARY)


@dataclass(frozen=True)
class MigrationSettings:
    """What the harness asks of QEMU: guest RAM, capabilities and parameters, and a deadline."""

    memory: int  # bytes of guest RAM (-m)
    capabilities: tuple[str, ...] = ()
    max_bandwidth: int = 128 * MiB  # bytes/s; QEMU applies 1/10 of it per 100 ms window
    downtime_limit_ms: int = 300
    xbzrle_cache_size: int = 64 * MiB
    max_time: float | None = None  # seconds after `migrate`; then migrate_cancel (like guestperf)
    # other QEMU parameters by QMP name, unitless ones (cpu-throttle-*, multifd-channels, ...):
    # set on both sides before `migrate` (multifd-channels must match on the destination)
    parameters: tuple[tuple[str, int], ...] = ()
    # live changes: (seconds after `migrate`, {QMP parameter: value}) -> migrate-set-parameters
    changes: tuple[tuple[float, tuple[tuple[str, int], ...]], ...] = ()
    # migrate-start-postcopy once QEMU's MIGRATION_PASS event reaches this pass number
    postcopy_at_pass: int | None = None

    @property
    def postcopy(self) -> bool:
        return "postcopy-ram" in self.capabilities


@dataclass
class Measurement:
    """One real migration: the observations plus the guest facts the simulator needs as inputs."""

    observed: Observed
    ram_total: int  # query-migrate ram.total: every migrated RAMBlock (RAM and ROMs)
    zero_pages: int  # zero pages in guest RAM just before `migrate`
    touches_per_s: float  # the guest's touch rate measured from its own counters
    wall_s: float
    qemu_version: str = ""  # major.minor of the source QEMU (query-version)
    # the touch rate before `migrate` (no migration thread, no throttle), over PRE_RATE_S
    touches_before_per_s: float = float("nan")
    # the guest's touch counter just before `migrate` (the initial fill included): where its
    # sequential sweep had got to
    touches_at_migrate: int = 0
    # the switchover's steps from QEMU's trace (None: no trace backend, or no stop-and-copy)
    phases: qemu_trace.Phases | None = None
    # every zero page of the migration just before `migrate`, as (first page, count) runs in
    # QEMU's send order: the guest's RAM, then QEMU's other RAM blocks (firmware.py)
    zero_ranges: tuple[tuple[int, int], ...] = ()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to kill QEMU if the harness itself dies (SIGKILL,
    a crashed CI job), so no guest outlives the run even when ``finally`` never runs."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class QemuProcess:
    """One QEMU: a subprocess with a QMP socket; ``close()`` always leaves no process behind."""

    def __init__(self, role: str, binary: str, image: Path, memory: int, workdir: Path,
                 incoming: bool, paused: bool = True) -> None:
        from qemu.qmp import QMPClient

        self.role = role
        self.socket = workdir / f"{role}.qmp"
        self.log = workdir / f"{role}.log"
        self.args = [
            binary, "-nodefaults", "-machine", "pc", "-accel", "tcg",
            "-m", f"{memory >> 20}M", "-display", "none", "-no-reboot",
            "-drive", f"file={image},format=raw,if=ide",
            "-qmp", f"unix:{self.socket},server=on,wait=off",
        ]
        if incoming:  # paused after loading, so its RAM can be compared with the source's
            self.args += ["-incoming", "defer", *(["-S"] if paused else [])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp = QMPClient(role)

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)

    def exited(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = [line for line in self.log.read_text(errors="replace").strip().splitlines()
                if not qemu_trace.is_trace_line(line)][-3:]
        return f"{self.role} QEMU exited with {self.proc.returncode}: {' | '.join(tail)}"

    async def connect(self) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            if (why := self.exited()) is not None:
                raise QemuError(why)
            if self.socket.exists():
                try:
                    await self.qmp.connect(str(self.socket))
                    return
                except Exception:  # not listening yet
                    if time.monotonic() > deadline:
                        raise
            if time.monotonic() > deadline:
                raise QemuError(f"{self.role}: no QMP socket after {CONNECT_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)

    async def execute(self, cmd: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self.qmp.execute(cmd, dict(args) if args else None)

    async def read_dwords(self, addr: int, count: int) -> list[int]:
        """``count`` little-endian dwords of guest-physical memory (HMP ``xp``)."""
        text = await self.execute("human-monitor-command",
                                  {"command-line": f"xp /{count}wx {addr:#x}"})
        words = [w for w in str(text).split() if w.startswith("0x") and not w.endswith(":")]
        return [int(w, 16) for w in words[:count]]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.qmp.disconnect(), 2.0)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 3.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


async def _wait_ready(src: QemuProcess) -> None:
    """Until the guest has written its whole working set once (its sweep counter is >= 1)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (await src.read_dwords(SWEEPS_ADDR, 1))[0] < 1:
        if (why := src.exited()) is not None:
            raise QemuError(why)
        if time.monotonic() > deadline:
            raise QemuError("the guest did not finish filling its working set")
        await asyncio.sleep(0.1)


async def _ram_dump(q: QemuProcess, size: int, path: Path) -> np.ndarray:
    """Guest-physical bytes [0, size) as pages (uint8[pages, 4096]) via ``pmemsave``."""
    await q.execute("pmemsave", {"val": 0, "size": size, "filename": str(path)})
    data = np.fromfile(path, dtype=np.uint8)
    path.unlink()
    return data[: size // PAGE * PAGE].reshape(-1, PAGE)


async def _events(q: QemuProcess, obs: Observed, on_pass: Any) -> None:
    """Record MIGRATION / MIGRATION_PASS events with QEMU's own (host wall-clock) timestamps."""
    from qemu.qmp import EventListener

    listener = EventListener(("MIGRATION", "MIGRATION_PASS"))
    with q.qmp.listen(listener):
        async for event in listener:
            message: dict[str, Any] = dict(event)  # a qemu.qmp Message is a mapping
            ts = message["timestamp"]
            t = ts["seconds"] + ts["microseconds"] / 1e6
            data = message.get("data", {})
            if message["event"] == "MIGRATION":
                obs.events.append((t, q.role, "MIGRATION", str(data.get("status", ""))))
            else:
                obs.events.append((t, q.role, "MIGRATION_PASS", str(data.get("pass", ""))))
                await on_pass(t, int(data.get("pass", 0)))


async def _command(q: QemuProcess, obs: Observed, cmd: str,
                   args: Mapping[str, Any] | None = None) -> Any:
    """Issue a QMP command and log it in the events table, as the simulator logs its commands."""
    obs.command(time.time(), q.role, cmd, args)
    return await q.execute(cmd, args)


async def _settled(src: QemuProcess, info: dict[str, Any]) -> dict[str, Any]:
    """The final ``query-migrate`` reply once its times are filled in.

    QEMU 7.2 sets the state to ``completed`` a moment before it computes ``total-time`` and
    ``downtime``: a reply in that window says completed with both at 0. Ask again (up to 1 s).
    """
    for _ in range(20):
        if info.get("status") != "completed" or info.get("total-time", 0) > 0:
            break
        await asyncio.sleep(0.05)
        info = await src.execute("query-migrate")
    return info


async def _configure(src: QemuProcess, dst: QemuProcess, settings: MigrationSettings,
                     obs: Observed) -> None:
    caps = ("events", *settings.capabilities)
    for q in (src, dst):  # both sides, the documented convention (REF §8)
        await _command(q, obs, "migrate-set-capabilities", {"capabilities": [
            {"capability": c, "state": True} for c in caps]})
    if settings.parameters:
        for q in (src, dst):
            await _command(q, obs, "migrate-set-parameters", dict(settings.parameters))
    await _command(src, obs, "migrate-set-parameters", {
        "max-bandwidth": settings.max_bandwidth, "downtime-limit": settings.downtime_limit_ms,
        "xbzrle-cache-size": settings.xbzrle_cache_size})
    obs.capabilities = tuple(settings.capabilities)


async def _migrate(src: QemuProcess, dst: QemuProcess, settings: MigrationSettings,
                   obs: Observed) -> int:
    """Run the migration to its end (or cancel it at the deadline); returns the guest's touch
    counter at `migrate`."""
    await _command(dst, obs, "migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
    address = (await dst.execute("query-migrate"))["socket-address"][0]
    uri = f"tcp:{address['host']}:{address['port']}"
    touches0 = (await src.read_dwords(TOUCHES_ADDR, 1))[0]

    postcopy_issued = False

    async def on_pass(t: float, number: int) -> None:
        nonlocal postcopy_issued
        obs.passes.append((t, number, await src.execute("query-migrate")))
        at = settings.postcopy_at_pass
        if at is not None and number >= at and not postcopy_issued:
            postcopy_issued = True
            await _command(src, obs, "migrate-start-postcopy")

    changes = sorted(settings.changes)

    tasks = [asyncio.create_task(_events(q, obs, on_pass)) for q in (src, dst)]
    try:
        obs.t0 = time.time()
        await _command(src, obs, "migrate", {"uri": uri})
        cancelled = False
        while True:
            info = await src.execute("query-migrate")
            now = time.time()
            obs.samples.append((now, info))
            if info.get("status") in FINAL_STATES:
                obs.final, obs.end_t = await _settled(src, info), now
                break
            t = now - obs.t0
            while changes and changes[0][0] <= t:
                await _command(src, obs, "migrate-set-parameters", dict(changes.pop(0)[1]))
            late = settings.max_time is not None and t >= settings.max_time
            if (late or t >= HARD_TIMEOUT_S) and not cancelled:
                await _command(src, obs, "migrate_cancel")
                obs.failure_reason = "max_time" if late else "harness timeout"
                cancelled = True
            await asyncio.sleep(max(0.0, POLL_S - (time.time() - now)))
        await asyncio.sleep(0.2)  # let the last events arrive
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return touches0


#: QEMU's RAM blocks besides the guest's RAM, by (binary, RAM size): the same for every run
_FIRMWARE: dict[tuple[str, int], firmware.Blocks] = {}


async def _firmware(binary: str, guest: GuestParams, sector: bytes, memory: int,
                    workdir: Path) -> firmware.Blocks:
    """:func:`firmware.probe` of a QEMU with the harness's command line, stopped before its
    first instruction; once per binary and RAM size (its own disk image: QEMU locks the one it
    opens)."""
    key = (binary, memory)
    if key not in _FIRMWARE:
        q = QemuProcess("firmware", binary, write_image(workdir / "firmware.img", guest, sector),
                        memory, workdir, incoming=False)
        q.args.append("-S")
        try:
            _FIRMWARE[key] = await firmware.probe(q, workdir / "firmware.stream")
        except firmware.ProbeError as err:
            raise QemuError(str(err)) from err
    return _FIRMWARE[key]


async def _measure(run_id: str, guest: GuestParams, settings: MigrationSettings,
                   binary: str, workdir: Path, need_rate: bool = True,
                   trace: bool = False) -> Measurement:
    if guest.end > settings.memory:
        raise ValueError("the guest's working set does not fit in its RAM")
    sector = assemble(workdir)
    # which pages of QEMU's other RAM blocks are zero (firmware.py); measured once per size,
    # before the pair starts, so as not to disturb the guest
    blocks = await _firmware(binary, guest, sector, settings.memory, workdir)
    started = time.monotonic()
    src = QemuProcess("source", binary, write_image(workdir / "source.img", guest, sector),
                      settings.memory, workdir, incoming=False)
    dst = QemuProcess("destination", binary,
                      write_image(workdir / "destination.img", guest, sector),
                      settings.memory, workdir, incoming=True,
                      # after a post-copy switch the guest must run on the destination (its
                      # faults are the point), so its RAM is not compared with the source's
                      paused=not settings.postcopy)
    if trace:  # the switchover's steps, into the logs (qemu_trace.py)
        for q in (src, dst):
            q.args += qemu_trace.trace_args()
    obs = Observed(run_id)
    try:
        src.start()
        dst.start()
        await asyncio.gather(src.connect(), dst.connect())
        version = (await src.execute("query-version"))["qemu"]
        await _wait_ready(src)
        ready_touches = (await src.read_dwords(TOUCHES_ADDR, 1))[0]
        ready_t = time.monotonic()
        before = await _ram_dump(src, settings.memory, workdir / "before.ram")
        guest_zero = np.asarray(~before.any(axis=1), np.bool_)
        zero_pages, zero_ranges = int(guest_zero.sum()), blocks.zero_ranges(guest_zero)
        del before, guest_zero
        await _configure(src, dst, settings, obs)
        await asyncio.sleep(max(0.0, PRE_RATE_S - (time.monotonic() - ready_t)))
        pre_rate = ((await src.read_dwords(TOUCHES_ADDR, 1))[0] - ready_touches) / max(
            1e-9, time.monotonic() - ready_t)
        touches0 = await _migrate(src, dst, settings, obs)
        ram_total = int(last_stats(obs).get("ram", {}).get("total", settings.memory))
        touches1 = (await src.read_dwords(TOUCHES_ADDR, 1))[0]
        if obs.final.get("status") == "completed" and not settings.postcopy:
            # the source stopped (total - downtime) after `migrate`; its counters froze then
            t_stop = (obs.final["total-time"] - obs.final.get("downtime", 0)) / 1000
            a = await _ram_dump(src, settings.memory, workdir / "source.ram")
            b = await _ram_dump(dst, settings.memory, workdir / "destination.ram")
            differing = int((a != b).any(axis=1).sum())
            obs.memory_match, obs.pages_differing = differing == 0, differing
        elif switched := [t for t, who, ev, what in obs.events
                          if who == "source" and ev == "MIGRATION" and what == "postcopy-active"]:
            t_stop = switched[0] - obs.t0  # the source's guest stopped at the switch
        else:
            t_stop = time.time() - obs.t0
        rate = (touches1 - touches0) / t_stop if t_stop > 0 else float("nan")
        if not (rate > 0 and math.isfinite(rate)) and not need_rate:
            rate = guest.actual_touches_per_s  # too short a run to count; the caller does not care
        if not (rate > 0 and math.isfinite(rate)):
            raise QemuError(f"could not measure the guest's touch rate (status "
                            f"{obs.final.get('status')!r}, touches {touches0} -> {touches1} "
                            f"in {t_stop:.3f} s)")
        ticks = (await src.read_dwords(TICKS_ADDR, 1))[0]
        obs.events.append((obs.end_t, "harness", "guest", f"touches={touches1} ticks={ticks}"))
        return Measurement(obs, ram_total, zero_pages, rate, time.monotonic() - started,
                           f"{version['major']}.{version['minor']}", pre_rate, touches0,
                           zero_ranges=zero_ranges)
    finally:
        await asyncio.gather(src.close(), dst.close())


def measure(run_id: str, guest: GuestParams, settings: MigrationSettings,
            binary: str | None = None, keep: Path | None = None,
            need_rate: bool = True, trace: bool = False) -> Measurement:
    """Launch the pair, migrate once, tear everything down; ``keep``: copy the QEMU logs there.
    ``need_rate``: fail when the guest's touch rate cannot be measured (a run too short to
    count touches); without it the nominal rate stands in. ``trace``: QEMU logs its
    switchover's steps (``Measurement.phases``); off by default, since the log's writes during
    the switchover add to the downtime being measured."""
    binary = binary or find_qemu()
    if binary is None:
        raise QemuError(f"{QEMU_BINARY} not found")
    with tempfile.TemporaryDirectory(prefix="migsim-qemu-") as tmp:
        # QEMU's unix socket paths must stay short: a temp dir, not the output directory.
        try:
            m = asyncio.run(_measure(run_id, guest, settings, binary, Path(tmp), need_rate,
                                     trace))
            logs = [Path(tmp) / f"{role}.log" for role in ("source", "destination")]
            if trace and all(log.exists() for log in logs):
                m.phases = qemu_trace.parse(*(log.read_text(errors="replace") for log in logs))
            return m
        finally:
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, keep / f"{run_id}-{log.name}")


__all__ = ["MigrationSettings", "Measurement", "QemuError", "QemuProcess", "find_qemu",
           "measure"]
