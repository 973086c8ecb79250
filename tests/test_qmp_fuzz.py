"""Fuzzing the QMP server: random and mutated messages, wrong types, huge numbers, deep nesting,
non-UTF-8 and unicode, fed to sessions over real endpoints (for volume) and to a live server over
a socket. Properties: every complete message (a JSON object) gets exactly one reply, ``id``
echoed; garbage never kills anything; after a resynchronisation (0xFF, newline) a well-formed
command still succeeds; the server task is alive at the end."""

from __future__ import annotations

import asyncio
import json
import random
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.qmp.json_stream import JsonStream
from sim.qmp.protocol import COMMANDS, QmpSession
from sim.qmp.qapi import MIGRATE_SET_PARAMETERS
from sim.qmp.server import serve
from sim.run import Testbed

SCENARIO = """
name: qmp-fuzz
seed: 11
vm: {memory: 64MiB}
workload: {kind: hotspot, writes_per_s: 2000, hot_set: 4MiB, hot_probability: 0.9}
link: {bandwidth: 1Gbit/s}
"""

ERROR_CLASSES = {"GenericError", "CommandNotFound", "DeviceNotActive", "DeviceNotFound",
                 "KVMMissingCap"}
PARAM_NAMES = [m.name for m in MIGRATE_SET_PARAMETERS.members]
VALID: list[dict[str, Any]] = [
    {"execute": "query-status"},
    {"execute": "query-migrate"},
    {"execute": "query-version"},
    {"execute": "query-commands"},
    {"execute": "query-migrate-capabilities"},
    {"execute": "query-migrate-parameters"},
    {"execute": "migrate-set-capabilities",
     "arguments": {"capabilities": [{"capability": "xbzrle", "state": True},
                                    {"capability": "events", "state": False}]}},
    {"execute": "migrate-set-parameters",
     "arguments": {"downtime-limit": 500, "max-bandwidth": 1250000000,
                   "xbzrle-cache-size": 268435456, "tls-creds": None}},
    {"execute": "migrate", "arguments": {"channels": [
        {"channel-type": "main", "addr": {"transport": "socket", "type": "inet",
                                          "host": "10.0.0.2", "port": "4444"}}]}},
    {"execute": "migrate-incoming", "arguments": {"uri": "tcp:0:4444", "exit-on-error": False}},
    {"execute": "migrate_cancel"},
]


def make_testbed(directory: Path) -> Testbed:
    path = directory / "fuzz.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    return Testbed(sim.load_scenario(path))


@pytest.fixture(scope="module")
def shared_testbed(tmp_path_factory: pytest.TempPathFactory) -> Testbed:
    return make_testbed(tmp_path_factory.mktemp("fuzz"))


def negotiated(tb: Testbed, role: str = "source") -> QmpSession:
    s = QmpSession(tb.source if role == "source" else tb.destination)
    assert s.feed(b'{"execute": "qmp_capabilities"}') == [b'{"return": {}}\r\n']
    return s


def check_reply(wire: bytes) -> dict[str, Any]:
    """A reply is one ASCII JSON object + CRLF, with exactly one of return / error."""
    assert wire.endswith(b"\r\n") and wire.count(b"\n") == 1, wire[:200]
    wire.decode("ascii")
    msg = json.loads(wire)
    assert isinstance(msg, dict)
    assert ("return" in msg) != ("error" in msg), msg
    if "error" in msg:
        err = msg["error"]
        assert set(err) == {"class", "desc"} and err["class"] in ERROR_CLASSES, err
        assert isinstance(err["desc"], str) and err["desc"]
        assert "internal error" not in err["desc"], err["desc"]  # no bug surfaced as an error
    assert set(msg) <= {"return", "error", "id"}
    return msg


def probe(s: QmpSession, tag: Any) -> None:
    """Resynchronise (0xFF + newline) and check a well-formed command still works."""
    replies = s.feed(b"\xff\n" + json.dumps({"execute": "query-migrate", "id": tag}).encode())
    assert replies, "no reply to the probe"
    for r in replies[:-1]:
        assert "error" in check_reply(r)
    last = check_reply(replies[-1])
    assert last.get("id") == tag, last
    if s.negotiated:
        assert "return" in last, last
    else:
        assert last["error"]["class"] == "CommandNotFound", last


