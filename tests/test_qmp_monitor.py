"""The QMP monitor as a management stack uses it, over the real socket: a long wait before
``migrate`` never stalls the replies (bounded steps, bounded memory), and the libvirt-style
commands around a migration (run states, stop/cont, pause-before-switchover, repeated
migrations, the schema, calc-dirty-rate, human-monitor-command)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from builders import track_buffer, yaml_testbed

qmp = pytest.importorskip("qemu.qmp")
from qemu.qmp import ExecuteError, QMPClient  # noqa: E402
from qmp_clients import connect, run  # noqa: E402

from sim.engine import writes as writes_module  # noqa: E402
from sim.qmp.server import serve  # noqa: E402
from sim.run import Testbed  # noqa: E402

BASE = """
name: qmp-monitor
seed: 11
vm: {memory: 64MiB}
workload: {kind: uniform, writes_per_s: 2000}
link: {bandwidth: 1Gbit/s}
"""


def make_testbed(tmp_path: Path, extra: str = "") -> Testbed:
    return yaml_testbed(tmp_path, BASE, extra)


@pytest.fixture(scope="module", autouse=True)
def warm_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the numba kernels once, outside the timed parts."""
    tb = make_testbed(tmp_path_factory.mktemp("warm"))
    tb.advance(0.2)
    tb.source.migrate(uri="tcp:x:1")
    tb.advance(30.0)


class Timed:
    """A client whose every reply time is recorded."""

    def __init__(self, client: QMPClient) -> None:
        self.client = client
        self.slowest = 0.0

    async def __call__(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        t0 = time.monotonic()
        try:
            return await self.client.execute(cmd, args)
        finally:
            self.slowest = max(self.slowest, time.monotonic() - t0)

    async def poll(self, states: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = await self("query-migrate")
            if info.get("status") in states:
                return dict(info)
            assert time.monotonic() < deadline, f"still {info.get('status')} after {timeout} s"
            await asyncio.sleep(0.01)


# -- item 1: a monitor that never stalls --------------------------------------------------------


def test_a_long_wait_before_migrate_never_stalls_a_reply(tmp_path: Path, sockdir: Path) -> None:
    """The equivalent of a minute at speed 100 (6000 s of sim time, 12 M writes at 2000/s) is
    waited before ``migrate``, then query-migrate is polled to the end: every reply comes within
    a second (the server's own bound is about 100 ms), the write buffer never holds more than
    a step, and the sim clock did cover the wait (the migration started after it)."""
    tb = make_testbed(tmp_path)
    longest = track_buffer(tb)
    wait_sim = 6000.0
    speed = 2000.0

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=speed) as server:
            src = Timed(await connect(server.addresses["source"]))
            await src("query-status")
            t_end = time.monotonic() + wait_sim / speed
            while time.monotonic() < t_end:  # a client idling, with an odd query meanwhile
                await asyncio.sleep(0.05)
                await src("query-migrate")
            assert await src("migrate", {"uri": "tcp:127.0.0.1:4444"}) == {}
            info = await src.poll(("completed", "failed"))
            assert info["status"] == "completed"
            assert src.slowest < 1.0, f"a reply took {src.slowest:.2f} s"
            print(f"slowest reply {src.slowest * 1000:.0f} ms")
            await src.client.disconnect()

    run(main)
    state = tb.pairs[0].migration.state
    assert state.t_migrate >= wait_sim * 0.5  # the clock kept up, or nearly
    assert 0 < longest() <= writes_module.STEP_WRITES
    assert int(tb.pairs[0].migration.guest.version.sum()) >= 2000 * state.t_migrate - 1


# -- item 2: the rest of the monitor --------------------------------------------------------------


class Events:
    def __init__(self, client: QMPClient) -> None:
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._collect(client))

    async def _collect(self, client: QMPClient) -> None:
        async for event in client.events:
            self.events.append(dict(event))

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


async def error_of(client: QMPClient, cmd: str, args: dict[str, Any] | None = None,
                   ) -> tuple[str, str]:
    with pytest.raises(ExecuteError) as info:
        await client.execute(cmd, args)
    return info.value.error_class, str(info.value)


