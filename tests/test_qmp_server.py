"""The QMP server over a real Testbed, driven as libvirt would drive QEMU, with the qemu.qmp
client library: handshake, capabilities on both sides, parameters, migrate-incoming + migrate,
query-migrate polling, events, a capability mismatch, error replies; and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from builders import yaml_testbed

qmp = pytest.importorskip("qemu.qmp")
from qemu.qmp import ExecuteError, QMPClient  # noqa: E402
from qmp_clients import connect, run  # noqa: E402

import sim  # noqa: E402
from sim.qmp.server import Address, AddressError, QmpServer, parse_address, serve  # noqa: E402
from sim.run import Testbed  # noqa: E402
from sim.units import MiB  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

BASE = """
name: qmp-test
seed: 7
vm: {memory: 128MiB}
workload: {kind: hotspot, writes_per_s: 100000, hot_set: 16MiB, hot_probability: 0.9}
link: {bandwidth: 1Gbit/s}
"""


def make_testbed(tmp_path: Path, extra: str = "") -> Testbed:
    return yaml_testbed(tmp_path, BASE, extra)


@pytest.fixture(scope="module", autouse=True)
def warm_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the numba kernels once, outside the timed parts (a cold cache takes seconds)."""
    tb = make_testbed(tmp_path_factory.mktemp("warm"))
    tb.source.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])
    tb.advance(0.2)
    tb.source.migrate(uri="tcp:x:1")
    tb.advance(60.0)


async def poll_until(client: QMPClient, states: tuple[str, ...],
                     timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = await client.execute("query-migrate")
        assert isinstance(info, dict)
        if info.get("status") in states:
            return info
        assert time.monotonic() < deadline, f"still {info.get('status')} after {timeout} s"
        await asyncio.sleep(0.02)


class EventLog:
    def __init__(self, client: QMPClient) -> None:
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._collect(client))

    async def _collect(self, client: QMPClient) -> None:
        async for event in client.events:
            self.events.append(dict(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def stop(self) -> None:
        self.task.cancel()


# -- a libvirt-style migration -------------------------------------------------------------------


def test_libvirt_style_migration_completes(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "src"), str(sockdir / "dst"), speed=100) as server:
            src = await connect(server.addresses["source"])
            dst = await connect(server.addresses["destination"])
            assert src.greeting is not None
            assert src.greeting.QMP.version["qemu"]["major"] == 10  # type: ignore[index]
            assert src.greeting.QMP.capabilities == []

            # capabilities: what both support, of what we want
            src_caps = await src.execute("query-migrate-capabilities")
            dst_caps = await dst.execute("query-migrate-capabilities")
            assert isinstance(src_caps, list) and isinstance(dst_caps, list)
            both = {c["capability"] for c in src_caps} & {c["capability"] for c in dst_caps}
            wanted = [{"capability": c, "state": True} for c in ("xbzrle", "events") if c in both]
            assert len(wanted) == 2
            for client in (src, dst):
                assert await client.execute("migrate-set-capabilities",
                                            {"capabilities": wanted}) == {}
            states = {c["capability"]: c["state"]
                      for c in await src.execute("query-migrate-capabilities")}  # type: ignore
            assert states["xbzrle"] and states["events"] and not states["auto-converge"]

            params = {"downtime-limit": 400, "max-bandwidth": 125_000_000,
                      "xbzrle-cache-size": 32 * MiB}
            assert await src.execute("migrate-set-parameters", params) == {}
            got = await src.execute("query-migrate-parameters")
            assert isinstance(got, dict)
            assert {k: got[k] for k in params} == params

            src_events, dst_events = EventLog(src), EventLog(dst)
            assert await dst.execute("migrate-incoming", {"uri": "tcp:[::]:4444"}) == {}
            assert await src.execute("query-migrate") == {}
            assert await src.execute("migrate", {"uri": "tcp:127.0.0.1:4444"}) == {}
            info = await poll_until(src, ("completed", "failed", "cancelled"))
            assert info["status"] == "completed", info
            assert isinstance(info["downtime"], int) and info["downtime"] >= 0
            assert info["total-time"] >= info["setup-time"] >= 0
            assert "expected-downtime" not in info
            ram = info["ram"]
            assert ram["total"] == 128 * MiB
            assert ram["transferred"] > 0 and ram["remaining"] == 0
            assert ram["page-size"] == 4096 and ram["dirty-sync-count"] >= 2
            assert ram["duplicate"] + ram["normal"] > 0
            xb = info["xbzrle-cache"]
            assert xb["cache-size"] == 32 * MiB
            assert {"bytes", "pages", "cache-miss", "cache-miss-rate", "encoding-rate",
                    "overflow"} <= set(xb)

            assert await src.execute("query-status") == {"running": False,
                                                         "status": "postmigrate"}
            # The destination waits for cont, as QEMU run with -S (libvirt's way)
            assert await dst.execute("query-status") == {"running": False, "status": "paused"}
            assert await dst.execute("cont") == {}
            assert await dst.execute("query-status") == {"running": True, "status": "running"}
            assert (await dst.execute("query-migrate"))["status"] == "completed"  # type: ignore

            await asyncio.sleep(0.2)  # let the last events arrive
            statuses = [e["data"]["status"] for e in src_events.named("MIGRATION")]
            assert statuses[0] == "setup" and statuses[-1] == "completed"
            assert "active" in statuses
            passes = [e["data"]["pass"] for e in src_events.named("MIGRATION_PASS")]
            assert passes == list(range(1, len(passes) + 1))
            assert passes[-1] == ram["dirty-sync-count"]
            stamps = [e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
                      for e in src_events.events]
            assert stamps == sorted(stamps)
            assert abs(stamps[-1] - time.time()) < 60
            dst_statuses = [e["data"]["status"] for e in dst_events.named("MIGRATION")]
            assert [e["event"] for e in dst_events.events if e["event"] != "MIGRATION"] == ["RESUME"]
            if dst_statuses:
                assert dst_statuses[-1] == "completed"
            src_events.stop()
            dst_events.stop()
            await src.disconnect()
            await dst.disconnect()

    run(main)
    assert not (sockdir / "src").exists() and not (sockdir / "dst").exists()


def test_no_events_without_the_events_capability(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), "127.0.0.1:0", speed=200) as server:
            src = await connect(server.addresses["source"])
            log = EventLog(src)
            await src.execute("migrate", {"uri": "unix:/nowhere"})
            info = await poll_until(src, ("completed", "failed"))
            assert info["status"] == "completed"
            assert "xbzrle-cache" not in info
            await asyncio.sleep(0.1)
            # no MIGRATION / MIGRATION_PASS; STOP (the switchover) is sent always, as in QEMU
            assert [e["event"] for e in log.events] == ["STOP"]
            log.stop()
            await src.disconnect()

    run(main)


