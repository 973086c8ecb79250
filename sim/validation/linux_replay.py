"""Capture once at QEMU's defaults, replay under other settings, compare with real runs of them.

Part of ``migsim validate --real-qemu --linux`` (:mod:`sim.validation.linux_capture`). For each
application of :data:`REPLAY_APPS`:

1. one real migration of the application's guest at QEMU's default parameters and capabilities,
   through ``migsim capture --forward`` with page contents (the capture the replays are fitted
   on; the page contents give the replay's bytes per write and, in ``content: exact``, the real
   pages XBZRLE encodes);
2. for each setting of :data:`REPLAY_SETTINGS`: a real migration of a fresh guest at that setting
   (QEMU's ``query-migrate`` at the end is the truth), and the capture replayed under that
   setting (``workload: {kind: replay}``, :mod:`sim.replay`) on the host profile of ``migsim
   calibrate`` (the harness's own ``host.yaml``, fitted on idle calibration runs, never on these
   guests), mean of :data:`SEEDS` seeds;
3. judged: the outcome equal; total time, bytes sent and XBZRLE pages within
   :data:`TOLERANCE`; the dirty-bitmap syncs reported (not judged).

Bytes are the whole stream (RAM and device state; the real side from the relay's count, the
model's ``transferred_bytes`` with ``vm.device_state`` the capture's device bytes). A real
migration that has not converged after :data:`MAX_TIME_S` is cancelled and counts as
``not completed``; the replay gets the same ``max_time``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.units import MiB

from .cases import Case, Check
from .linux import missing
from .linux_capture import LinuxCase, LinuxRun, migrate_linux
from .qemu import QemuError
from .suite import Row, judge

TOLERANCE = 0.15
#: XBZRLE pages are also in tolerance within this many pages (256 KiB): a guest whose real run
#: has no or few cache hits (memcached: 0) is not failed for a replay's few dozen
XBZRLE_SLACK_PAGES = 64
#: the replay's seeds (their mean is judged)
SEEDS = (1, 2)
#: QEMU's default downtime limit (``migration/options.c``: DEFAULT_MIGRATE_SET_DOWNTIME)
DOWNTIME_LIMIT_S = 0.3
#: a real migration not converged after this long is cancelled (the replay's ``max_time``).
#: 60 s, not 40: Redis under auto-converge at 8 MiB/s converges at 38-41 s on this host, so at
#: 40 s the judged outcome flipped on a 5% difference in time that the time check passes.
MAX_TIME_S = 60.0
REPLAY_APPS = ("redis", "memcached", "stress-ng")


@dataclass(frozen=True)
class Setting:
    """What the real run and the replay get besides QEMU's defaults."""

    name: str
    capabilities: tuple[str, ...] = ()
    max_bandwidth: int = 128 * MiB  # QEMU's default (MAX_THROTTLE in migration/migration.c)
    xbzrle_cache_size: int = 64 * MiB  # QEMU's default

    def parameters(self) -> tuple[tuple[str, int], ...]:
        out: tuple[tuple[str, int], ...] = (("max-bandwidth", self.max_bandwidth),)
        if "xbzrle" in self.capabilities:
            out += (("xbzrle-cache-size", self.xbzrle_cache_size),)
        return out


REPLAY_SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("xbzrle-16MiB", ("xbzrle",), 16 * MiB),  # tight bandwidth with XBZRLE
    Setting("auto-converge-8MiB", ("auto-converge",), 8 * MiB),
    Setting("32MiB", (), 32 * MiB),  # another bandwidth
)}