# -- hypothesis: any JSON object gets exactly one reply ------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn")), max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(TEXT, children, max_size=4), max_leaves=12)
NAMES = st.sampled_from([*COMMANDS, "migrate-continue", "x"]) | TEXT
ARG_KEYS = st.sampled_from([*PARAM_NAMES, "capabilities", "uri", "channels", "resume",
                            "exit-on-error", "enable"]) | TEXT
CAP_ITEM = st.fixed_dictionaries(
    {}, optional={"capability": st.sampled_from(["xbzrle", "events", "multifd", "foo"]) | JSON,
                  "state": st.booleans() | JSON})
ARG_VALUES = JSON | st.lists(CAP_ITEM, max_size=3) | st.integers(-(2**70), 2**70)
MESSAGES = st.fixed_dictionaries(
    {}, optional={
        "execute": NAMES | JSON,
        "arguments": st.dictionaries(ARG_KEYS, ARG_VALUES, max_size=4) | JSON,
        "id": JSON,
        "xyz": JSON,
    }) | JSON


def one_message(tb: Testbed, message: Any, negotiate: bool, role: str) -> None:
    ep = tb.source if role == "source" else tb.destination
    s = QmpSession(ep)
    if negotiate:
        s.feed(b'{"execute": "qmp_capabilities"}')
    wire = json.dumps(message).encode() + b"\n"  # a top-level scalar needs its delimiter
    replies = s.feed(wire)
    assert len(replies) == 1, (message, replies)
    reply = check_reply(replies[0])
    if isinstance(message, dict) and "id" in message:
        assert reply["id"] == message["id"]
    else:
        assert "id" not in reply
    if not isinstance(message, dict):
        assert reply["error"]["desc"] == "QMP input must be a JSON object"
    elif not negotiate and "error" in reply and message.get("execute") != "qmp_capabilities":
        assert reply["error"]["class"] in ("GenericError", "CommandNotFound")
    if not s.closed:  # and the session still answers
        probe(s, "after")


FUZZ_SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]}