# -- a capability mismatch ---------------------------------------------------------------------------


@pytest.mark.parametrize("destination", ['{version: "1.1"}', "{supports: [events]}"])
def test_xbzrle_to_a_destination_that_cannot_decode_it_fails(
        tmp_path: Path, sockdir: Path, destination: str) -> None:
    tb = make_testbed(tmp_path, f"negotiation: none\nendpoints:\n  destination: {destination}\n")

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=100) as server:
            src = await connect(server.addresses["source"])
            dst = await connect(server.addresses["destination"])
            dst_caps = {c["capability"]
                        for c in await dst.execute("query-migrate-capabilities")}  # type: ignore
            assert "xbzrle" not in dst_caps
            with pytest.raises(ExecuteError) as err:
                await dst.execute("migrate-set-capabilities",
                                  {"capabilities": [{"capability": "xbzrle", "state": True}]})
            assert str(err.value) == "Parameter 'capability' does not accept value 'xbzrle'"
            await src.execute("migrate-set-capabilities",
                              {"capabilities": [{"capability": "xbzrle", "state": True}]})
            await dst.execute("migrate-incoming", {"uri": "tcp:0:4444"})
            await src.execute("migrate", {"uri": "tcp:127.0.0.1:4444"})
            info = await poll_until(src, ("completed", "failed", "cancelled"))
            assert info["status"] == "failed", info
            assert isinstance(info["error-desc"], str) and info["error-desc"]
            assert await src.execute("query-status") == {"running": True, "status": "running"}
            dinfo = await dst.execute("query-migrate")
            assert isinstance(dinfo, dict) and dinfo["status"] == "failed"
            assert dinfo["error-desc"]
            await src.disconnect()
            await dst.disconnect()

    run(main)


# -- error replies ---------------------------------------------------------------------------------


