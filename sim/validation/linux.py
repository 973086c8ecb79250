"""A real Linux guest for the validation, built at run time from the distribution's packages.

The kernel is the distribution's own (``linux-image-amd64``: ``/boot/vmlinuz-*``); the root file
system is an initramfs made here in memory: ``busybox`` from ``busybox-static`` (its applets as
the shell, ``mount``, ``ip``, ``nc``), the application's binaries and every shared library
``ldd`` lists for them, at the same paths, and an ``/init`` that mounts proc, sys and dev, brings
up loopback, starts the application and its own load generator in the background, prints a
marker line on the serial console (``console=ttyS0``) and waits. The archive is the kernel's
``newc`` cpio format (see the kernel's ``Documentation/driver-api/early-userspace/
buffer-format.rst``), gzip-compressed, written with Python's own ``gzip``.

The applications (:data:`APPS`): ``idle`` (Linux and busybox only), ``redis`` (``redis-server``,
its keys filled, then driven by two ``redis-benchmark`` loops, SET and GET, packages
``redis-server`` and ``redis-tools``),
``memcached`` (``memcached`` driven by a busybox shell loop feeding ``set`` commands to one
``nc`` connection) and ``stress-ng`` (``stress-ng --vm``: anonymous pages rewritten
continuously). Nothing is downloaded: what is missing is named with its package
(:func:`missing`).
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

READY_MARKER = "MIGSIM-GUEST-READY"
BUSYBOX = "/bin/busybox"  # busybox-static's binary (a static one: no libraries to copy)


@dataclass(frozen=True)
class App:
    """One guest application: the programs to copy in, their packages, and the /init lines that
    start it and its load (in the background; the marker is printed after them)."""

    name: str
    programs: tuple[str, ...]
    packages: tuple[str, ...]  # the package of each program
    start: str


APPS: dict[str, App] = {
    "idle": App("idle", (), (), ""),
    "redis": App(
        "redis", ("redis-server", "redis-benchmark"), ("redis-server", "redis-tools"),
        "redis-server --save '' --appendonly no --protected-mode no --daemonize yes "
        "--logfile /tmp/redis.log\n"
        "sleep 1\n"
        # 50 000 keys of 512 bytes (about 40 MiB of values) filled first (pipelined, before the
        # ready marker), then SETs and GETs at once, forever, in two benchmarks. The load is
        # steady from the marker on, as a replay assumes: one `-t set,get` loop alternates
        # 100 000-request phases of each (10-20 s apiece under TCG), and a keyspace still
        # filling dirties more each second; a 1 s capture at QEMU's defaults saw 1 768 or 3 923
        # pages (5 or 30 s after the start) and 454 or 4 796 (a GET or a SET phase).
        "redis-benchmark -q -n 200000 -r 50000 -d 512 -P 16 -t set >/dev/null 2>&1\n"
        "redis-benchmark -q -l -r 50000 -d 512 -c 2 -t set >/dev/null 2>&1 &\n"
        "redis-benchmark -q -l -r 50000 -d 512 -c 2 -t get >/dev/null 2>&1 &\n"),
    "memcached": App(
        "memcached", ("memcached",), ("memcached",),
        "memcached -u root -m 64 -l 127.0.0.1 -d\n"
        "sleep 1\n"
        # one connection; `set` of 512-byte values over 50 000 keys, forever
        "v=$(head -c 384 /dev/urandom | base64 | tr -d '\\n' | head -c 512)\n"
        "(i=0; while true; do i=$(((i * 7919 + 1) % 50000)); "
        "printf 'set k%d 0 0 %d noreply\\r\\n%s\\r\\n' $i ${#v} $v; done "
        "| nc 127.0.0.1 11211 >/dev/null 2>&1) &\n"),
    "stress-ng": App(
        "stress-ng", ("stress-ng",), ("stress-ng",),
        "stress-ng --vm 1 --vm-bytes 64M --vm-keep --vm-method rand-set "
        "--timeout 0 --quiet >/dev/null 2>&1 &\n"),
}


def find_kernel() -> Path | None:
    """The newest ``/boot/vmlinuz-*`` (package ``linux-image-amd64``), or None."""
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(found[-1]) if found else None


def missing(app: str) -> list[str]:
    """The packages ``app``'s guest needs that are not installed (empty: it can be built)."""
    need = []
    if find_kernel() is None:
        need.append("linux-image-amd64")
    if not os.access(BUSYBOX, os.X_OK):
        need.append("busybox-static")
    spec = APPS[app]
    for program, package in zip(spec.programs, spec.packages, strict=True):
        if shutil.which(program) is None and package not in need:
            need.append(package)
    return need


