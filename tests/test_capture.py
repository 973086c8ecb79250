"""migsim capture: the stream parser on streams built here from the format's rules, and (slow) a
real QEMU migration captured end to end."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.capture import capture_bytes
from sim.stream import ZERO_DIGEST, StreamError, StreamParser

PAGE = 4096
RAM = 8 * PAGE  # block "pc.ram"
ROM = 2 * PAGE  # block "pc.rom"


def name(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


def uleb(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def xbzrle_record(at: int, data: bytes) -> bytes:
    """One changed run at ``at`` in an otherwise unchanged page: zrun, nzrun, bytes."""
    return uleb(at) + uleb(len(data)) + data


def blake(page: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(page, digest_size=8).digest(), "big")


def page_of(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(1, 256, PAGE, dtype=np.uint8).tobytes()


class Stream:
    """A stream built from the format, with the records a correct parser must find."""

    def __init__(self) -> None:
        self.data = bytearray(struct.pack(">II", 0x5145564D, 3))
        self.expected: list[tuple[int, str, int, str, int, int]] = []  # pass block page kind wire digest
        self.pages: dict[tuple[str, int], bytes] = {}

    def config(self, machine: str = "pc-i440fx-7.2") -> Stream:
        self.data += b"\x07" + struct.pack(">I", len(machine)) + machine.encode()
        return self

    def start(self, sid: int, idstr: str, full: bool = False) -> Stream:
        self.data += bytes([4 if full else 1]) + struct.pack(">I", sid) + name(idstr) \
            + struct.pack(">II", 0, 4)
        return self

    def header(self, kind: int, sid: int) -> Stream:
        self.data += bytes([kind]) + struct.pack(">I", sid)
        return self

    def footer(self, sid: int) -> Stream:
        self.data += b"\x7e" + struct.pack(">I", sid)
        return self

    def mem_size(self) -> Stream:
        self.data += struct.pack(">Q", (RAM + ROM) | 0x04)
        self.data += name("pc.ram") + struct.pack(">Q", RAM) + name("pc.rom") + struct.pack(">Q", ROM)
        return self

    def eos(self) -> Stream:
        self.data += struct.pack(">Q", 0x10)
        return self

    def _record(self, pass_: int, block: str, page: int, flags: int, cont: bool,
                payload: bytes, kind: str, content: bytes) -> Stream:
        rec = struct.pack(">Q", page * PAGE | flags | (0x20 if cont else 0))
        rec += b"" if cont else name(block)
        rec += payload
        self.data += rec
        self.pages[(block, page)] = content
        self.expected.append((pass_, block, page, kind, len(rec), blake(content)))
        return self

    def zero(self, pass_: int, block: str, page: int, cont: bool = False) -> Stream:
        return self._record(pass_, block, page, 0x02, cont, b"\x00", "zero", bytes(PAGE))

    def raw(self, pass_: int, block: str, page: int, content: bytes, cont: bool = False) -> Stream:
        return self._record(pass_, block, page, 0x08, cont, content, "page", content)

    def xbzrle(self, pass_: int, block: str, page: int, at: int, data: bytes,
               cont: bool = False) -> Stream:
        enc = xbzrle_record(at, data)
        old = self.pages[(block, page)]
        new = old[:at] + data + old[at + len(data):]
        return self._record(pass_, block, page, 0x40, cont,
                            b"\x01" + struct.pack(">H", len(enc)) + enc, "xbzrle", new)


def example() -> Stream:
    """Header, config, ram START (MEM_SIZE), two PARTs (raw/zero/xbzrle/continue), END, a
    device FULL section, EOF."""
    s = Stream().config().start(2, "ram").mem_size().eos().footer(2)
    s.header(2, 2)
    s.raw(1, "pc.ram", 0, page_of(1)).zero(1, "pc.ram", 1, cont=True)
    s.raw(1, "pc.ram", 5, page_of(2), cont=True).raw(1, "pc.rom", 0, page_of(3))
    s.eos().footer(2)
    s.data += b"\x08" + struct.pack(">HH", 3, 4) + b"\x00\x00\x00\x07"  # a QEMU_VM_COMMAND
    s.header(2, 2)
    s.xbzrle(2, "pc.ram", 0, 100, b"\xaa\xbb\xcc").raw(2, "pc.ram", 3, page_of(4), cont=True)
    s.xbzrle(2, "pc.ram", 5, 0, b"\x01" * 40, cont=True)
    s.eos().footer(2)
    s.header(3, 2).zero(3, "pc.ram", 0).raw(3, "pc.ram", 7, page_of(5), cont=True)
    s.eos().footer(2)
    s.start(3, "timer", full=True)
    s.data += b"device state that is not parsed" * 10
    s.footer(3)
    s.data += b"\x00"
    return s


def chunked(data: bytes, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, len(data), rng.integers(1, 60)))
    bounds = [0, *cuts.tolist(), len(data)]
    return [bytes(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def parsed(cap) -> list[tuple[int, str, int, str, int, int]]:  # type: ignore[no-untyped-def]
    c = cap.records.columns
    return list(zip(c["pass"], c["block"], c["page"], c["kind"], c["wire_bytes"], c["digest"],
                    strict=True))


@pytest.mark.parametrize("seed", range(8))
def test_records_are_the_same_whatever_the_chunking(seed: int) -> None:
    s = example()
    cap = capture_bytes(chunked(bytes(s.data), seed))
    assert cap.error is None
    assert parsed(cap) == s.expected
    summary = cap.summary
    assert summary is not None and summary.machine == "pc-i440fx-7.2"
    assert [(b.name, b.used_bytes) for b in summary.blocks] == [("pc.ram", RAM), ("pc.rom", ROM)]
    tail = len(b"device state that is not parsed" * 10) + 5 + 1  # + footer + EOF
    start_full = 1 + 4 + len(name("timer")) + 8
    assert summary.device_bytes == start_full + tail
    assert summary.commands and summary.commands[0][1] == 3


def random_stream(seed: int) -> Stream:
    """Random passes over both blocks: raw, zero and (on pages already sent) XBZRLE records,
    CONTINUE whenever the block does not change, a few records per PART."""
    rng = np.random.default_rng(seed)
    s = Stream().config().start(2, "ram").mem_size().eos().footer(2)
    pages = [("pc.ram", p) for p in range(RAM // PAGE)] + [("pc.rom", p) for p in range(ROM // PAGE)]
    last = None
    for number in range(1, int(rng.integers(2, 5)) + 1):
        chosen = sorted(rng.choice(len(pages), int(rng.integers(1, len(pages))), replace=False))
        if number == 1:
            chosen = list(range(len(pages)))  # the first pass sends everything
        elif chosen[0] != 0:  # a scan round ends where it wraps: start the next one at page 0
            chosen = [0, *chosen]
        s.header(2, 2)
        for i, idx in enumerate(chosen):
            block, page = pages[idx]
            cont = last == block
            kind = rng.choice(["raw", "zero", "xbzrle"] if (block, page) in s.pages else
                              ["raw", "zero"])
            if kind == "raw":
                s.raw(number, block, page, page_of(int(rng.integers(1 << 30))), cont=cont)
            elif kind == "zero":
                s.zero(number, block, page, cont=cont)
            else:
                at = int(rng.integers(0, PAGE - 64))
                s.xbzrle(number, block, page, at, rng.integers(1, 256, 50, dtype=np.uint8)
                         .tobytes(), cont=cont)
            last = block
            if i % 5 == 4 and i + 1 < len(chosen):
                s.eos().footer(2).header(2, 2)
        s.eos().footer(2)
    s.header(3, 2).eos().footer(2)
    s.start(3, "timer", full=True)
    s.data += b"\x01\x02\x03"
    return s


@pytest.mark.parametrize("seed", range(10))
def test_random_streams_any_chunking(seed: int) -> None:
    s = random_stream(seed)
    first = capture_bytes([bytes(s.data)])
    again = capture_bytes(chunked(bytes(s.data), seed + 100))
    assert first.error is None and again.error is None
    assert parsed(first) == parsed(again) == s.expected


def test_one_byte_chunks_and_zero_digest() -> None:
    s = example()
    data = bytes(s.data)
    cap = capture_bytes([data[i:i + 1] for i in range(len(data))])
    assert parsed(cap) == s.expected
    zero = [r for r in parsed(cap) if r[3] == "zero"]
    assert zero and all(r[5] == ZERO_DIGEST == blake(bytes(PAGE)) for r in zero)


def test_passes_follow_the_scan_wrapping() -> None:
    s = example()
    cap = capture_bytes([bytes(s.data)])
    # pass 1: ram 0,1,5 then rom 0; pass 2 wraps to ram 0; the END section wraps again
    assert [r[0] for r in parsed(cap)] == [p for p, *_ in s.expected]


def test_xbzrle_content_follows_the_previous_version() -> None:
    s = example()
    versions: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            versions.append(data)

    cap = capture_bytes([bytes(s.data)], content=Sink())
    v = cap.records.columns["version"]
    kinds = cap.records.columns["kind"]
    assert [k for k, x in zip(kinds, v, strict=True) if x >= 0] == \
        [k for k in kinds if k != "zero"]
    first_xb = kinds.index("xbzrle")
    page = versions[v[first_xb]]
    old = page_of(1)
    assert page[:100] == old[:100] and page[100:103] == b"\xaa\xbb\xcc" and page[103:] == old[103:]


@pytest.mark.parametrize("cut", [3, 9, 40, 200, 5000, -40])
def test_truncated_stream_keeps_the_records_before(cut: int) -> None:
    s = example()
    data = bytes(s.data)
    end = data.index(b"\x04\x00\x00\x00\x03")  # the FULL section: from there on, device state
    stop = cut if cut > 0 else end + cut
    cap = capture_bytes(chunked(data[:stop], cut % 7))
    assert cap.error is not None
    assert "truncated" in str(cap.error) and str(cap.error).startswith(f"byte {cap.error.offset}")
    got = parsed(cap)
    assert got == s.expected[:len(got)]
    if cut == -40:
        assert len(got) >= len(s.expected) - 2


def test_truncated_device_state_is_not_an_error() -> None:
    data = bytes(example().data)
    assert capture_bytes([data[:-20]]).error is None


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda d: b"QEVX" + d[4:], "not a QEMU migration stream"),
    (lambda d: d[:4] + b"\x00\x00\x00\x02" + d[8:], "stream version 2"),
])
def test_bad_header(damage, problem) -> None:  # type: ignore[no-untyped-def]
    cap = capture_bytes([damage(bytes(example().data))])
    assert cap.error is not None and problem in str(cap.error) and cap.error.offset in (0, 4)
    assert not parsed(cap)


def test_corruption_names_the_offset_and_keeps_earlier_records() -> None:
    s = example()
    data = bytearray(s.data)
    # the 3rd record's header (ram page 5, CONTINUE): give it an unknown flag
    ram5 = struct.pack(">Q", 5 * PAGE | 0x08 | 0x20)
    at = bytes(data).index(ram5)
    data[at + 7] |= 0x01
    cap = capture_bytes(chunked(bytes(data), 3))
    assert cap.error is not None and cap.error.offset == at
    assert "unknown ram record flags 0x1" in str(cap.error)
    assert parsed(cap) == s.expected[:2]


@pytest.mark.parametrize(("old", "new", "start", "problem"), [
    (b"\x7e\x00\x00\x00\x02\x02", b"\x7e\x00\x00\x00\x09\x02", 0, "footer of section 9"),
    (name("pc.rom"), name("pc.xxx"), 200, "unknown RAMBlock 'pc.xxx'"),  # 200: past MEM_SIZE
    (b"\x08\x00\x03", b"\x66\x00\x03", 200, "unknown section type 0x66"),
])
def test_corrupted_records(old: bytes, new: bytes, start: int, problem: str) -> None:
    data = bytes(example().data)
    at = data.index(old, start)
    cap = capture_bytes([data[:at] + new + data[at + len(old):]])
    assert cap.error is not None and problem in str(cap.error)


def test_ignore_shared_from_the_configuration() -> None:
    """With x-ignore-shared QEMU lists it in the configuration and MEM_SIZE gives each block's
    address too (be64 after its length)."""
    s = Stream().config()
    s.data += b"\x05" + name("configuration/capabilities") + struct.pack(">II", 1, 1) \
        + name("x-ignore-shared")
    s.start(2, "ram")
    s.data += struct.pack(">Q", (RAM + ROM) | 0x04)
    s.data += name("pc.ram") + struct.pack(">QQ", RAM, 0) + name("pc.rom") \
        + struct.pack(">QQ", ROM, 0xFFFE0000)
    s.eos().footer(2).header(3, 2).raw(1, "pc.rom", 1, page_of(9)).eos().footer(2)
    s.data += b"\x00"
    cap = capture_bytes(chunked(bytes(s.data), 2))
    assert cap.error is None, cap.error
    assert cap.summary is not None and cap.summary.capabilities == ["x-ignore-shared"]
    assert cap.summary.eof and parsed(cap) == s.expected


def test_offset_beyond_the_block() -> None:
    s = Stream().config().start(2, "ram").mem_size().eos().footer(2).header(2, 2)
    s.raw(1, "pc.rom", 2, page_of(1))  # pc.rom has 2 pages
    cap = capture_bytes([bytes(s.data)])
    assert cap.error is not None and "beyond RAMBlock 'pc.rom'" in str(cap.error)


def test_the_parser_refuses_more_after_damage() -> None:
    seen = []
    parser = StreamParser(seen.append)
    with pytest.raises(StreamError):
        parser.feed(b"QEVX\x00\x00\x00\x03", 0.0)
    with pytest.raises(StreamError):
        parser.feed(b"more", 1.0)


def test_tables_count_the_stream(tmp_path: Path) -> None:
    from sim.capture import write
    from sim.result import Result

    s = example()
    cap = capture_bytes(chunked(bytes(s.data), 1))
    write(cap, tmp_path / "cap", None)
    result = Result.load(tmp_path / "cap")
    run = result.runs.iloc[0]
    kinds = [e[3] for e in s.expected]
    assert run["normal_pages"] == kinds.count("page")
    assert run["zero_pages"] == kinds.count("zero")
    assert run["xbzrle_records"] == kinds.count("xbzrle")
    assert run["transferred_bytes"] == len(s.data)
    assert run["status"] == "completed"
    assert run["capabilities"] == "xbzrle"  # proved by its records
    assert list(result.passes["pass"]) == [1, 2, 3]
    assert result.passes["pages_sent"].sum() == len(s.expected)
    records = pd.read_parquet(tmp_path / "cap" / "records.parquet")
    assert len(records) == len(s.expected) and records["t_s"].min() >= 0


def _cli_capture(data: bytes, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`migsim capture` on a free port, fed ``data`` by a sender that then closes."""
    import socket
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "sim", "capture", "--listen", "127.0.0.1:0",
                             "-o", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.strip().rsplit(":", 1)[1].split()[0])

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for chunk in chunked(data, 5):
                sock.sendall(chunk)

    threading.Thread(target=send).start()
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, line + stdout, stderr)