def test_error_replies(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=5) as server:
            # before the handshake
            raw = await connect(server.addresses["source"], negotiate=False)
            with pytest.raises(ExecuteError) as err:
                await raw.execute("query-status")
            assert err.value.error_class == "CommandNotFound"
            assert str(err.value) == "Expecting capabilities negotiation with 'qmp_capabilities'"
            assert await raw.execute("qmp_capabilities") == {}
            with pytest.raises(ExecuteError) as err:
                await raw.execute("qmp_capabilities")
            assert err.value.error_class == "CommandNotFound"
            await raw.disconnect()

            src = await connect(server.addresses["source"])
            dst = await connect(server.addresses["destination"])
            with pytest.raises(ExecuteError) as err:
                await src.execute("no-such-command")
            assert (err.value.error_class, str(err.value)) == (
                "CommandNotFound", "The command no-such-command has not been found")
            for args, desc in (
                ({"downtime-limit": "fast"}, "Parameter 'downtime-limit' expects uint64"),
                ({"xbzrle-cache-size": 1.5e8}, "Parameter 'xbzrle-cache-size' expects uint64"),
                ({"cpu-throttle-tailslow": "yes"},
                 "Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean"),
                ({"no-such-parameter": 1}, "Parameter 'no-such-parameter' is unexpected"),
                ({"xbzrle-cache-size": 1000},
                 "Option xbzrle_cache_size expects a power of two no less than the target "
                 "page size"),
            ):
                with pytest.raises(ExecuteError) as err:
                    await src.execute("migrate-set-parameters", args)
                assert (err.value.error_class, str(err.value)) == ("GenericError", desc)
            with pytest.raises(ExecuteError) as err:
                await src.execute("migrate-set-capabilities",
                                  {"capabilities": [{"capability": "foo", "state": True}]})
            assert str(err.value) == "Parameter 'capability' does not accept value 'foo'"
            with pytest.raises(ExecuteError) as err:
                await src.execute("migrate", {})
            assert str(err.value) == "need either 'uri' or 'channels' argument"
            with pytest.raises(ExecuteError) as err:
                await dst.execute("migrate", {"uri": "tcp:127.0.0.1:1"})
            assert str(err.value) == "Guest is waiting for an incoming migration"

            # during a migration (slow: 4 MB/s at 5x real time)
            await src.execute("migrate-set-parameters", {"max-bandwidth": 4_000_000})
            await src.execute("migrate", {"uri": "tcp:127.0.0.1:4444"})
            info = await poll_until(src, ("active",), timeout=20)
            assert "expected-downtime" in info and info["ram"]["remaining"] > 0
            with pytest.raises(ExecuteError) as err:
                await src.execute("migrate-set-capabilities",
                                  {"capabilities": [{"capability": "xbzrle", "state": True}]})
            assert str(err.value) == "There's a migration process in progress"
            with pytest.raises(ExecuteError) as err:
                await src.execute("migrate", {"uri": "tcp:127.0.0.1:4444"})
            assert str(err.value) == "There's a migration process in progress"
            assert await src.execute("migrate_cancel") == {}
            info = await poll_until(src, ("cancelled",), timeout=20)
            assert await src.execute("query-status") == {"running": True, "status": "running"}
            await src.disconnect()
            await dst.disconnect()

    run(main)


