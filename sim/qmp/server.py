"""The QMP server: two listening sockets over one simulated testbed, in scaled real time.

``serve(testbed, source_addr, destination_addr, speed)`` gives a :class:`QmpServer`, an async
context manager; :func:`run_server` is the blocking form the CLI uses (it stops on SIGINT or
SIGTERM). Each address is a unix socket path (``unix:PATH`` also works) or ``HOST:PORT`` /
``tcp:HOST:PORT`` on a loopback host only (``localhost``, ``127.x.y.z``, ``::1``; port 0 picks a
free port). Any number of clients may connect to each socket; each gets its own
:class:`sim.qmp.protocol.QmpSession` over that socket's endpoint.

Time: a clock task advances the simulation every ``tick`` (10 ms) of wall time towards
``sim_t0 + speed * (wall - wall0)``, and the server also catches the simulation up just before it
handles a client's input, so replies describe "now". The simulation runs in the event loop's
thread (commands and simulation never race), in bounded steps: each catch-up works at most
``budget`` (10 ms) of wall time plus one step (a chunk of at most 50 ms of sim time, or one step
of a guest's writes while no migration runs: :meth:`sim.run.Testbed.advance`), so a command is
answered within about 100 ms whatever the wait before it, and an idle guest's writes are applied
as time passes, in bounded memory. If the simulation is slower than ``speed`` the clock falls
behind and catches up; a command then acts at the time the simulation has reached. An exception
from the simulation is logged, stops the clock (:attr:`QmpServer.clock_error`) and leaves the
server answering.

Events: the server subscribes to both endpoints; an endpoint emits MIGRATION / MIGRATION_PASS
only while its ``events`` capability is on. Each is sent to every negotiated client of that
endpoint's socket, stamped with the wall time matching its simulated time,
``wall0 + (t_sim - sim_t0) / speed``.

A client that stops reading is disconnected once ``max_backlog`` bytes of output wait for it.
Unix socket files are removed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .json_stream import Limits
from .protocol import QmpSession

__all__ = ["Address", "AddressError", "QmpServer", "parse_address", "run_server", "serve"]

log = logging.getLogger("sim.qmp")

ROLES = ("source", "destination")
READ_SIZE = 65536
#: sun_path is 108 bytes on Linux, NUL included
MAX_UNIX_PATH = 107


class AddressError(ValueError):
    """A listening address that is malformed or not allowed (one line, for the CLI)."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where one endpoint listens: ``kind`` "unix" (``path``) or "tcp" (``host``, ``port``)."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


_HOST_PORT = re.compile(r"^(\[[^\]/]+\]|[^:/\[\]]+):(\d+)$")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> Address:
    """``/path``, ``unix:/path``, ``HOST:PORT`` or ``tcp:HOST:PORT`` (loopback hosts only)."""
    text = text.strip()
    if not text:
        raise AddressError("empty address: expected a unix socket path or HOST:PORT")
    if text.startswith("unix:"):
        return _unix(text[5:])
    tcp = text[4:] if text.startswith("tcp:") else text
    m = _HOST_PORT.match(tcp)
    if m is None:
        if text.startswith("tcp:"):
            raise AddressError(f"{text}: expected tcp:HOST:PORT")
        return _unix(text)
    host, port = m.group(1).strip("[]"), int(m.group(2))
    if port > 65535:
        raise AddressError(f"{text}: port {port} is out of range (0..65535)")
    if not _loopback(host):
        raise AddressError(f"{text}: only loopback hosts are allowed (localhost, 127.0.0.1, ::1)")
    return Address("tcp", host=host, port=port)


def _unix(path: str) -> Address:
    if not path:
        raise AddressError("unix: expected a socket path")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise AddressError(f"{path}: too long for a unix socket path "
                           f"(at most {MAX_UNIX_PATH} bytes)")
    return Address("unix", path=path)


class _Client:
    """One connection: its session and its writer."""

    def __init__(self, role: str, session: QmpSession, writer: asyncio.StreamWriter,
                 max_backlog: int) -> None:
        self.role = role
        self.session = session
        self.writer = writer
        self.max_backlog = max_backlog

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > self.max_backlog:
            log.warning("QMP %s client does not read its replies; disconnecting it", self.role)
            self.writer.transport.abort()