@settings(max_examples=500, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(message=MESSAGES, negotiate=st.booleans(), role=st.sampled_from(["source", "destination"]))
def test_every_message_gets_exactly_one_reply(shared_testbed: Testbed, message: Any,
                                              negotiate: bool, role: str) -> None:
    one_message(shared_testbed, message, negotiate, role)


@pytest.mark.slow
@settings(max_examples=10000, **{**FUZZ_SETTINGS, "derandomize": False})  # type: ignore[arg-type]
@given(message=MESSAGES, negotiate=st.booleans(), role=st.sampled_from(["source", "destination"]))
def test_every_message_gets_exactly_one_reply_long(shared_testbed: Testbed, message: Any,
                                                   negotiate: bool, role: str) -> None:
    one_message(shared_testbed, message, negotiate, role)


# -- seeded mutation of valid commands --------------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.25 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op < 0.45:
            b.insert(pos, rng.choice(b'{}[]:,"\'\\ \n\x00\xff\xc3-0123456789.eE'))
        elif op < 0.6 and b:
            del b[min(pos, len(b) - 1)]
        elif op < 0.75:
            b = b[:pos]  # truncated
        elif op < 0.85:
            b[pos:pos] = rng.choice([b"1e400", b"18446744073709551616", b"-0", b"null",
                                     b'"\\ud800"', b'"\xed\xa0\x80"', b"\xef\xbf\xbf",
                                     "\u00e9\U0001F600".encode(), b"[" * 50])
        else:
            b = b + b[: rng.randrange(len(b) + 1)]  # duplicated tail
    return bytes(b)


def test_mutated_commands(shared_testbed: Testbed) -> None:
    rng = random.Random(20240521)
    s = negotiated(shared_testbed)
    start = time.monotonic()
    for i in range(5000):
        base = json.dumps(rng.choice(VALID) | {"id": i}).encode()
        data = mutate(rng, base)
        for chunk_start in range(0, len(data), 1 + rng.randrange(64)):
            for reply in s.feed(data[chunk_start:chunk_start + 1 + rng.randrange(64)]):
                check_reply(reply)
        if s.closed:
            s = negotiated(shared_testbed)
        probe(s, f"m{i}")
    assert time.monotonic() - start < 30


def test_random_bytes_and_extreme_inputs(shared_testbed: Testbed) -> None:
    rng = random.Random(7)
    s = negotiated(shared_testbed, "destination")
    extreme = [
        b"[" * 100000,
        b"{" * 100000 + b"}" * 100000,
        b'{"execute": "query-status", "id": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"execute": "query-status", "id": ' + b"9" * 100000 + b"}",
        b'{"execute": "query-status", "id": "' + b"x" * (2 << 20) + b'"}',
        b'{"execute": "query-status", "id": 1e999999}',
        b'{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 1e308}}',
        b'{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": -99999999999}}',
        '{"execute": "query-st\u00e4tus", "id": "\U0001F600\u200b"}'.encode(),
        b'{"execute": "query-status", "id": "\xc0\x80"}',
        b'{"execute": "query-status", "id": "\xf8\x88\x80\x80\x80"}',
        b"\x00\x01\x02\x1b\x7f",
        b"\xef\xbb\xbf" + json.dumps({"execute": "query-status"}).encode(),
        b"{'execute': 'query-status', 'arguments': {'a': \"b\"}}",
    ]
    for i, data in enumerate(extreme):
        for reply in s.feed(data):
            check_reply(reply)
        probe(s, f"x{i}")
    for i in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        for reply in s.feed(data):
            check_reply(reply)
        probe(s, i)


def test_parser_memory_stays_bounded() -> None:
    """A stream that never completes a message holds at most one message's worth of tokens."""
    stream = JsonStream()
    chunk = b'{"a": [' + b"1," * 30000
    for _ in range(12):
        for item in stream.feed(chunk):
            assert not isinstance(item, dict)
        assert stream._size <= stream.limits.max_message_bytes
        assert len(stream._tokens) <= stream.limits.max_tokens
        assert len(stream._pending) <= stream.limits.max_message_bytes


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.lists(st.sampled_from([
    b'{"execute": "query-status", "id": [1, 2.5e3, -0, "a\\"b"]}', b"{'a': 'it\\'s \"x\"'}",
    b"123", b"-0.5e-7", b"0e5", b"0.25", b"12E3", b"true", b"nul", b"@", b"\xff", b"\n", b" ", b'"\\u00e9\\ud83d\\ude00"',
    b'"\xc3\xa9"', b'"\x01"', b"01", b"1.", b"1e+", b"[", b"]", b"{", b"}", b":", b",",
    b'"\\', b"\\q", b"'",
]), max_size=30), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_any_split_of_the_input_parses_the_same(data: list[bytes], cuts: list[int]) -> None:
    whole = b"".join(data)
    expected = JsonStream().feed(whole)
    stream = JsonStream()
    got: list[Any] = []
    last = 0
    for cut in sorted({c for c in cuts if c <= len(whole)} | {len(whole)}):
        got += stream.feed(whole[last:cut])
        last = cut
    assert got == expected


def test_a_huge_token_trickled_byte_by_byte_is_scanned_once() -> None:
    stream = JsonStream()
    start = time.monotonic()
    out: list[Any] = []
    for piece in (b'{"execute": "query-status", "id": "', b"x" * 300_000, b'", "n": ',
                  b"7" * 15, b".5", b"e", b"1", b"0", b"}"):
        for i in range(len(piece)):
            out += stream.feed(piece[i:i + 1])
    assert time.monotonic() - start < 10
    assert out == [{"execute": "query-status", "id": "x" * 300_000, "n": float("7" * 15 + ".5e10")}]


# -- a live server -------------------------------------------------------------------------------


async def read_until_id(reader: asyncio.StreamReader, tag: Any,
                        timeout: float = 20.0) -> list[dict[str, Any]]:
    """Read messages (skipping events) until the reply with id ``tag``; return the replies."""
    out: list[dict[str, Any]] = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        assert line, "server closed the connection"
        msg = json.loads(line)
        if "event" in msg:
            continue
        check_reply(line)
        out.append(msg)
        if msg.get("id") == tag:
            return out


def test_live_server_barrage(tmp_path: Path, sockdir: Path) -> None:
    tb = make_testbed(tmp_path)
    rng = random.Random(99)
    gen_rng = random.Random(5)

    def random_value(depth: int = 0) -> Any:
        r = gen_rng.random()
        if depth > 3 or r < 0.5:
            return gen_rng.choice([None, True, False, gen_rng.randint(-(2**65), 2**65),
                                   gen_rng.random() * 1e6, "x" * gen_rng.randrange(5),
                                   "\u00e9\U0001F600", gen_rng.choice(PARAM_NAMES)])
        if r < 0.75:
            return [random_value(depth + 1) for _ in range(gen_rng.randrange(4))]
        return {gen_rng.choice([*PARAM_NAMES, "uri", "capabilities", "k"]): random_value(depth + 1)
                for _ in range(gen_rng.randrange(4))}

    def random_message(i: int) -> dict[str, Any]:
        if gen_rng.random() < 0.5:
            msg = dict(gen_rng.choice(VALID))
        else:
            msg = {"execute": gen_rng.choice([*COMMANDS, "nope"])}
            if gen_rng.random() < 0.8:
                msg["arguments"] = {gen_rng.choice([*PARAM_NAMES, "uri", "capabilities"]):
                                    random_value() for _ in range(gen_rng.randrange(1, 4))}
        if msg.get("execute") == "quit":
            msg["execute"] = "query-status"
        msg["id"] = i
        return msg

    async def main() -> None:
        async with serve(tb, str(sockdir / "s"), str(sockdir / "d"), speed=1) as server:
            assert server._clock is not None
            conns = []
            for role in ("source", "destination", "source"):
                path = str(sockdir / ("s" if role == "source" else "d"))
                reader, writer = await asyncio.open_unix_connection(path, limit=16 << 20)
                greeting = json.loads(await reader.readline())
                assert "QMP" in greeting
                writer.write(b'{"execute": "qmp_capabilities", "id": "neg"}\n')
                await read_until_id(reader, "neg")
                conns.append((reader, writer))

            # 1. well-formed objects, pipelined: exactly one reply each, in order
            n = 1500
            for k, (reader, writer) in enumerate(conns):
                batch = [random_message(k * 10000 + i) for i in range(n)]
                writer.write(b"".join(json.dumps(m).encode() + b"\n" for m in batch))
                await writer.drain()
                replies = await read_until_id(reader, k * 10000 + n - 1)
                assert [r["id"] for r in replies] == [m["id"] for m in batch]

            # 2. garbage, each followed by a resynchronisation and a probe
            reader, writer = conns[0]
            for i in range(300):
                if rng.random() < 0.5:
                    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
                else:
                    junk = mutate(rng, json.dumps(random_message(i)).encode())
                writer.write(junk)
                writer.write(b"\xff\n" + json.dumps(
                    {"execute": "query-migrate", "id": f"p{i}"}).encode() + b"\n")
                await writer.drain()
                replies = await read_until_id(reader, f"p{i}")
                assert "return" in replies[-1]

            # 3. an oversized message, sent in pieces
            writer.write(b'{"execute": "query-status", "id": "' + b"z" * (3 << 20) + b'"}\n')
            writer.write(b'{"execute": "query-migrate", "id": "big"}\n')
            await writer.drain()
            replies = await read_until_id(reader, "big")
            assert replies[0]["error"]["desc"] == "JSON token size limit exceeded"
            assert "return" in replies[-1]

            for _, writer in conns:
                writer.close()
            # the server is alive: its clock runs and a fresh qemu.qmp client is served
            assert not server._clock.done() and server.clock_error is None
            qmp = pytest.importorskip("qemu.qmp")
            client = qmp.QMPClient("after-fuzz")
            await client.connect(str(sockdir / "s"))
            info = await client.execute("query-migrate")
            assert isinstance(info, dict)
            await client.disconnect()

    start = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 120))
    assert time.monotonic() - start < 60