def test_cli_damaged_stream_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A sender that stops mid-record: one line naming the byte offset, exit 2, tables kept."""
    s = example()
    proc = _cli_capture(bytes(s.data)[:5000], tmp_path / "cap")  # inside the second record
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "byte 5000: stream truncated" in lines[0], lines
    records = pd.read_parquet(tmp_path / "cap" / "records.parquet")
    assert list(records["page"]) == [0, 1] and list(records["kind"]) == ["page", "zero"]
    runs = pd.read_parquet(tmp_path / "cap" / "runs.parquet")
    assert runs["status"].iloc[0] == "failed" and "byte 5000" in runs["failure_reason"].iloc[0]


def test_cli_content_keeps_every_page_version(tmp_path: Path) -> None:
    from sim.capture import read_pages

    s = example()
    proc = _cli_capture(bytes(s.data), tmp_path / "cap", "--content")
    assert proc.returncode == 0, proc.stderr
    records = pd.read_parquet(tmp_path / "cap" / "records.parquet")
    pages = read_pages(tmp_path / "cap")
    sent = records[records["kind"] != "zero"]
    assert list(sent["version"]) == list(range(len(pages)))
    assert (records[records["kind"] == "zero"]["version"] == -1).all()
    # each version's digest is the digest the format says (the page after the record)
    assert [blake(p.tobytes()) for p in pages] == [e[5] for e in s.expected if e[3] != "zero"]
    assert list(records["digest"]) == [e[5] for e in s.expected]


def test_cli_interrupted_mid_stream_writes_what_came(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    proc = subprocess.Popen([sys.executable, "-m", "sim", "capture", "--listen", "127.0.0.1:0",
                             "-o", str(tmp_path / "cap")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(bytes(example().data)[:6000])
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "migsim: interrupted"
    runs = pd.read_parquet(tmp_path / "cap" / "runs.parquet")
    assert runs["status"].iloc[0] == "failed" and "byte 6000" in runs["failure_reason"].iloc[0]
    assert len(pd.read_parquet(tmp_path / "cap" / "records.parquet")) == 2


def test_qmp_socket_that_never_answers_is_a_warning(tmp_path: Path) -> None:
    """A --qmp socket that accepts but never greets (QEMU's monitor busy with another client):
    the capture goes on with the stream's counters and one warning line."""
    import socket

    path = tmp_path / "busy.qmp"
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(str(path))
    busy.listen(1)
    try:
        proc = _cli_capture(bytes(example().data), tmp_path / "cap", "--qmp", str(path))
    finally:
        busy.close()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("migsim capture: warning: --qmp")
    runs = pd.read_parquet(tmp_path / "cap" / "runs.parquet")
    assert runs["status"].iloc[0] == "completed" and np.isnan(runs["setup_time_s"].iloc[0])


def test_cli_refuses_non_loopback_addresses(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import main

    for args in (["--listen", "10.1.2.3:4444"], ["--listen", "127.0.0.1:0", "--forward",
                                                 "192.168.0.1:5555"]):
        assert main(["capture", *args, "-o", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "only loopback hosts" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# -- a real QEMU migration, captured -------------------------------------------------------------

def _real_qemu_available() -> bool:
    import importlib.util
    import shutil

    return all(shutil.which(b) for b in ("qemu-system-x86_64", "as", "ld")) and \
        importlib.util.find_spec("qemu.qmp") is not None


real_qemu = pytest.mark.skipif(not _real_qemu_available(),
                               reason="needs qemu-system-x86_64, GNU as/ld and qemu.qmp")


async def _real_capture(tmp: Path, capabilities: tuple[str, ...], forward: bool,
                        content: Any = None
                        ) -> tuple[Any, dict, dict | None, int]:  # type: ignore[type-arg]
    """Migrate the validation guest from a real QEMU into `capture` (sink, or relayed to a real
    destination); returns the capture, the source's final query-migrate, the destination's, and
    how many XBZRLE hits QEMU skipped (its trace)."""
    import asyncio

    from sim.capture import Capture, Records, serve
    from sim.qmp.server import parse_address
    from sim.stream import StreamParser
    from sim.units import MiB
    from sim.validation.guest import GuestParams, assemble, write_image
    from sim.validation.qemu import QemuProcess, find_qemu

    binary = find_qemu()
    assert binary is not None
    guest = GuestParams(base=4 * MiB, pages=2048, touches_per_s=4000.0, bytes_per_touch=64,
                        fill_end=24 * MiB)
    sector = assemble(tmp)
    memory = 64 * MiB
    src = QemuProcess("source", binary, write_image(tmp / "s.img", guest, sector), memory, tmp,
                      incoming=False)
    dst = QemuProcess("destination", binary, write_image(tmp / "d.img", guest, sector), memory,
                      tmp, incoming=True) if forward else None
    src.args += ["-qmp", f"unix:{tmp / 'cap.qmp'},server=on,wait=off"]  # one client per socket
    # QEMU's trace of the XBZRLE hits that send nothing (unchanged since cached): its
    # xbzrle-cache.pages counts them, the stream cannot show them
    src.args += ["-trace", "enable=save_xbzrle_page_skipping", "-D", str(tmp / "trace.log")]
    records = Records(content)
    cap = Capture(StreamParser(records.add), records)
    try:
        src.start()
        if dst is not None:
            dst.start()
        await src.connect()
        caps = [{"capability": c, "state": True} for c in capabilities]
        if dst is not None:
            await dst.connect()
        for q in (src, dst):
            if q is not None:
                await q.execute("migrate-set-capabilities", {"capabilities": caps})
        await src.execute("migrate-set-parameters", {"max-bandwidth": 32 * MiB,
                                                      "downtime-limit": 100,
                                                      "xbzrle-cache-size": 32 * MiB})
        await asyncio.sleep(1.5)  # the guest fills its pages and starts writing
        target = None
        if dst is not None:
            await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
            address = (await dst.execute("query-migrate"))["socket-address"][0]
            target = parse_address(f"{address['host']}:{address['port']}")
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(parse_address("127.0.0.1:0"), cap, forward=target,
                                         qmp=str(tmp / "cap.qmp"), on_ready=ready.set_result))
        where = await ready
        await src.execute("migrate", {"uri": f"tcp:{where}"})
        await asyncio.wait_for(task, 120)
        final = cap.final
        dst_info = None
        if dst is not None:
            for _ in range(100):
                dst_info = await dst.execute("query-migrate")
                if dst_info.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.1)
            if content is not None:  # the destination's RAM, for the test to compare
                await dst.execute("pmemsave", {"val": 0, "size": memory,
                                               "filename": str(tmp / "dst.ram")})
        await src.close()  # flushes the trace
        trace = tmp / "trace.log"
        skipped = trace.read_text().count("save_xbzrle_page_skipping") if trace.exists() else -1
        return cap, final, dst_info, skipped
    finally:
        await src.close()
        if dst is not None:
            await dst.close()


def _within(parsed: float, qemu: float, rel: float = 0.01) -> bool:
    return abs(parsed - qemu) <= rel * max(qemu, 1)


@pytest.mark.slow
@real_qemu
@pytest.mark.parametrize("capabilities", [(), ("xbzrle",)], ids=["defaults", "xbzrle"])
def test_real_migration_counts_match_qemu(tmp_path: Path, capabilities: tuple[str, ...]) -> None:
    import asyncio
    import tempfile

    from sim.capture import write
    from sim.result import Result

    with tempfile.TemporaryDirectory(prefix="migsim-cap-") as tmp:  # short unix socket paths
        cap, final, _, skipped = asyncio.run(_real_capture(Path(tmp), capabilities,
                                                           forward=False))
    assert cap.error is None, cap.error
    assert not cap.qmp_error
    assert final.get("status") == "completed", final
    kinds = pd.Series(cap.records.columns["kind"])
    ram, xb = final["ram"], final.get("xbzrle-cache") or {}
    counts = {"normal": int((kinds == "page").sum()), "zero": int((kinds == "zero").sum()),
              "xbzrle": int((kinds == "xbzrle").sum())}
    wire = pd.Series(cap.records.columns["wire_bytes"])
    xbzrle_bytes = int((wire[kinds == "xbzrle"] - 8).sum())
    print(counts, xbzrle_bytes, skipped, {
        "normal": ram["normal"], "duplicate": ram["duplicate"], "transferred": ram["transferred"],
        "stream": cap.chunks[-1][1], "ram_bytes": cap.parser.summary.ram_bytes,
        "passes": max(cap.records.columns["pass"]), "syncs": ram["dirty-sync-count"],
        "xbzrle-cache": xb})
    assert _within(counts["normal"], ram["normal"])
    assert _within(counts["zero"], ram["duplicate"])
    if capabilities:
        # QEMU's xbzrle pages are cache hits: the records sent plus the unchanged pages it
        # skipped (no record; counted from its trace); its xbzrle bytes leave out the 8-byte
        # header of each record. No overflow at 64-byte writes.
        assert xb["overflow"] == 0
        assert counts["xbzrle"] > 0 and _within(xbzrle_bytes, xb["bytes"])
        if skipped >= 0:
            assert _within(counts["xbzrle"] + skipped, xb["pages"])
    else:
        assert counts["xbzrle"] == 0
    assert _within(cap.parser.summary.ram_bytes, ram["transferred"])
    write(cap, tmp_path / "cap", None)
    result = Result.load(tmp_path / "cap")
    assert result.runs["normal_pages"].iloc[0] == counts["normal"]
    assert result.runs["capabilities"].iloc[0] == ",".join(sorted(capabilities))
    assert result.runs["dirty_sync_count"].iloc[0] == ram["dirty-sync-count"]
    proc = subprocess.run([sys.executable, "-m", "sim", "plot", str(tmp_path / "cap")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "cap").glob("*.png"))


@pytest.mark.slow
@real_qemu
def test_real_migration_forwarded_to_a_real_destination(tmp_path: Path) -> None:
    """Relayed to a real destination with XBZRLE on, the destination completes, and the pages
    rebuilt from the captured versions (XBZRLE applied by migsim's decoder) equal the
    destination's RAM byte for byte."""
    import asyncio
    import tempfile

    versions: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            versions.append(data)

    with tempfile.TemporaryDirectory(prefix="migsim-cap-") as tmp:
        cap, final, dst_info, _ = asyncio.run(_real_capture(Path(tmp), ("xbzrle",),
                                                            forward=True, content=Sink()))
        dst_ram = np.fromfile(Path(tmp) / "dst.ram", dtype=np.uint8).reshape(-1, PAGE)
    assert cap.error is None, cap.error
    assert final.get("status") == "completed", final
    assert dst_info is not None and dst_info.get("status") == "completed", dst_info
    c = cap.records.columns
    kinds = pd.Series(c["kind"])
    assert _within(int((kinds == "page").sum()), final["ram"]["normal"])
    assert (kinds == "xbzrle").sum() > 0
    rebuilt = np.zeros_like(dst_ram)
    seen = np.zeros(len(dst_ram), dtype=bool)
    for block, page, kind, version in zip(c["block"], c["page"], c["kind"], c["version"],
                                          strict=True):
        if block != "pc.ram":
            continue
        rebuilt[page] = 0 if kind == "zero" else np.frombuffer(versions[version], np.uint8)
        seen[page] = True
    # guest-physical 0xa0000-0xfffff shows VGA and ROM windows, not pc.ram
    ram = np.ones(len(dst_ram), dtype=bool)
    ram[0xA0000 // PAGE:0x100000 // PAGE] = False
    assert seen.all()
    differing = np.flatnonzero(ram & (rebuilt != dst_ram).any(axis=1))
    assert differing.size == 0, differing[:10]


@pytest.mark.slow
@real_qemu
def test_real_migration_through_the_command_line(tmp_path: Path) -> None:
    """`migsim capture --content --qmp` as a sink for a real QEMU source: exit 0, its runs row
    holds the stream's counts and QEMU's times, pages.zst one version per non-zero record."""
    import asyncio
    import tempfile

    from sim.capture import read_pages
    from sim.units import MiB
    from sim.validation.guest import GuestParams, assemble, write_image
    from sim.validation.qemu import QemuProcess, find_qemu

    out = tmp_path / "cap"

    async def migrate(tmp: Path) -> tuple[dict, subprocess.CompletedProcess[str]]:  # type: ignore[type-arg]
        binary = find_qemu()
        assert binary is not None
        guest = GuestParams(base=4 * MiB, pages=1024, touches_per_s=2000.0, fill_end=16 * MiB)
        src = QemuProcess("source", binary, write_image(tmp / "s.img", guest, assemble(tmp)),
                          32 * MiB, tmp, incoming=False)
        src.args += ["-qmp", f"unix:{tmp / 'cap.qmp'},server=on,wait=off"]
        try:
            src.start()
            await src.connect()
            await asyncio.sleep(1.0)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sim", "capture", "--listen", "127.0.0.1:0", "-o",
                str(out), "--content", "--qmp", str(tmp / "cap.qmp"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            where = (await proc.stdout.readline()).decode().strip().rsplit(" ", 1)[1]
            await src.execute("migrate", {"uri": f"tcp:{where}"})
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
            final = await src.execute("query-migrate")
            return final, subprocess.CompletedProcess([], proc.returncode or 0,
                                                      stdout.decode(), stderr.decode())
        finally:
            await src.close()

    with tempfile.TemporaryDirectory(prefix="migsim-cap-") as tmp:
        final, proc = asyncio.run(migrate(Path(tmp)))
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert final["status"] == "completed"
    runs = pd.read_parquet(out / "runs.parquet").iloc[0]
    assert runs["status"] == "completed"
    assert runs["normal_pages"] == final["ram"]["normal"]
    assert runs["zero_pages"] == final["ram"]["duplicate"]
    assert runs["total_time_s"] == final["total-time"] / 1000
    records = pd.read_parquet(out / "records.parquet")
    assert len(read_pages(out)) == int((records["kind"] != "zero").sum())