def real_quantities(run: LinuxRun) -> dict[str, Any]:
    """The judged quantities of one real migration, from QEMU's ``query-migrate`` (the last one
    with counters, for a cancelled run; its total time is the time limit) and the relay's byte
    count (the whole stream)."""
    final = run.final
    if final.get("status") != "completed":  # a cancelled run's reply has no counters: the last
        final = next((dict(info, status=final.get("status"))  # active poll's
                      for _, info in reversed(getattr(run.capture, "samples", []))
                      if info.get("ram")), final)
    summary = run.capture.parser.summary
    stream = (summary.ram_bytes + summary.device_bytes) if summary is not None else math.nan
    done = final.get("status") == "completed"
    return {
        "status": "completed" if done else "not completed",
        "total_time_s": (float(final.get("total-time", math.nan)) / 1000.0 if done
                         else MAX_TIME_S),
        "transferred_bytes": float(stream),
        "xbzrle_pages": float((final.get("xbzrle-cache") or {}).get("pages", 0)),
        "dirty_sync_count": float(final.get("ram", {}).get("dirty-sync-count", math.nan)),
    }


def replay_data(capture: Path, setting: Setting, device_bytes: int, seed: int) -> dict[str, Any]:
    """The replay scenario (a mapping) of ``capture`` under ``setting``."""
    from sim.replay import fit

    version = {"version": "7.2"}
    exact = (capture / "pages.zst").is_file()
    return {
        "name": f"replay-{capture.name}-{setting.name}",
        "seed": seed,
        "vm": {"memory": fit(capture).memory, "device_state": device_bytes,
               "content": "exact" if exact else "modelled"},
        # Absolute: the scenario's file is inside the capture, and a relative path in it would be
        # read relative to that file, not to where validate was started (`-o ci-artifacts/...`).
        "workload": {"kind": "replay", "capture": str(capture.resolve())},
        "migration": {"max_bandwidth": setting.max_bandwidth, "downtime_limit": DOWNTIME_LIMIT_S,
                      "xbzrle_cache_size": setting.xbzrle_cache_size,
                      "capabilities": list(setting.capabilities), "qemu_version": "7.2",
                      "max_time": MAX_TIME_S},
        "endpoints": {"source": version, "destination": version},
        "negotiation": "qemu",
    }