def test_stop_cont_and_run_states(tmp_path: Path, sockdir: Path) -> None:
    """stop pauses the source's writes (no write counted while stopped); a migration with the
    guest stopped goes on and switches over; the destination then waits for cont (-S)."""
    tb = make_testbed(tmp_path, "migration: {max_bandwidth: 20MiB/s}\n")
    guest = tb.pairs[0].migration.guest

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=50) as server:
            src = await connect(server.addresses["source"])
            dst = await connect(server.addresses["destination"])
            events = Events(src)
            assert await src.execute("query-status") == {"running": True, "status": "running"}
            assert await dst.execute("query-status") == {"running": False,
                                                         "status": "inmigrate"}
            await asyncio.sleep(0.05)
            assert await src.execute("stop") == {}
            assert await src.execute("query-status") == {"running": False, "status": "paused"}
            tb.pairs[0].migration.writes.apply_until(tb.now)
            written = int(guest.version.sum())
            t_stop = tb.now
            await asyncio.sleep(0.2)  # 10 s of sim time, stopped
            tb.pairs[0].migration.writes.apply_until(tb.now)
            assert tb.now > t_stop + 5 and int(guest.version.sum()) == written
            assert await src.execute("cont") == {}
            assert await src.execute("query-status") == {"running": True, "status": "running"}
            await asyncio.sleep(0.05)
            tb.pairs[0].migration.writes.apply_until(tb.now)
            assert int(guest.version.sum()) > written

            # stop during the migration: it goes on, and switches over when it can
            assert await src.execute("migrate", {"uri": "tcp:127.0.0.1:1"}) == {}
            await asyncio.sleep(0.02)
            assert await src.execute("stop") == {}
            info = await Timed(src).poll(("completed", "failed"))
            assert info["status"] == "completed"
            assert await src.execute("query-status") == {"running": False,
                                                         "status": "postmigrate"}
            assert await dst.execute("query-status") == {"running": False, "status": "paused"}
            assert await error_of(src, "cont") == (
                "GenericError", "migsim: the guest runs on the destination; restarting the "
                "source after a completed migration is not modelled")
            assert await dst.execute("cont") == {}
            assert await dst.execute("query-status") == {"running": True, "status": "running"}
            await asyncio.sleep(0.05)
            assert events.names()[:3] == ["STOP", "RESUME", "STOP"]
            events.task.cancel()
            await src.disconnect()
            await dst.disconnect()

    run(main)


def test_cont_on_an_incoming_destination_sets_autostart(tmp_path: Path) -> None:
    tb = make_testbed(tmp_path)
    tb.destination.cont()  # inmigrate: autostart
    assert tb.destination.query_status() == {"running": False, "status": "inmigrate"}
    tb.source.migrate(uri="tcp:x:1")
    tb.advance(30.0)
    assert tb.source.query_migrate()["status"] == "completed"
    assert tb.destination.query_status() == {"running": True, "status": "running"}


def test_pause_before_switchover_waits_for_migrate_continue(tmp_path: Path,
                                                            sockdir: Path) -> None:
    """pre-switchover comes before device, with the guest stopped (finish-migrate); the
    migration waits there for migrate-continue, and the wait counts in the downtime."""
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=50) as server:
            src = await connect(server.addresses["source"])
            events = Events(src)
            caps = [{"capability": c, "state": True}
                    for c in ("pause-before-switchover", "events")]
            assert await src.execute("migrate-set-capabilities", {"capabilities": caps}) == {}
            assert await src.execute("migrate", {"uri": "tcp:127.0.0.1:1"}) == {}
            await Timed(src).poll(("pre-switchover",))
            t_seen = tb.now
            assert await src.execute("query-status") == {"running": False,
                                                         "status": "finish-migrate"}
            await asyncio.sleep(0.1)  # 5 s of sim time: still waiting
            assert (await src.execute("query-migrate"))["status"] == "pre-switchover"
            assert await error_of(src, "migrate-continue", {"state": "active"}) == (
                "GenericError", "Migration not in expected state: pre-switchover")
            t_continue = tb.now
            assert t_continue > t_seen + 2
            assert await src.execute("migrate-continue", {"state": "pre-switchover"}) == {}
            info = await Timed(src).poll(("completed", "failed"))
            assert info["status"] == "completed"
            assert info["downtime"] >= (t_continue - t_seen) * 1000
            await asyncio.sleep(0.05)
            statuses = [e["data"]["status"] for e in events.events if e["event"] == "MIGRATION"]
            assert statuses.index("pre-switchover") < statuses.index("device")
            names = events.names()
            assert names.count("STOP") == 1  # the switchover stopped the guest, before the wait
            assert names.index("STOP") < names.index("MIGRATION", names.index("STOP"))
            assert statuses[statuses.index("pre-switchover") - 1] == "active"
            events.task.cancel()
            await src.disconnect()

    run(main)


