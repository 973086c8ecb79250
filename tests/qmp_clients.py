"""What the QMP server tests share: running a coroutine with a timeout, and a connected client
(``qemu.qmp``, QEMU's own Python client)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import QMPClient

from sim.qmp.server import Address


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 120.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro_fn(), timeout)
    asyncio.run(main())


async def connect(address: Address, negotiate: bool = True) -> QMPClient:
    client = QMPClient(f"test-{address}")
    client.negotiate = negotiate
    target: Any = address.path if address.kind == "unix" else (address.host, address.port)
    await client.connect(target)
    return client