def replay_quantities(capture: Path, setting: Setting, device_bytes: int,
                      host: Path | None, seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """The replay's quantities under ``setting``: the mean over ``seeds`` (the outcome: the
    most common one)."""
    from sim.run import run_one
    from sim.scenario import from_dict

    from .real import with_host

    runs = []
    for seed in seeds:
        data = replay_data(capture, setting, device_bytes, seed)
        scenario = with_host(from_dict(data, file=str(capture / "replay.yaml")), host, {})
        runs.append(run_one(scenario).runs.iloc[0])
    done = [r["status"] == "completed" for r in runs]
    out: dict[str, Any] = {"status": "completed" if sum(done) * 2 > len(done)
                           else "not completed"}
    for column in ("total_time_s", "transferred_bytes", "xbzrle_pages", "dirty_sync_count"):
        out[column] = float(sum(float(r[column]) for r in runs) / len(runs))
    return out


def _case(app: str, setting: Setting) -> Case:
    return Case(id=f"linux-replay-{app}-{setting.name}",
                title=f"a Linux guest running {app}, captured at QEMU's defaults, replayed at "
                      f"{setting.name}",
                source="QEMU query-migrate of a real run at the same setting",
                path=Path(__file__), checks=(), kind="qemu")


def compare(app: str, setting: Setting, real: dict[str, Any], model: dict[str, Any],
            note: str = "") -> list[Row]:
    """One row per quantity: the real run expected, the replay judged."""
    case = _case(app, setting)
    checks = [Check("status", "equals"), Check("total_time_s", "rel", tol=TOLERANCE),
              Check("transferred_bytes", "rel", tol=TOLERANCE)]
    if "xbzrle" in setting.capabilities:
        checks.append(Check("xbzrle_pages", "rel", tol=TOLERANCE, slack=XBZRLE_SLACK_PAGES))
    checks.append(Check("dirty_sync_count", "report"))
    return [judge(case, c, real.get(c.quantity), model.get(c.quantity), note=note)
            for c in checks]


def _capture_defaults(app: str, folder: Path, binary: str | None) -> LinuxRun:
    """The defaults migration of ``app`` with page contents, written to ``folder``. The pages
    go to a plain file while QEMU streams and are compressed after: compressing in the relay's
    loop slowed QEMU's migration (4.8 s against 1.3 s for the Redis guest on this 2-core host),
    so the capture would not have been of QEMU's defaults."""
    import zstandard

    from sim.capture import write

    folder.mkdir(parents=True, exist_ok=True)
    raw_fd, raw = tempfile.mkstemp(prefix=".pages-raw-", dir=folder.parent)
    zst_fd, zst = tempfile.mkstemp(prefix=".pages-", dir=folder.parent)
    try:
        with os.fdopen(raw_fd, "wb", buffering=1 << 24) as handle:  # few large writes
            run = migrate_linux(LinuxCase(f"{app}-defaults", app), binary, content=handle)
        with open(raw, "rb") as src, os.fdopen(zst_fd, "wb") as dst:
            zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
        write(run.capture, folder, Path(zst))
    finally:
        for name in (raw, zst):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
    return run


def _errors() -> tuple[type[Exception], ...]:
    """What a failed real migration raises (qemu.qmp is imported only when one runs)."""
    from qemu.qmp import QMPError

    return (QemuError, OSError, QMPError)


def _device_bytes(run: LinuxRun) -> int:
    summary = run.capture.parser.summary
    return int(summary.device_bytes) if summary is not None else 0


def run_replay(apps: list[str], outdir: Path | None, host: Path | None,
               log: Callable[[str], None] = print, binary: str | None = None,
               settings: list[str] | None = None, keep_pages: bool = False) -> list[Row]:
    """Each app's defaults capture replayed under each setting, against real runs of them.
    Captures and the per-run numbers go to ``outdir/linux-replay/`` (``pages.zst`` is removed
    after the replays unless ``keep_pages``)."""
    out: list[Row] = []
    chosen = [REPLAY_SETTINGS[s] for s in (settings or list(REPLAY_SETTINGS))]
    with tempfile.TemporaryDirectory(prefix="migsim-replay-") as tmp:
        base = outdir / "linux-replay" if outdir is not None else Path(tmp)
        for app in apps:
            if missing(app):
                continue  # linux_capture has said which packages
            folder = base / app / "capture-defaults"
            try:
                captured = _capture_defaults(app, folder, binary)
            except _errors() as err:
                log(f"  linux-replay-{app}: defaults capture failed: {err}")
                out += [r for s in chosen for r in compare(app, s, {}, {}, f"error: {err}")]
                continue
            device = _device_bytes(captured)
            log(f"  linux-replay-{app}: captured at the defaults: "
                f"{real_quantities(captured)}")
            for setting in chosen:
                out += _one(app, setting, folder, device, host, base, log, binary)
            if not keep_pages:
                with contextlib.suppress(FileNotFoundError):
                    (folder / "pages.zst").unlink()
    return out


def _one(app: str, setting: Setting, capture: Path, device: int, host: Path | None,
         base: Path, log: Callable[[str], None], binary: str | None) -> list[Row]:
    from sim.capture import write

    try:
        run = migrate_linux(LinuxCase(f"{app}-{setting.name}", app, setting.capabilities,
                                      setting.parameters()), binary, timeout_s=MAX_TIME_S)
    except _errors() as err:
        log(f"  linux-replay-{app}-{setting.name}: real run failed: {err}")
        return compare(app, setting, {}, {}, f"error: {err}")
    real = real_quantities(run)
    write(run.capture, base / app / setting.name, None)
    model = replay_quantities(capture, setting, device, host)
    (base / app / setting.name / "replay-vs-real.json").write_text(
        json.dumps({"real": real, "replay": model}, indent=1))
    log(f"  linux-replay-{app}-{setting.name}: real {_brief(real)}; replay {_brief(model)}")
    return compare(app, setting, real, model)


def _brief(q: dict[str, Any]) -> str:
    return (f"{q['status']}, {q['total_time_s']:.2f} s, {q['transferred_bytes'] / 1e6:.1f} MB, "
            f"{q['xbzrle_pages']:.0f} xbzrle, {q['dirty_sync_count']:.0f} syncs")


__all__ = ["REPLAY_APPS", "REPLAY_SETTINGS", "Setting", "compare", "real_quantities",
           "replay_data", "replay_quantities", "run_replay"]