def test_endpoint_exception_becomes_generic_error(tmp_path: Path, sockdir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tb = make_testbed(tmp_path)

    def broken() -> dict[str, Any]:
        raise KeyError("oops")

    monkeypatch.setattr(tb.source, "query_migrate", broken)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d")) as server:
            src = await connect(server.addresses["source"])
            with pytest.raises(ExecuteError) as err:
                await src.execute("query-migrate")
            assert err.value.error_class == "GenericError"
            assert str(err.value) == "migsim: internal error in query-migrate: KeyError: 'oops'"
            assert (await src.execute("query-status"))["running"] is True  # type: ignore
            await src.disconnect()

    run(main)


# -- connections, clock, addresses -----------------------------------------------------------------


def test_several_clients_and_quit(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d")) as server:
            a = await connect(server.addresses["source"])
            b = await connect(server.addresses["source"])
            assert server.clients == 2
            assert await a.execute("quit") == {}
            await asyncio.sleep(0.1)
            with contextlib.suppress(EOFError):  # the server hung up, as QEMU does on quit
                await a.disconnect()
            assert server.clients == 1
            assert (await b.execute("query-status"))["running"] is True  # type: ignore
            c = await connect(server.addresses["source"])
            assert await c.execute("query-version") == {
                "qemu": {"major": 10, "minor": 2, "micro": 0}, "package": "migsim"}
            await b.disconnect()
            await c.disconnect()

    run(main)


def test_clock_runs_at_speed(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=20) as server:
            server.sync()
            t0, w0 = tb.now, time.monotonic()
            await asyncio.sleep(0.5)
            assert tb.now > t0  # the clock task advanced it
            server.sync()
            elapsed = time.monotonic() - w0
            assert tb.now - t0 == pytest.approx(20 * elapsed, abs=1.0)
            assert server.clock_error is None
            assert server.wall_time(server.sim_t0 + 20) == pytest.approx(server.wall0 + 1)

    run(main)


def test_tcp_listens_on_loopback_only(tmp_path: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with QmpServer(tb, "127.0.0.1:0", "localhost:0", speed=50) as server:
            for role in ("source", "destination"):
                addr = server.addresses[role]
                assert addr.kind == "tcp" and addr.port > 0
                client = await connect(addr)
                assert (await client.execute("query-status"))["running"] is (  # type: ignore
                    role == "source")
                await client.disconnect()

    run(main)


def test_listen_failure_names_the_socket_and_cleans_up(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)
    (sockdir / "file").write_text("x")

    async def main() -> None:
        server = QmpServer(tb, str(sockdir / "s"), str(sockdir / "file"))
        with pytest.raises(AddressError, match=r"^destination unix:.*/file: cannot listen: "):
            await server.start()

    run(main)
    assert not (sockdir / "s").exists()
    assert (sockdir / "file").read_text() == "x"


def test_stale_socket_file_is_replaced(tmp_path: Path, sockdir: Path) -> None:
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sockdir / "s"))
    stale.close()  # leaves the file behind, as a killed server would
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d")) as server:
            client = await connect(server.addresses["source"])
            assert (await client.execute("query-status"))["running"] is True  # type: ignore
            await client.disconnect()

    run(main)
    assert not (sockdir / "s").exists()


def test_a_client_that_does_not_read_is_dropped(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"),
                         max_backlog=64 * 1024) as server:
            reader, writer = await asyncio.open_unix_connection(str(sockdir / "s"))
            await reader.readline()
            writer.write(b'{"execute": "qmp_capabilities"}'
                         + b'{"execute": "query-migrate-parameters"}' * 1500)
            await writer.drain()
            deadline = time.monotonic() + 10
            while server.clients and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert server.clients == 0
            writer.close()
            client = await connect(server.addresses["source"])  # the server still serves
            assert "downtime-limit" in await client.execute(  # type: ignore[operator]
                "query-migrate-parameters")
            await client.disconnect()

    run(main)


@pytest.mark.parametrize(("text", "expected"), [
    ("/tmp/a.sock", Address("unix", path="/tmp/a.sock")),
    ("unix:/tmp/a:b", Address("unix", path="/tmp/a:b")),
    ("relative.sock", Address("unix", path="relative.sock")),
    ("127.0.0.1:4444", Address("tcp", host="127.0.0.1", port=4444)),
    ("tcp:localhost:0", Address("tcp", host="localhost", port=0)),
    ("[::1]:4444", Address("tcp", host="::1", port=4444)),
])
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("10.0.0.1:4444", "only loopback hosts"),
    ("0.0.0.0:4444", "only loopback hosts"),
    ("example.com:80", "only loopback hosts"),
    ("127.0.0.1:99999", "out of range"),
    ("tcp:nohost", "expected tcp:HOST:PORT"),
    ("", "empty address"),
    ("/tmp/" + "x" * 120, "too long"),
])
def test_parse_address_refuses(text: str, problem: str) -> None:
    with pytest.raises(AddressError, match=problem):
        parse_address(text)


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_qmp_serves_until_sigint(tmp_path: Path, sockdir: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(textwrap.dedent(BASE))
    out = tmp_path / "out"
    src, dst = sockdir / "src", sockdir / "dst"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "qmp", str(scenario), "--source", str(src),
         "--destination", str(dst), "--speed", "100", "--autostart", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("migsim qmp: qmp-test: source on unix:"), line
        assert str(src) in line and str(dst) in line

        async def main() -> None:
            client = await connect(Address("unix", path=str(src)))
            await client.execute("migrate", {"uri": "tcp:127.0.0.1:4444"})
            info = await poll_until(client, ("completed", "failed"))
            assert info["status"] == "completed"
            await client.disconnect()
            client = await connect(Address("unix", path=str(dst)))
            # --autostart: the destination runs as soon as the migration completed (no -S)
            assert await client.execute("query-status") == {"running": True,
                                                            "status": "running"}
            await client.disconnect()

        run(main)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "wrote" in stdout and (out / "runs.parquet").is_file()
    assert not src.exists() and not dst.exists()
    runs = sim.Result.load(out, with_scenario=False).runs
    assert runs["status"].tolist() == ["completed"]


def test_cli_qmp_refuses_bad_addresses(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(textwrap.dedent(BASE))
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "qmp", str(scenario), "--source", "10.1.2.3:4444",
         "--destination", "/tmp/x.sock"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "--source: 10.1.2.3:4444: only loopback hosts are allowed (localhost, 127.0.0.1, ::1)"]
