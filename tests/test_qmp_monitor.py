"""The QMP monitor as a management stack uses it, over the real socket: a long wait before
``migrate`` never stalls the replies (bounded steps, bounded memory), and the libvirt-style
commands around a migration (run states, stop/cont, pause-before-switchover, repeated
migrations, the schema, calc-dirty-rate, human-monitor-command)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

qmp = pytest.importorskip("qemu.qmp")
from qemu.qmp import QMPClient  # noqa: E402

import sim  # noqa: E402
from sim.engine import writes as writes_module  # noqa: E402
from sim.qmp.server import Address, serve  # noqa: E402
from sim.run import Testbed  # noqa: E402

BASE = """
name: qmp-monitor
seed: 11
vm: {memory: 64MiB}
workload: {kind: uniform, writes_per_s: 2000}
link: {bandwidth: 1Gbit/s}
"""


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_testbed(tmp_path: Path, extra: str = "") -> Testbed:
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return Testbed(sim.load_scenario(path))


@pytest.fixture(scope="module", autouse=True)
def warm_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the numba kernels once, outside the timed parts."""
    tb = make_testbed(tmp_path_factory.mktemp("warm"))
    tb.advance(0.2)
    tb.source.migrate(uri="tcp:x:1")
    tb.advance(30.0)


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 120.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro_fn(), timeout)
    asyncio.run(main())


async def connect(address: Address) -> QMPClient:
    client = QMPClient(f"test-{address}")
    await client.connect(address.path if address.kind == "unix" else (address.host, address.port))
    return client


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


def track_buffer(tb: Testbed) -> Callable[[], int]:
    """The most writes the source's buffer has held at once, from now on."""
    buffer = tb.pairs[0].migration.writes
    longest = 0
    generate = buffer.generate_until

    def tracked(t_end: float) -> None:
        nonlocal longest
        generate(t_end)
        longest = max(longest, len(buffer.batch))

    buffer.generate_until = tracked  # type: ignore[method-assign]
    return lambda: longest


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
