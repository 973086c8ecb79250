"""``migsim validate --real-qemu --linux``: real Linux guests migrated through ``migsim capture``.

Per application of :mod:`sim.validation.linux`: a source QEMU boots the distribution kernel with
the application's initramfs (TCG, ``console=ttyS0`` to a file; ready when the /init's marker line
appears, then the load runs for :data:`LOAD_S` more seconds), a destination boots the same
kernel and initramfs with ``-incoming defer``, and the source migrates at QEMU's default
parameters and capabilities to a capture relay (:func:`sim.capture.serve` with ``forward``) in
front of the destination, which polls the source's ``query-migrate`` on a second QMP socket.
Checked: the page records parsed from the stream against QEMU's own counters of the same
migration: ``ram.normal`` (raw pages), ``ram.duplicate`` (zero pages), ``xbzrle-cache.pages``
(0 at the defaults) and ``ram.transferred`` (the stream's bytes up to the device state), each
within 1%, and that the migration completed on both sides.

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

from sim.units import MiB

from .cases import Case, Check
from .linux import READY_MARKER, build_initramfs, find_kernel, missing
from .qemu import QemuError, QemuProcess, find_qemu
from .suite import Row, judge

MEMORY = 256 * MiB
BOOT_TIMEOUT_S = 180.0  # TCG boots the distribution kernel in 10-40 s on a shared core
LOAD_S = 5.0  # the application's load runs this long before `migrate`
MIGRATE_TIMEOUT_S = 240.0  # then migrate_cancel: the run is reported as not completed
TOLERANCE = 0.01


@dataclass
class LinuxRun:
    """One captured migration of a Linux guest and QEMU's own view of it."""

    app: str
    capture: Any  # sim.capture.Capture
    final: dict[str, Any]  # the source's last query-migrate
    destination: dict[str, Any]  # the destination's query-migrate after the end
    boot_s: float
    wall_s: float


def _linux_process(role: str, binary: str, kernel: Path, initrd: Path, workdir: Path,
                   incoming: bool) -> QemuProcess:
    q = QemuProcess(role, binary, Path("unused"), MEMORY, workdir, incoming)
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
    info: dict[str, Any] = {}
    for _ in range(100):
        info = dict(await q.execute("query-migrate"))
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    return info


async def _migrate(app: str, binary: str, workdir: Path) -> LinuxRun:
    from sim.capture import Capture, Records, serve
    from sim.qmp.server import parse_address
    from sim.stream import StreamParser

    kernel = find_kernel()
    if kernel is None:
        raise QemuError("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
    started = time.monotonic()
    initrd = build_initramfs(app, workdir / f"{app}.cpio.gz")
    src = _linux_process("source", binary, kernel, initrd, workdir, incoming=False)
    dst = _linux_process("destination", binary, kernel, initrd, workdir, incoming=True)
    src.args += ["-qmp", f"unix:{workdir / 'capture.qmp'},server=on,wait=off"]
    records = Records()
    cap = Capture(StreamParser(records.add, keep_content=False), records)
    try:
        src.start()
        dst.start()
        await asyncio.gather(src.connect(), dst.connect())
        await _wait_marker(src, workdir / "source.serial")
        boot_s = time.monotonic() - started
        await asyncio.sleep(LOAD_S)
        await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        address = (await dst.execute("query-migrate"))["socket-address"][0]
        target = parse_address(f"{address['host']}:{address['port']}")
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(parse_address("127.0.0.1:0"), cap, forward=target,
                                         qmp=str(workdir / "capture.qmp"),
                                         on_ready=ready.set_result))
        await src.execute("migrate", {"uri": f"tcp:{await ready}"})
        try:
            await asyncio.wait_for(asyncio.shield(task), MIGRATE_TIMEOUT_S)
        except TimeoutError:
            await src.execute("migrate_cancel")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 30.0)
        final = cap.final or await _status(src)
        return LinuxRun(app, cap, final, await _status(dst), boot_s,
                        time.monotonic() - started)
    finally:
        await asyncio.gather(src.close(), dst.close())


def migrate_linux(app: str, binary: str | None = None) -> LinuxRun:
    """Boot ``app``'s guest twice, migrate it through a capture relay; tear everything down."""
    binary = binary or find_qemu()
    if binary is None:
        raise QemuError("qemu-system-x86_64 not found")
    with tempfile.TemporaryDirectory(prefix="migsim-linux-") as tmp:  # short socket paths
        return asyncio.run(_migrate(app, binary, Path(tmp)))


def counts(run: LinuxRun) -> dict[str, tuple[float, float]]:
    """quantity -> (QEMU's counter, the capture's value)."""
    cols = run.capture.records.columns
    kinds, wire = cols["kind"], cols["wire_bytes"]
    ram = run.final.get("ram", {})
    xb = run.final.get("xbzrle-cache") or {}
    summary = run.capture.parser.summary
    return {
        "normal pages": (ram.get("normal", 0), sum(1 for k in kinds if k == "page")),
        "zero pages": (ram.get("duplicate", 0), sum(1 for k in kinds if k == "zero")),
        "xbzrle pages": (xb.get("pages", 0), sum(1 for k in kinds if k == "xbzrle")),
        "ram bytes": (ram.get("transferred", 0), summary.ram_bytes),
        "normal bytes": (ram.get("normal-bytes", 0),
                         sum(w - 8 for k, w in zip(kinds, wire, strict=True) if k == "page")),
    }


def _case(app: str) -> Case:
    return Case(id=f"linux-{app}", title=f"a Linux guest running {app}, captured",
                source="QEMU query-migrate of the same migration", path=Path(__file__),
                checks=(), kind="qemu")


def rows(run: LinuxRun) -> list[Row]:
    """One row per counter (QEMU expected, the capture judged) plus both sides' outcome."""
    case = _case(run.app)
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


def run_linux(apps: list[str], outdir: Path | None, log: Callable[[str], None] = print,
              binary: str | None = None) -> list[Row]:
    """Each application's capture check; a missing package skips that application."""
    from sim.capture import write

    out: list[Row] = []
    for app in apps:
        need = missing(app)
        if need:
            log(f"  linux-{app}: skipped: apt-get install --no-install-recommends "
                f"{' '.join(need)}")
            continue
        try:
            run = migrate_linux(app, binary)
        except (QemuError, OSError) as err:
            log(f"  linux-{app}: error: {err}")
            out.append(judge(_case(app), Check("capture vs query-migrate", "equals"), "ran",
                             None, note=f"error: {err}"))
            continue
        ram = run.final.get("ram", {})
        log(f"  linux-{app}: {run.final.get('status')} in {run.final.get('total-time', 0)} ms, "
            f"{ram.get('normal', 0)} normal + {ram.get('duplicate', 0)} zero pages, "
            f"{ram.get('dirty-sync-count', 0)} syncs (boot {run.boot_s:.0f} s, "
            f"wall {run.wall_s:.0f} s)")
        if outdir is not None:
            write(run.capture, outdir / "linux" / app, None)
        out.extend(rows(run))
    return out


__all__ = ["LinuxRun", "counts", "migrate_linux", "rows", "run_linux"]
