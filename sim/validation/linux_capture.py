"""``migsim validate --real-qemu --linux``: real Linux guests migrated through ``migsim capture``.

Per application of :mod:`sim.validation.linux`: a source QEMU boots the distribution kernel with
the application's initramfs (TCG, ``console=ttyS0`` to a file; ready when the /init's marker line
appears, then the load runs for :data:`LOAD_S` more seconds), a destination boots the same
kernel and initramfs with ``-incoming defer``, and the source migrates at QEMU's default
parameters and capabilities to a capture relay (:func:`sim.capture.serve` with ``forward``) in
front of the destination, which polls the source's ``query-migrate`` on a second QMP socket.
Checked: the page records parsed from the stream against QEMU's own counters of the same
migration: ``ram.normal`` (raw pages), ``ram.normal-bytes``, ``ram.duplicate`` (zero pages),
``xbzrle-cache.pages`` and ``bytes`` (0 at the defaults) and ``ram.transferred`` (the stream's
bytes up to the device state), each within 1%, and that the migration completed on both sides.
QEMU's XBZRLE hits include pages the stream cannot show as XBZRLE records (unchanged since
cached: nothing sent; overflowed: sent raw, counted as 4096 XBZRLE bytes); with XBZRLE on, the
source runs with QEMU's ``save_xbzrle_page_skipping`` and ``save_xbzrle_page_overflow`` traces
and those are added to the records (``migration/ram.c``, ``save_xbzrle_page``). The default
cases run at QEMU's defaults; ``redis-xbzrle`` adds XBZRLE at 16 MiB/s, so pages recur.

RAM equality of the two sides is not checked: under TCG, QEMU 7.2 can miss a guest store made
during a dirty-bitmap sync, so a migrated Linux guest may differ from its source; timing and
counters are what is judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.units import MiB

from .cases import Case, Check
from .linux import READY_MARKER, build_initramfs, find_kernel, missing
from .qemu import QemuError, QemuProcess, find_qemu
from .suite import Row, judge

MEMORY = 256 * MiB
BOOT_TIMEOUT_S = 120.0  # TCG boots the distribution kernel in 6-12 s on a shared core
LOAD_S = 5.0  # the application's load runs this long before `migrate`
MIGRATE_TIMEOUT_S = 90.0  # then migrate_cancel (reported as not completed); keeps CI bounded
TOLERANCE = 0.01
# QEMU's traces of the XBZRLE hits the stream cannot show as XBZRLE records: unchanged since
# cached (nothing sent), and overflowed (sent as a raw page; QEMU counts 4096 xbzrle bytes)
SKIP_TRACE = "save_xbzrle_page_skipping"
OVERFLOW_TRACE = "save_xbzrle_page_overflow"


@dataclass(frozen=True)
class LinuxCase:
    """One migration of one guest: the application and what is asked of QEMU besides its
    defaults (capabilities on both sides, parameters on the source)."""

    name: str  # the case id is linux-<name>
    app: str
    capabilities: tuple[str, ...] = ()
    parameters: tuple[tuple[str, int], ...] = ()


LINUX_CASES: dict[str, LinuxCase] = {c.name: c for c in (
    LinuxCase("idle", "idle"),
    LinuxCase("redis", "redis"),
    LinuxCase("memcached", "memcached"),
    LinuxCase("stress-ng", "stress-ng"),
    # XBZRLE on real Redis pages: a 16 MiB/s limit makes several rounds, so pages recur
    LinuxCase("redis-xbzrle", "redis", ("xbzrle",),
              (("max-bandwidth", 16 * MiB), ("xbzrle-cache-size", 64 * MiB))),
)}


@dataclass
class LinuxRun:
    """One captured migration of a Linux guest and QEMU's own view of it."""

    case: LinuxCase
    capture: Any  # sim.capture.Capture
    final: dict[str, Any]  # the source's last query-migrate
    destination: dict[str, Any]  # the destination's query-migrate after the end
    boot_s: float
    wall_s: float
    skipped: int = 0  # XBZRLE hits QEMU sent nothing for (unchanged since cached; its trace)
    overflowed: int = 0  # XBZRLE hits whose encoding overflowed (sent raw; its trace)


