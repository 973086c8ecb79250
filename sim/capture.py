"""``migsim capture``: record a real QEMU migration as it arrives on a loopback socket.

Stands in for the destination (a sink: it accepts one connection and reads to its end; QEMU's
pre-copy without a return path completes once it has written everything), or with ``forward``
relays every byte to a real destination (``migrate-incoming`` on it) and the destination's
return-path bytes back, parsing a copy. The stream is parsed by :mod:`sim.stream` as it arrives.

Written to the output folder:

* ``records.parquet``: one row per page record: ``t_s`` (arrival of its last byte, from the
  first byte), ``pass`` (QEMU's scan round, :mod:`sim.stream`), ``block``, ``page`` (offset / 4096
  in the block), ``kind`` (zero, page, xbzrle, compressed), ``wire_bytes``, ``digest``
  (blake2b-64 of the page after the record) and ``version`` (row in ``pages.zst``, -1 if none);
* ``pages.zst`` (``--content``): the page after every raw, XBZRLE or compressed record,
  4096 bytes each, one zstd frame;
* the four migsim tables of the real migration (``runs``, ``passes``, ``samples``, ``events``);
  with ``qmp`` (the source's QMP socket) ``query-migrate`` is polled every 100 ms and its counters
  are joined, as the validation harness does (:mod:`sim.validation.qemu_tables`).

A damaged or truncated stream ends the capture with :class:`sim.stream.StreamError`; everything
parsed before the damage is written first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.capture_tables import stream_tables
from sim.qmp.server import Address
from sim.stream import Record, StreamError, StreamParser, Summary

CHUNK_BYTES = 1 << 20
POLL_S = 0.1
QMP_CONNECT_S = 5.0
RECORD_COLUMNS = ("t_s", "pass", "block", "page", "kind", "wire_bytes", "digest", "version")
CONTENT_KINDS = ("page", "xbzrle", "compressed")


class Records:
    """Record rows as columns; with a content file, the page of every non-zero record goes there."""

    def __init__(self, content: Any | None = None) -> None:
        self.columns: dict[str, list[Any]] = {c: [] for c in RECORD_COLUMNS}
        self.content = content  # a zstd stream writer, or None
        self.versions = 0

    def add(self, rec: Record) -> None:
        version = -1
        if self.content is not None and rec.kind in CONTENT_KINDS and rec.content is not None:
            self.content.write(rec.content)
            version, self.versions = self.versions, self.versions + 1
        for name, value in zip(RECORD_COLUMNS, (rec.t_s, rec.pass_, rec.block, rec.page,
                                                rec.kind, rec.wire_bytes, rec.digest, version),
                               strict=True):
            self.columns[name].append(value)

    def frame(self, t0: float) -> pd.DataFrame:
        c = self.columns
        return pd.DataFrame({
            "t_s": np.asarray(c["t_s"], dtype=np.float64) - t0,
            "pass": np.asarray(c["pass"], dtype=np.int64),
            "block": pd.Series(c["block"], dtype="category"),
            "page": np.asarray(c["page"], dtype=np.int64),
            "kind": pd.Series(c["kind"], dtype="category"),
            "wire_bytes": np.asarray(c["wire_bytes"], dtype=np.int64),
            "digest": np.asarray(c["digest"], dtype=np.uint64),
            "version": np.asarray(c["version"], dtype=np.int64),
        })


@dataclass
class Capture:
    """One capture's state while it runs and what it found."""

    parser: StreamParser
    records: Records
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, stream bytes)
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # QMP replies
    final: dict[str, Any] = field(default_factory=dict)
    error: StreamError | None = None
    summary: Summary | None = None
    qmp_error: str = ""  # why --qmp gave nothing (the socket was busy or gone)
    capabilities: list[str] = field(default_factory=list)  # enabled on the source (--qmp)

    @property
    def t0(self) -> float:
        return self.chunks[0][0] if self.chunks else time.time()

    def feed(self, data: bytes) -> None:
        now = time.time()
        self.chunks.append((now, self.parser.received + len(data)))
        if self.error is None:
            try:
                self.parser.feed(data, now)
            except StreamError as err:
                self.error = err

    def close(self) -> None:
        if self.error is None:
            try:
                self.summary = self.parser.close()
            except StreamError as err:
                self.error = err


def capture_bytes(chunks: list[bytes], *, content: Any | None = None) -> Capture:
    """Parse a whole stream given as chunks (for tests and files); never raises StreamError."""
    records = Records(content)
    cap = Capture(StreamParser(records.add), records)
    for chunk in chunks:
        cap.feed(chunk)
    cap.close()
    return cap


async def _pump(reader: asyncio.StreamReader, cap: Capture,
                writer: asyncio.StreamWriter | None) -> None:
    while data := await reader.read(CHUNK_BYTES):
        if writer is not None:
            writer.write(data)
            await writer.drain()
        cap.feed(data)
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.write_eof()


async def _relay_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The destination's return path (if any) back to the source, unparsed."""
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()