class QmpServer:
    """Serve ``testbed.source`` and ``testbed.destination`` over QMP (see the module docstring)."""

    def __init__(self, testbed: Any, source: str | Address, destination: str | Address, *,
                 speed: float = 100.0, tick: float = 0.01, budget: float = 0.01,
                 limits: Limits | None = None, max_backlog: int = 16 << 20) -> None:
        if not (isinstance(speed, int | float) and speed > 0 and speed < float("inf")):
            raise ValueError(f"speed must be a positive number (got {speed!r})")
        self.testbed = testbed
        self.speed = float(speed)
        self.tick = tick
        self.budget = budget
        self.limits = limits
        self.max_backlog = max_backlog
        self.requested = {
            "source": source if isinstance(source, Address) else parse_address(source),
            "destination": (destination if isinstance(destination, Address)
                            else parse_address(destination)),
        }
        self.addresses: dict[str, Address] = {}
        self.endpoints = {"source": testbed.source, "destination": testbed.destination}
        self.clock_error: BaseException | None = None
        self.sim_t0 = 0.0
        self.wall0 = 0.0
        self._mono0 = 0.0
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_files: list[tuple[str, int]] = []
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clock: asyncio.Task[None] | None = None
        self._running = False
        self._stopped = asyncio.Event()

    # -- time ----------------------------------------------------------------------------------

    def wall_time(self, t_sim: float) -> float:
        """The wall-clock time (epoch seconds) that simulated time ``t_sim`` corresponds to."""
        return self.wall0 + (t_sim - self.sim_t0) / self.speed

    def sim_target(self) -> float:
        return self.sim_t0 + self.speed * (time.monotonic() - self._mono0)

    def sync(self) -> None:
        """Advance the simulation towards the present, for at most :attr:`budget` of wall time
        plus one step (unless it has failed)."""
        if not self._running or self.clock_error is not None:
            return
        try:
            self.testbed.advance(self.sim_target(), self.budget)
        except Exception as err:
            self.clock_error = err
            log.exception("the simulation failed; the clock is stopped, the server stays up")

    async def _run_clock(self) -> None:
        while self._running:
            # Behind real time: only let the clients' commands in between the bounded steps.
            behind = self.clock_error is None and self.testbed.now < self.sim_target() - 1e-9
            await asyncio.sleep(0 if behind else self.tick)
            self.sync()

    # -- events --------------------------------------------------------------------------------

    def _on_event(self, role: str, name: str, data: dict[str, Any], t_sim: float) -> None:
        if not self._running:
            return
        stamp = self.wall_time(t_sim)
        for client in list(self._clients):
            if client.role == role:
                try:
                    message = client.session.event(name, data, stamp)
                except Exception:
                    log.exception("QMP event %s cannot be encoded", name)
                    return
                if message is not None:
                    client.send(message)

    def _subscriber(self, role: str) -> Callable[[str, dict[str, Any], float], None]:
        def callback(name: str, data: dict[str, Any], t_sim: float) -> None:
            self._on_event(role, name, data, t_sim)
        return callback

    # -- start / stop --------------------------------------------------------------------------

    async def start(self) -> QmpServer:
        if self._running:
            return self
        self.sim_t0 = float(self.testbed.now)
        self.wall0 = time.time()
        self._mono0 = time.monotonic()
        self._running = True
        try:
            for role in ROLES:
                try:
                    await self._listen(role, self.requested[role])
                except OSError as err:
                    reason = err.strerror or str(err)
                    raise AddressError(f"{role} {self.requested[role]}: cannot listen: "
                                       f"{reason[:1].lower()}{reason[1:]}") from err
        except BaseException:
            await self.stop()
            raise
        for role in ROLES:
            self.endpoints[role].subscribe(self._subscriber(role))
        self._clock = asyncio.create_task(self._run_clock(), name="migsim-qmp-clock")
        return self

    async def _listen(self, role: str, addr: Address) -> None:
        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
            return self._serve_client(role, reader, writer)

        if addr.kind == "unix":
            path = addr.path
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)  # a stale socket, as QEMU does
            server = await asyncio.start_unix_server(handler, path=path)
            self._unix_files.append((path, os.stat(path).st_ino))
            self.addresses[role] = addr
        else:
            server = await asyncio.start_server(handler, host=addr.host, port=addr.port)
            port = server.sockets[0].getsockname()[1] if server.sockets else addr.port
            self.addresses[role] = Address("tcp", host=addr.host, port=int(port))
        self._servers.append(server)

    async def stop(self) -> None:
        """Close the sockets and every connection; remove the unix socket files."""
        if not self._running and not self._servers:
            return
        self._running = False
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._clock
            self._clock = None
        for server in self._servers:
            server.close()
        for client in list(self._clients):
            client.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._servers = []
        for path, inode in self._unix_files:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
        self._unix_files = []
        self._stopped.set()

    async def __aenter__(self) -> QmpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- one client ----------------------------------------------------------------------------

    async def _serve_client(self, role: str, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session = QmpSession(self.endpoints[role], limits=self.limits)
        client = _Client(role, session, writer, self.max_backlog)
        self._clients.add(client)
        try:
            self.sync()
            client.send(session.greeting())
            await writer.drain()
            while not session.closed and self._running:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self.sync()
                for reply in session.feed(data):
                    client.send(reply)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("QMP %s connection failed", role)
        finally:
            self._clients.discard(client)
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def serve(testbed: Any, source_addr: str | Address, destination_addr: str | Address,
          speed: float = 100.0, **options: Any) -> QmpServer:
    """``async with serve(tb, "/tmp/src.sock", "127.0.0.1:4445", speed=100) as server: ...``"""
    return QmpServer(testbed, source_addr, destination_addr, speed=speed, **options)


def run_server(testbed: Any, source_addr: str | Address, destination_addr: str | Address,
               speed: float = 100.0, *, on_ready: Callable[[QmpServer], None] | None = None,
               **options: Any) -> QmpServer:
    """Serve until SIGINT or SIGTERM (or KeyboardInterrupt); returns the stopped server."""
    server = QmpServer(testbed, source_addr, destination_addr, speed=speed, **options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            async with server:
                if on_ready is not None:
                    on_ready(server)
                await stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return server