def _linux_process(role: str, binary: str, kernel: Path, initrd: Path, workdir: Path,
                   incoming: bool, memory: int = MEMORY) -> QemuProcess:
    q = QemuProcess(role, binary, Path("unused"), memory, workdir, incoming)
    drive = q.args.index("-drive")
    del q.args[drive:drive + 2]
    q.args += ["-kernel", str(kernel), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet panic=-1",
               "-serial", f"file:{workdir / (role + '.serial')}"]
    return q


async def _wait_marker(q: QemuProcess, serial: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while not (serial.exists() and READY_MARKER in serial.read_text(errors="replace")):
        if (why := q.exited()) is not None:
            raise QemuError(why)
        if time.monotonic() > deadline:
            tail = serial.read_text(errors="replace")[-300:] if serial.exists() else ""
            raise QemuError(f"{q.role}: no {READY_MARKER} on the serial console after "
                            f"{BOOT_TIMEOUT_S:.0f} s: {tail!r}")
        await asyncio.sleep(0.25)


async def _status(q: QemuProcess) -> dict[str, Any]:
    from qemu.qmp import QMPError

    info: dict[str, Any] = {}
    for _ in range(100):
        try:
            info = dict(await q.execute("query-migrate"))
        except QMPError as err:  # a destination exits when its incoming migration fails
            return {"status": f"exited ({type(err).__name__})"}
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    return info


async def _migrate(case: LinuxCase, binary: str, workdir: Path, memory: int = MEMORY,
                   content: Any | None = None,
                   timeout_s: float = MIGRATE_TIMEOUT_S) -> LinuxRun:
    from sim.capture import Capture, Records, serve
    from sim.qmp.server import parse_address
    from sim.stream import StreamParser

    kernel = find_kernel()
    if kernel is None:
        raise QemuError("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
    started = time.monotonic()
    initrd = build_initramfs(case.app, workdir / f"{case.app}.cpio.gz")
    src = _linux_process("source", binary, kernel, initrd, workdir, False, memory)
    dst = _linux_process("destination", binary, kernel, initrd, workdir, True, memory)
    src.args += ["-qmp", f"unix:{workdir / 'capture.qmp'},server=on,wait=off"]
    trace = workdir / "trace.log"
    if "xbzrle" in case.capabilities:
        src.args += ["-trace", f"enable={SKIP_TRACE}", "-trace", f"enable={OVERFLOW_TRACE}",
                     "-D", str(trace)]
    records = Records(content)
    cap = Capture(StreamParser(records.add, keep_content=content is not None), records)
    try:
        src.start()
        dst.start()
        await asyncio.gather(src.connect(), dst.connect())
        await _wait_marker(src, workdir / "source.serial")
        boot_s = time.monotonic() - started
        await asyncio.sleep(LOAD_S)
        if case.capabilities:
            caps = [{"capability": c, "state": True} for c in case.capabilities]
            for q in (src, dst):
                await q.execute("migrate-set-capabilities", {"capabilities": caps})
        if case.parameters:
            await src.execute("migrate-set-parameters", dict(case.parameters))
        await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        address = (await dst.execute("query-migrate"))["socket-address"][0]
        target = parse_address(f"{address['host']}:{address['port']}")
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(parse_address("127.0.0.1:0"), cap, forward=target,
                                         qmp=str(workdir / "capture.qmp"),
                                         on_ready=ready.set_result))
        await src.execute("migrate", {"uri": f"tcp:{await ready}"})
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            await src.execute("migrate_cancel")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 30.0)
        final = cap.final or await _status(src)
        dst_info = await _status(dst)
        wall_s = time.monotonic() - started
        await src.close()  # flushes the trace
        text = trace.read_text() if trace.exists() else ""
        return LinuxRun(case, cap, final, dst_info, boot_s, wall_s, text.count(SKIP_TRACE),
                        text.count(OVERFLOW_TRACE))
    finally:
        await asyncio.gather(src.close(), dst.close())


def migrate_linux(case: LinuxCase, binary: str | None = None, memory: int = MEMORY,
                  content: Any | None = None, timeout_s: float = MIGRATE_TIMEOUT_S) -> LinuxRun:
    """Boot the case's guest twice, migrate it through a capture relay; tear everything down.

    ``content``: a writable stream (a zstd stream writer) that receives every raw, XBZRLE or
    compressed page's content, as ``migsim capture --content`` writes ``pages.zst``.
    ``timeout_s``: the migration is cancelled after this long (reported as not completed)."""
    binary = binary or find_qemu()
    if binary is None:
        raise QemuError("qemu-system-x86_64 not found")
    with tempfile.TemporaryDirectory(prefix="migsim-linux-") as tmp:  # short socket paths
        return asyncio.run(_migrate(case, binary, Path(tmp), memory, content, timeout_s))