def test_cancel_in_pre_switchover_restarts_the_guest(tmp_path: Path) -> None:
    tb = make_testbed(tmp_path)
    tb.source.migrate_set_capabilities([{"capability": "pause-before-switchover",
                                         "state": True}])
    seen: list[str] = []
    tb.source.subscribe(lambda name, data, t: seen.append(name))
    tb.source.migrate(uri="tcp:x:1")
    tb.advance(30.0)
    assert tb.source.status == "pre-switchover"
    tb.source.migrate_cancel()
    tb.advance(31.0)
    assert tb.source.status == "cancelled"
    assert tb.source.query_status() == {"running": True, "status": "running"}
    assert seen == ["STOP", "RESUME"]  # the switchover stopped it, the cancel restarted it


def test_a_scenario_with_pause_before_switchover_is_continued_by_its_operator() -> None:
    from sim.run import run_one
    from sim.spec import MigrationSpec, Scenario, VmSpec, WorkloadSpec
    from sim.units import MiB

    scenario = Scenario(name="pbs", seed=3, vm=VmSpec(memory=32 * MiB),
                        workload=WorkloadSpec(kind="uniform", writes_per_s=1000),
                        migration=MigrationSpec(capabilities=("pause-before-switchover",)))
    result = run_one(scenario)
    assert result.runs["status"].iloc[0] == "completed"
    events = result.events
    from sim.recorder import event_field

    statuses = list(event_field(events[(events.event == "MIGRATION")
                                       & (events.endpoint == "source")], "status"))
    assert statuses.index("pre-switchover") + 1 == statuses.index("device")


def test_cancel_then_a_second_migrate_on_the_same_server(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)
    ram = 64 << 20

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=50) as server:
            src = Timed(await connect(server.addresses["source"]))
            assert await src("migrate-set-parameters", {"max-bandwidth": 4 << 20}) == {}
            assert await src("migrate", {"uri": "tcp:127.0.0.1:1"}) == {}
            await src.poll(("active",))
            assert await src("migrate_cancel") == {}
            info = await src.poll(("cancelled",))
            assert info["ram"]["transferred"] < ram
            assert await src("query-status") == {"running": True, "status": "running"}
            assert await src("migrate-set-parameters", {"max-bandwidth": 1 << 30}) == {}
            assert await src("migrate", {"uri": "tcp:127.0.0.1:1"}) == {}
            info = await src.poll(("completed", "failed"))
            assert info["status"] == "completed"
            # fresh statistics: one RAM's worth and then some, not the two migrations' sum
            assert ram <= info["ram"]["transferred"] < 1.5 * ram
            assert info["ram"]["dirty-sync-count"] <= 10
            assert await error_of(src.client, "migrate", {"uri": "tcp:127.0.0.1:1"}) == (
                "GenericError", "migsim: the guest has moved to the destination; start a new "
                "testbed for another migration")
            await src.client.disconnect()

    run(main)