_LDD_PATH = re.compile(r"(/\S+)")


def libraries(binary: str) -> list[str]:
    """The shared libraries (and the loader) ``ldd`` lists for ``binary``, as absolute paths."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a static binary: nothing to copy
        return []
    paths = []
    for line in proc.stdout.splitlines():
        m = _LDD_PATH.search(line.split("=>")[-1])
        if m is not None and os.path.exists(m.group(1)):
            paths.append(m.group(1))
    return paths


def init_script(app: str) -> str:
    """The guest's /init for ``app``."""
    return (
        "#!/bin/busybox sh\n"
        "/bin/busybox --install -s /bin\n"
        "export PATH=/bin:/usr/bin:/usr/sbin:/sbin\n"
        "mount -t proc proc /proc\n"
        "mount -t sysfs sys /sys\n"
        "mount -t devtmpfs dev /dev\n"
        "mount -t tmpfs tmp /tmp\n"
        "ip link set lo up\n"
        f"{APPS[app].start}"
        f"echo {READY_MARKER} {app}\n"
        "while true; do sleep 3600; done\n")


@dataclass(frozen=True)
class Entry:
    """One file of the initramfs: a copy of ``source`` or the bytes ``data``; a directory or a
    device node when ``mode`` says so (``rdev``: major, minor)."""

    path: str  # inside the archive, no leading slash
    mode: int
    source: str | None = None
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def entries(app: str) -> list[Entry]:
    """Every file of ``app``'s initramfs, directories first (the builder's file list)."""
    spec = APPS[app]
    files: dict[str, Entry] = {}
    dirs = {"bin", "dev", "proc", "sys", "tmp", "usr", "usr/bin", "etc", "root"}

    def add(path: str, source: str, mode: int = 0o755) -> None:
        rel = path.lstrip("/")
        files[rel] = Entry(rel, stat.S_IFREG | mode, source=source)
        parent = os.path.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)

    add("bin/busybox", BUSYBOX)
    for lib in libraries(BUSYBOX):  # none for busybox-static; a dynamic busybox works too
        add(lib, os.path.realpath(lib))
    for program in spec.programs:
        where = shutil.which(program)
        if where is None:
            raise FileNotFoundError(f"{program} not found (apt-get install "
                                    f"{' '.join(spec.packages)})")
        real = os.path.realpath(where)
        add(f"usr/bin/{program}", real)
        for lib in libraries(real):
            add(lib, os.path.realpath(lib))
    out = [Entry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs)]
    out.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    out.append(Entry("etc/passwd", stat.S_IFREG | 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"))
    out.append(Entry("etc/group", stat.S_IFREG | 0o644, data=b"root:x:0:\n"))
    out.append(Entry("init", stat.S_IFREG | 0o755, data=init_script(app).encode()))
    return out + [files[k] for k in sorted(files)]


def _newc(entries_: Iterable[Entry]) -> bytes:
    """The entries as a ``newc`` cpio archive (magic 070701, 13 hex fields, 4-byte padding)."""
    buf = io.BytesIO()

    def member(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        buf.write(b"\0" * (-buf.tell() % 4))
        buf.write(data)
        buf.write(b"\0" * (-buf.tell() % 4))

    for ino, e in enumerate(entries_, start=1):
        data = e.data
        if e.source is not None:
            data = Path(e.source).read_bytes()
        member(ino, e.path, e.mode, data, e.rdev)
    member(0, "TRAILER!!!", 0, b"", (0, 0))
    return buf.getvalue()


def build_initramfs(app: str, out: Path) -> Path:
    """Write ``app``'s initramfs (cpio newc, gzip) to ``out``."""
    out.write_bytes(gzip.compress(_newc(entries(app)), compresslevel=1))
    return out


__all__ = ["APPS", "READY_MARKER", "App", "Entry", "build_initramfs", "entries", "find_kernel",
           "init_script", "libraries", "missing"]