def counts(run: LinuxRun) -> dict[str, tuple[float, float]]:
    """quantity -> (QEMU's counter, the capture's value)."""
    cols = run.capture.records.columns
    kinds = np.asarray(cols["kind"], dtype=object)
    wire = np.asarray(cols["wire_bytes"], dtype=np.int64)
    raw, xbzrle = kinds == "page", kinds == "xbzrle"
    ram = run.final.get("ram", {})
    xb = run.final.get("xbzrle-cache") or {}
    summary = run.capture.parser.summary
    hidden = run.skipped + run.overflowed
    return {
        "normal pages": (ram.get("normal", 0), int(raw.sum())),
        # QEMU's normal bytes are the pages' payloads: each record less its 8-byte header
        "normal bytes": (ram.get("normal-bytes", 0), int((wire[raw] - 8).sum())),
        "zero pages": (ram.get("duplicate", 0), int((kinds == "zero").sum())),
        # QEMU counts every cache hit; the stream shows those encoded (the rest: its traces)
        "xbzrle pages": (xb.get("pages", 0), int(xbzrle.sum()) + hidden),
        # QEMU's xbzrle bytes leave out each record's 8-byte header and add 4096 per overflow
        "xbzrle bytes": (xb.get("bytes", 0),
                         int((wire[xbzrle] - 8).sum()) + 4096 * run.overflowed),
        "ram bytes": (ram.get("transferred", 0), summary.ram_bytes),
    }


def _case(case: LinuxCase) -> Case:
    return Case(id=f"linux-{case.name}", title=f"a Linux guest running {case.app}, captured",
                source="QEMU query-migrate of the same migration", path=Path(__file__),
                checks=(), kind="qemu")


def rows(run: LinuxRun) -> list[Row]:
    """One row per counter (QEMU expected, the capture judged) plus both sides' outcome."""
    case = _case(run.case)
    out = [judge(case, Check(q, "rel", tol=TOLERANCE), float(e), float(m))
           for q, (e, m) in counts(run).items()]
    out.append(judge(case, Check("status (source, destination)", "equals"), "completed",
                     f"{run.final.get('status')}, {run.destination.get('status')}"
                     if run.final.get("status") != run.destination.get("status")
                     else str(run.final.get("status"))))
    note = f"stream damage: {run.capture.error}" if run.capture.error is not None else ""
    out.append(judge(case, Check("stream parsed without damage", "equals"), "yes",
                     "no" if note else "yes", note=note))
    return out


def run_linux(names: list[str], outdir: Path | None, log: Callable[[str], None] = print,
              binary: str | None = None) -> list[Row]:
    """Each named case's capture check; a missing package skips that case."""
    from sim.capture import write

    out: list[Row] = []
    for name in names:
        case = LINUX_CASES[name]
        need = missing(case.app)
        if need:
            log(f"  linux-{name}: skipped: apt-get install --no-install-recommends "
                f"{' '.join(need)}")
            continue
        try:
            run = migrate_linux(case, binary)
        except (QemuError, OSError) as err:
            log(f"  linux-{name}: error: {err}")
            out.append(judge(_case(case), Check("capture vs query-migrate", "equals"), "ran",
                             None, note=f"error: {err}"))
            continue
        ram = run.final.get("ram", {})
        xb = run.final.get("xbzrle-cache") or {}
        log(f"  linux-{name}: {run.final.get('status')} in {run.final.get('total-time', 0)} ms, "
            f"{ram.get('normal', 0)} normal + {ram.get('duplicate', 0)} zero + "
            f"{xb.get('pages', 0)} xbzrle pages, {ram.get('dirty-sync-count', 0)} syncs "
            f"(boot {run.boot_s:.0f} s, wall {run.wall_s:.0f} s)")
        if outdir is not None:
            write(run.capture, outdir / "linux" / name, None)
        out.extend(rows(run))
    return out


__all__ = ["LINUX_CASES", "LinuxCase", "LinuxRun", "counts", "migrate_linux", "rows",
           "run_linux"]