def _value(schema: dict[str, dict[str, Any]], name: str) -> Any:
    """A value of schema type ``name`` with only its mandatory members."""
    entry = schema[name]
    meta = entry["meta-type"]
    if meta == "builtin":
        return {"int": 0, "string": "x", "boolean": False, "number": 0.0, "null": None,
                "value": None}[entry["json-type"]]
    if meta == "enum":
        return entry["values"][0]
    if meta == "array":
        return []
    if meta == "alternate":
        return _value(schema, entry["members"][0]["type"])
    return {m["name"]: _value(schema, m["type"]) for m in entry["members"]
            if "default" not in m}


ARGUMENT_ERRORS = ("is missing", "is unexpected", "Invalid parameter type", "expects",
                   "does not accept value")


def test_query_qmp_schema_agrees_with_what_the_server_accepts(tmp_path: Path,
                                                              sockdir: Path) -> None:
    tb = make_testbed(tmp_path)

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=50) as server:
            src = await connect(server.addresses["source"])
            entries = await src.execute("query-qmp-schema")
            assert isinstance(entries, list)
            schema = {e["name"]: e for e in entries}
            commands = [e for e in entries if e["meta-type"] == "command"]
            listed = [c["name"] for c in await src.execute("query-commands")]  # type: ignore
            assert sorted(c["name"] for c in commands) == sorted(listed)
            events = {e["name"] for e in entries if e["meta-type"] == "event"}
            assert events == {e["name"] for e in await src.execute("query-events")}  # type: ignore
            for entry in schema.values():  # every type named is described
                for m in entry.get("members", []):
                    assert m["type"] in schema if "type" in m else True
            for command in sorted(commands, key=lambda c: c["name"] == "quit"):
                name = command["name"]
                args = _value(schema, command["arg-type"])
                try:
                    await src.execute(name, args)
                except ExecuteError as err:
                    if name == "qmp_capabilities":  # accepted once, at the start (QEMU's class)
                        assert str(err) == "Capabilities negotiation is already complete, " \
                            "command ignored"
                        continue
                    assert err.error_class != "CommandNotFound", name
                    assert not any(t in str(err) for t in ARGUMENT_ERRORS), (name, str(err))
                if name == "quit":
                    break
                assert await error_of(src, name, {**args, "x-bogus": 1}) == (
                    "GenericError", "Parameter 'x-bogus' is unexpected")
            with contextlib.suppress(EOFError):  # quit closed the session
                await src.disconnect()
            src = await connect(server.addresses["source"])
            for name in ("device_add", "query-cpus-fast", "migrate-pause", "x-nope"):
                assert (await error_of(src, name))[0] == "CommandNotFound"
            await src.disconnect()

    run(main)


def test_human_monitor_command_and_the_queries(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path, "migration: {max_bandwidth: 20MiB/s}\n")

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=50) as server:
            src = await connect(server.addresses["source"])
            hmp = {"command-line": "info status"}
            assert await src.execute("human-monitor-command", hmp) == "VM status: running\r\n"
            assert await src.execute("query-name") == {"name": "qmp-monitor"}
            assert await src.execute("query-migrationthreads") == []
            assert await src.execute("migrate", {"uri": "tcp:127.0.0.1:1"}) == {}
            await Timed(src).poll(("active",))
            threads = await src.execute("query-migrationthreads")
            assert [t["name"] for t in threads] == ["mig/src/main"]  # type: ignore
            text = await src.execute("human-monitor-command", {"command-line": "info migrate"})
            assert isinstance(text, str) and "Migration status: active\r\n" in text
            assert "total ram: 65536 kbytes\r\n" in text
            await Timed(src).poll(("completed",))
            info = await src.execute("query-migrate")
            text = await src.execute("human-monitor-command", {"command-line": "info migrate"})
            assert f"downtime: {info['downtime']} ms\r\n" in text  # type: ignore
            assert await src.execute("human-monitor-command", hmp) == \
                "VM status: paused (postmigrate)\r\n"
            assert await src.execute("human-monitor-command",
                                     {"command-line": "savevm x"}) == "unknown command: 'savevm'\r\n"
            await src.disconnect()

    run(main)


