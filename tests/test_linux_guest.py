"""The real Linux guests of the validation: the initramfs builder (fast) and, slow, real
migrations of those guests through a capture relay checked against QEMU's own counters."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sim.validation.linux import (
    APPS,
    READY_MARKER,
    build_initramfs,
    entries,
    init_script,
    libraries,
    missing,
)

needs_busybox = pytest.mark.skipif(not os.access("/bin/busybox", os.X_OK),
                                   reason="needs busybox-static")


@needs_busybox
def test_idle_initramfs_has_busybox_init_and_a_console() -> None:
    files = {e.path: e for e in entries("idle")}
    assert files["bin/busybox"].source is not None
    assert os.path.samefile(str(files["bin/busybox"].source), "/bin/busybox")
    init = files["init"]
    assert stat.S_ISREG(init.mode) and init.mode & 0o111  # executable
    assert init.data.startswith(b"#!/bin/busybox sh\n")
    console = files["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    for d in ("proc", "sys", "dev", "tmp", "bin"):
        assert stat.S_ISDIR(files[d].mode)


@needs_busybox
@pytest.mark.parametrize("app", [a for a in APPS if a != "idle"])
def test_app_initramfs_holds_its_programs_and_every_library_ldd_lists(app: str) -> None:
    if missing(app):
        pytest.skip(f"needs {' '.join(missing(app))}")
    listed = entries(app)
    files = {e.path: e for e in listed}
    order = [e.path for e in listed]
    for program in APPS[app].programs:
        where = shutil.which(program)
        assert where is not None
        copied = files[f"usr/bin/{program}"]
        assert copied.source is not None and os.path.samefile(copied.source, where)
        libs = libraries(os.path.realpath(where))
        assert libs, f"{program} is dynamically linked: ldd lists libraries"
        for lib in libs:  # at the path the loader looks for it (PT_INTERP, the ldd path)
            assert lib.lstrip("/") in files, lib
    # every file's folders are in the archive, before it (cpio extracts in order)
    for i, path in enumerate(order):
        parent = os.path.dirname(path)
        if parent:
            assert parent in files and stat.S_ISDIR(files[parent].mode)
            assert order.index(parent) < i


@pytest.mark.parametrize("app", list(APPS))
def test_init_mounts_starts_the_load_and_prints_the_marker(app: str) -> None:
    script = init_script(app)
    for fs in ("proc", "sysfs", "devtmpfs"):
        assert f"mount -t {fs} " in script
    lines = script.splitlines()
    marker = next(i for i, line in enumerate(lines) if READY_MARKER in line)
    for program in APPS[app].programs:  # started before the marker
        assert any(program in line for line in lines[:marker]), program
    assert "while true" in lines[-1]  # PID 1 never exits (a kernel panic otherwise)


@needs_busybox
@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio")
def test_archive_reads_back_with_gnu_cpio(tmp_path: Path) -> None:
    path = build_initramfs("idle", tmp_path / "idle.cpio.gz")
    listing = subprocess.run(f"zcat {path} | cpio -itv --quiet", shell=True, check=True,
                             capture_output=True, text=True).stdout.splitlines()
    names = {line.split()[-1]: line for line in listing}
    assert set(names) == {e.path for e in entries("idle")}
    assert names["dev/console"].startswith("crw")
    assert names["init"].startswith("-rwx")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zcat {path} | cpio -id --quiet --no-absolute-filenames", shell=True,
                   check=True, cwd=out, capture_output=True)
    assert (out / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (out / "init").read_text() == init_script("idle")


def test_linux_needs_real_qemu() -> None:
    proc = subprocess.run([sys.executable, "-m", "sim", "validate", "--linux"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("validate: --linux needs --real-qemu")


def _can_migrate(app: str) -> bool:
    return (shutil.which("qemu-system-x86_64") is not None and not missing(app)
            and importlib.util.find_spec("qemu.qmp") is not None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["idle", "redis", "redis-xbzrle"])
def test_real_linux_migration_through_capture_matches_qemu(tmp_path: Path, name: str) -> None:
    from sim.validation.linux_capture import LINUX_CASES

    case = LINUX_CASES[name]
    app = case.app
    if not _can_migrate(app):
        pytest.skip(f"needs qemu-system-x86_64, qemu.qmp and {' '.join(missing(app))}")
    from sim.result import Result
    from sim.validation.linux_capture import counts, migrate_linux, rows

    run = migrate_linux(case)
    assert run.capture.error is None, run.capture.error
    assert run.final.get("status") == "completed", run.final
    assert run.destination.get("status") == "completed", run.destination
    got = counts(run)
    for quantity, (qemu, parsed) in got.items():
        assert abs(parsed - qemu) <= 0.01 * max(qemu, 1), (quantity, qemu, parsed)
    # a booted Linux guest: tens of MiB of non-zero pages, most of 256 MiB zero
    assert got["normal pages"][0] > 5000 and got["zero pages"][0] > 20000
    if "xbzrle" in case.capabilities:  # Redis rewrites pages that were cached: real hits
        assert got["xbzrle pages"][1] - run.skipped > 0
    else:
        assert got["xbzrle pages"] == (0, 0)
    assert all(r.ok for r in rows(run))
    from sim.capture import write

    write(run.capture, tmp_path / "cap", None)
    assert Result.load(tmp_path / "cap").runs["normal_pages"].iloc[0] == got["normal pages"][0]
    proc = subprocess.run([sys.executable, "-m", "sim", "plot", str(tmp_path / "cap")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cap" / "timeline.png").exists()


# -- the real Redis capture in the repository (no QEMU needed) -----------------------------------

REDIS_CAPTURE = Path(__file__).parent / "data" / "captures" / "redis"
GUEST_RAM_PAGES = 256 * 1024 * 1024 // 4096


def test_repository_redis_capture_follows_the_stream_rules() -> None:
    import numpy as np
    import pandas as pd

    from sim.result import Result

    records = pd.read_parquet(REDIS_CAPTURE / "records.parquet")
    run = Result.load(REDIS_CAPTURE).runs.iloc[0]
    assert run["status"] == "completed"
    kinds = records["kind"].astype(str)
    assert int((kinds == "page").sum()) == run["normal_pages"] == 28248  # QEMU's ram.normal
    assert int((kinds == "zero").sum()) == run["zero_pages"] == 38508  # QEMU's ram.duplicate
    assert set(kinds) == {"page", "zero"}  # no XBZRLE at QEMU's defaults
    # the first round sends every page of the guest's RAM exactly once
    ram = records[(records["pass"] == 1) & (records["block"].astype(str) == "pc.ram")]
    assert np.array_equal(np.sort(ram["page"].to_numpy()), np.arange(GUEST_RAM_PAGES))
    # wire size: 8-byte header, then the block name (1 + len) unless RAM_SAVE_FLAG_CONTINUE,
    # then 1 byte (zero) or 4096 bytes (raw page)
    name = 1 + records["block"].astype(str).str.len().to_numpy()
    body = np.where(kinds == "zero", 1, 4096) + 8
    wire = records["wire_bytes"].to_numpy()
    assert np.all((wire == body) | (wire == body + name))
    # a block's first record names it
    first = records.groupby("block", observed=True).head(1)
    assert np.all(first["wire_bytes"].to_numpy() == (body + name)[first.index.to_numpy()])
    assert np.all(np.diff(records["t_s"].to_numpy()) >= 0)
    assert np.all(np.diff(records["pass"].to_numpy()) >= 0)