async def _poll(socket_path: str, cap: Capture, done: asyncio.Event) -> None:
    """``query-migrate`` on the source every 100 ms until the stream ends, then once more."""
    from qemu.qmp import QMPClient

    client = QMPClient("migsim-capture")
    connect = asyncio.ensure_future(asyncio.wait_for(client.connect(socket_path), QMP_CONNECT_S))
    ended = asyncio.ensure_future(done.wait())
    await asyncio.wait([connect, ended], return_when=asyncio.FIRST_COMPLETED)
    ended.cancel()
    if not connect.done():  # the stream ended first: no use waiting for a session any more
        connect.cancel()
    try:
        await connect
    except (Exception, asyncio.CancelledError) as err:  # a QMP socket takes one client at a time
        cap.qmp_error = f"{socket_path}: no QMP session ({type(err).__name__}: {err}); " \
            "the tables have the stream's counters only"
        with contextlib.suppress(Exception):
            await client.disconnect()
        return
    try:
        reply: Any = await client.execute("query-migrate-capabilities")
        cap.capabilities = [str(c["capability"]) for c in reply if c.get("state")]
        while not done.is_set():
            reply = await client.execute("query-migrate")
            cap.samples.append((time.time(), dict(reply)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), POLL_S)
        for _ in range(40):  # until QEMU reports the end (and fills in its times)
            info: dict[str, Any] = dict(await client.execute("query-migrate"))  # type: ignore[call-overload]
            cap.samples.append((time.time(), info))
            if info.get("status") in ("completed", "failed", "cancelled") and (
                    info.get("status") != "completed" or info.get("total-time", 0) > 0):
                cap.final = info
                break
            await asyncio.sleep(0.05)
    except Exception as err:  # QEMU went away: keep the replies so far
        cap.qmp_error = f"{socket_path}: QMP session lost ({type(err).__name__}: {err})"
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def serve(listen: Address, cap: Capture, *, forward: Address | None = None,
                qmp: str | None = None,
                on_ready: Callable[[str], None] | None = None) -> Capture:
    """Accept one connection on ``listen``, read it to its end (relaying to ``forward``)."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
        asyncio.get_running_loop().create_future()

    def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if accepted.done():
            w.close()
        else:
            accepted.set_result((r, w))

    server = await asyncio.start_server(on_connect, listen.host, listen.port)
    host, port = server.sockets[0].getsockname()[:2]
    if on_ready is not None:
        on_ready(f"{host}:{port}")
    done = asyncio.Event()
    poller = asyncio.create_task(_poll(qmp, cap, done)) if qmp else None
    try:
        reader, writer = await accepted
        server.close()
        dst: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        back = None
        if forward is not None:
            dst = await asyncio.open_connection(forward.host, forward.port)
            back = asyncio.create_task(_relay_back(dst[0], writer))
        await _pump(reader, cap, dst[1] if dst else None)
        cap.close()
        done.set()
        if back is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(back, 5.0)
        writer.close()
        if dst is not None:
            dst[1].close()
        if poller is not None:
            await asyncio.wait_for(poller, 10.0)
    finally:
        done.set()
        server.close()
        if poller is not None and not poller.done():
            poller.cancel()
    return cap


def write(cap: Capture, out: Path, pages_file: Path | None,
          command: list[str] | None = None) -> None:
    """The folder: the four tables, ``records.parquet`` and (``pages_file``) ``pages.zst``."""
    frame = cap.records.frame(cap.t0)
    result = stream_tables(frame, cap.parser.summary, cap.chunks, cap.samples, cap.final,
                           cap.error, cap.capabilities)

    def extra(tmp: Path) -> None:
        frame.to_parquet(tmp / "records.parquet", index=False)
        if pages_file is not None:
            os.replace(pages_file, tmp / "pages.zst")

    result.save(out, command=command, extra=extra)


def run_capture(listen: Address, out: Path, *, forward: Address | None = None,
                content: bool = False, qmp: str | None = None,
                on_ready: Callable[[str], None] | None = None,
                command: list[str] | None = None) -> Capture:
    """Capture one migration into ``out``; ``cap.error`` holds the damage, if any."""
    import zstandard

    out.parent.mkdir(parents=True, exist_ok=True)
    pages_file = None
    handle = None
    writer = None
    if content:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}-pages-", dir=out.parent)
        pages_file = Path(name)
        handle = os.fdopen(fd, "wb")
        writer = zstandard.ZstdCompressor(level=3).stream_writer(handle, closefd=False)
    try:
        records = Records(writer)
        cap = Capture(StreamParser(records.add, keep_content=True), records)
        try:
            asyncio.run(serve(listen, cap, forward=forward, qmp=qmp, on_ready=on_ready))
        except KeyboardInterrupt:  # interrupted mid-stream: keep what came, as a truncation
            if not cap.chunks:
                raise
            cap.close()
            interrupted = True
        else:
            interrupted = False
        if writer is not None and handle is not None:
            writer.close()
            handle.close()
        write(cap, out, pages_file, command)
        if interrupted:
            raise KeyboardInterrupt
        return cap
    finally:
        if handle is not None and not handle.closed:
            handle.close()
        if pages_file is not None and pages_file.exists():
            pages_file.unlink()


def read_pages(folder: Path) -> np.ndarray:
    """``pages.zst`` of a capture as uint8[versions, 4096] (rows named by ``records.version``)."""
    import zstandard

    with open(folder / "pages.zst", "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).readall()
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 4096)


__all__ = ["Capture", "Records", "capture_bytes", "read_pages", "run_capture", "serve", "write"]