def test_the_qmp_page_documents_every_command() -> None:
    from sim.qmp.protocol import COMMANDS

    page = (Path(__file__).resolve().parents[1] / "docs" / "qmp.md").read_text()
    missing = [name for name in COMMANDS if f"`{name}`" not in page]
    assert not missing, f"docs/qmp.md does not mention {missing}"


def test_random_command_sequences_on_real_endpoints_never_fail_internally(
        tmp_path: Path) -> None:
    """Management commands in random orders (stop, cont, migrate, cancels, migrate-continue,
    calc-dirty-rate, pause-before-switchover on and off, ...) on both sides of live testbeds:
    every reply is a return or one of QEMU's error classes, never a migsim internal error, and
    the sequences reach cancels, repeated migrations and pre-switchover."""
    import json
    import random

    from sim.qmp.introspect import schema
    from sim.qmp.protocol import COMMANDS, QmpSession
    from sim.qmp.qapi import ARGUMENTS, EVENTS

    types = {e["name"]: e for e in schema(ARGUMENTS, EVENTS, lambda name: None)}
    rng = random.Random(4)
    names = [n for n in COMMANDS if n not in ("quit", "qmp_capabilities")]

    def value(name: str) -> Any:
        entry = types[name]
        meta = entry["meta-type"]
        if meta == "builtin":
            return {"int": rng.choice([0, 1, 2, 100, 512]), "string": rng.choice(
                ["tcp:127.0.0.1:1", "info migrate", "info status", "x"]),
                "boolean": rng.random() < 0.5, "number": 1.0, "null": None,
                "value": None}[entry["json-type"]]
        if meta == "enum":
            return rng.choice(entry["values"]) if entry["values"] else "x"
        if meta == "array":
            return []
        if meta == "alternate":
            return value(entry["members"][0]["type"])
        return {m["name"]: value(m["type"]) for m in entry["members"] if "default" not in m}

    def arguments(name: str) -> Any:
        if name == "migrate":
            return {"uri": "tcp:127.0.0.1:1"}
        if name == "migrate-set-capabilities" and rng.random() < 0.7:
            return {"capabilities": [{"capability": "pause-before-switchover",
                                      "state": rng.random() < 0.7}]}
        if name == "migrate-continue":
            return {"state": "pre-switchover"}
        if name == "calc-dirty-rate":
            return {"calc-time": 1}
        return value(types[name]["arg-type"])

    seen: set[str] = set()
    accepted: set[str] = set()
    for run_number in range(6):
        tb = make_testbed(tmp_path, "migration: {max_bandwidth: 30MiB/s}\n")
        if run_number % 2:
            tb.source.migrate_set_capabilities([{"capability": "pause-before-switchover",
                                                 "state": True}])
        sessions = [QmpSession(tb.source), QmpSession(tb.destination)]
        for s in sessions:
            s.feed(b'{"execute": "qmp_capabilities"}')
        for step in range(150):
            s = rng.choice(sessions)
            name = rng.choice(names + ["migrate", "migrate_cancel", "migrate-continue"] * 2)
            args = arguments(name)
            for raw in s.feed(json.dumps({"execute": name, "arguments": args}).encode()):
                reply = json.loads(raw)
                assert "return" in reply or reply["error"]["class"] in (
                    "GenericError", "CommandNotFound"), reply
                assert "internal error" not in json.dumps(reply), (run_number, step, name, reply)
                if "return" in reply:
                    accepted.add(name)
            tb.advance(tb.now + rng.choice([0.0, 0.01, 0.3, 1.0]))
            seen.add(tb.source.status)
        if tb.source.status not in ("completed", "none"):  # still going: it can end
            tb.source.migrate_cancel()
            tb.destination.cont()
            tb.source.migrate_continue("pre-switchover") \
                if tb.source.status == "pre-switchover" else None
            tb.advance(tb.now + 30)
            assert tb.source.status in ("cancelled", "completed", "failed")
    assert {"cancelled", "pre-switchover", "completed", "active"} <= seen
    assert {"migrate-continue", "stop", "cont", "migrate", "migrate_cancel"} <= accepted
