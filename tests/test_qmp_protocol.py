"""The QMP protocol layer without sockets: framing, greeting, handshake, id echo, dispatch and
argument errors with QEMU's texts, JSON parse errors and recovery, limits, events."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from sim.capabilities import CAPABILITIES
from sim.errors import QmpError
from sim.qmp.json_stream import JsonError, JsonStream, Limits, parse_document
from sim.qmp.protocol import COMMANDS, QmpSession, encode


class FakeEndpoint:
    """A stand-in for sim.endpoints.Endpoint that records the calls it gets."""

    def __init__(self, role: str = "source", supports: tuple[str, ...] | None = None) -> None:
        self.role = role
        self.version = (9, 2, 1)
        self.running = True
        self.supports = tuple(CAPABILITIES) if supports is None else supports
        self.enabled: set[str] = set()
        self.params: dict[str, Any] = {"downtime-limit": 300}
        self.calls: list[tuple[str, Any]] = []
        self.migrating = False
        self.fail_with: BaseException | None = None
        self.info: dict[str, Any] = {}

    def _call(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.fail_with is not None:
            raise self.fail_with

    def query_migrate_capabilities(self) -> list[dict[str, Any]]:
        return [{"capability": c, "state": c in self.enabled} for c in self.supports]

    def migrate_set_capabilities(self, capabilities: list[dict[str, Any]]) -> None:
        self._call("migrate_set_capabilities", capabilities)
        if self.migrating:
            raise QmpError("There's a migration process in progress")
        for item in capabilities:
            (self.enabled.add if item["state"] else self.enabled.discard)(item["capability"])

    def query_migrate_parameters(self) -> dict[str, Any]:
        return dict(self.params)

    def migrate_set_parameters(self, params: dict[str, Any]) -> None:
        self._call("migrate_set_parameters", params)
        self.params.update(params)

    def query_migrate(self) -> dict[str, Any]:
        self._call("query_migrate")
        return self.info

    def query_status(self) -> dict[str, Any]:
        self._call("query_status")
        return {"running": self.running, "status": "running" if self.running else "paused"}

    def migrate(self, uri: str | None = None, channels: list[Any] | None = None,
                resume: bool = False) -> None:
        self._call("migrate", (uri, channels, resume))

    def migrate_cancel(self) -> None:
        self._call("migrate_cancel")

    def migrate_incoming(self, uri: str | None = None, channels: list[Any] | None = None,
                         exit_on_error: bool = True) -> None:
        self._call("migrate_incoming", (uri, channels, exit_on_error))


def decode(wire: bytes) -> dict[str, Any]:
    assert wire.endswith(b"\r\n") and wire.count(b"\n") == 1
    wire.decode("ascii")  # ASCII only
    msg = json.loads(wire)
    assert isinstance(msg, dict)
    return msg


def session(ep: FakeEndpoint | None = None, negotiated: bool = True) -> QmpSession:
    s = QmpSession(ep or FakeEndpoint())
    if negotiated:
        assert ask(s, {"execute": "qmp_capabilities"}) == {"return": {}}
    return s


def ask(s: QmpSession, request: Any) -> dict[str, Any]:
    """Send one message (object or raw text) and return its one reply."""
    data = request if isinstance(request, bytes) else (
        request.encode() if isinstance(request, str) else json.dumps(request).encode())
    replies = s.feed(data + b"\n")
    assert len(replies) == 1, replies
    return decode(replies[0])


def error(s: QmpSession, request: Any) -> tuple[str, str]:
    reply = ask(s, request)
    assert "error" in reply, reply
    return reply["error"]["class"], reply["error"]["desc"]


def generic(s: QmpSession, request: Any) -> str:
    cls, desc = error(s, request)
    assert cls == "GenericError", (cls, desc)
    return desc


# -- framing ---------------------------------------------------------------------------------------


def test_greeting_shape_and_crlf() -> None:
    s = QmpSession(FakeEndpoint())
    g = decode(s.greeting())
    assert g == {"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 1},
                                     "package": "migsim"}, "capabilities": []}}


def test_objects_split_across_reads_and_several_per_read() -> None:
    s = session()
    stream = (b'{"execute": "query-status", "id": 1}{"execute":"query-version","id":2}'
              b'  \n\t{"execute":\n"query-migrate", "id": 3}\r\n{"execute": "quit", "id": 4}')
    replies: list[bytes] = []
    for i in range(len(stream)):  # one byte per read
        replies += s.feed(stream[i:i + 1])
    ids = [decode(r)["id"] for r in replies]
    assert ids == [1, 2, 3, 4]
    assert s.closed

    s2 = session()
    replies = s2.feed(stream.replace(b'{"execute": "quit", "id": 4}', b""))
    assert [decode(r)["id"] for r in replies] == [1, 2, 3]  # one read, three messages


def test_output_is_ascii_with_escapes() -> None:
    s = session()
    reply = s.feed('{"execute": "query-status", "id": "h\u00e9\U0001F600"}'.encode())[0]
    assert b"\\u00e9" in reply and b"\\ud83d\\ude00" in reply
    assert decode(reply)["id"] == "h\u00e9\U0001F600"


def test_single_quoted_strings_are_accepted() -> None:
    s = session()
    reply = ask(s, "{'execute': 'query-status', 'id': 'it\"s'}")
    assert reply["id"] == 'it"s' and reply["return"]["status"] == "running"


def test_encode_makes_numpy_and_non_finite_values_safe() -> None:
    wire = encode({"return": {"a": np.int64(3), "b": np.float64(0.5), "c": math.nan,
                              "d": (1, 2), "e": math.inf}})
    assert json.loads(wire) == {"return": {"a": 3, "b": 0.5, "c": None, "d": [1, 2], "e": None}}


# -- handshake -------------------------------------------------------------------------------------


def test_commands_before_negotiation_are_refused() -> None:
    s = session(negotiated=False)
    for cmd in ("query-status", "query-migrate", "no-such-command"):
        assert error(s, {"execute": cmd}) == (
            "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
    # structural errors are not replaced
    assert generic(s, {"arguments": {}}) == "QMP input lacks member 'execute'"
    assert ask(s, {"execute": "qmp_capabilities", "arguments": {}}) == {"return": {}}
    assert "return" in ask(s, {"execute": "query-status"})


def test_second_qmp_capabilities_is_refused() -> None:
    s = session()
    assert error(s, {"execute": "qmp_capabilities", "id": "x"}) == (
        "CommandNotFound", "Capabilities negotiation is already complete, command ignored")


def test_oob_is_not_offered() -> None:
    s = session(negotiated=False)
    assert generic(s, {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}) == \
        "Capability oob not available"
    assert generic(s, {"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}) == \
        "Parameter 'null' does not accept value 'foo'"
    assert generic(s, {"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}) == \
        "Invalid parameter type for 'enable', expected: array"
    assert generic(s, {"execute": "qmp_capabilities", "arguments": {"x": 1}}) == \
        "Parameter 'x' is unexpected"
    assert not s.negotiated
    assert ask(s, {"execute": "qmp_capabilities"}) == {"return": {}}


def test_no_events_before_negotiation() -> None:
    s = session(negotiated=False)
    assert s.event("MIGRATION", {"status": "active"}, 1.5) is None
    ask(s, {"execute": "qmp_capabilities"})
    msg = decode(s.event("MIGRATION", {"status": "active"}, 1700000000.25) or b"")
    assert msg == {"event": "MIGRATION", "data": {"status": "active"},
                   "timestamp": {"seconds": 1700000000, "microseconds": 250000}}


# -- id echo and dispatch --------------------------------------------------------------------------


@pytest.mark.parametrize("ident", [1, "abc", None, [1, {"a": 2}], {"x": [True]}, 2.5, -7])
def test_id_is_echoed_on_success_and_error(ident: Any) -> None:
    s = session()
    assert ask(s, {"execute": "query-status", "id": ident})["id"] == ident
    assert ask(s, {"execute": "nope", "id": ident})["id"] == ident
    assert ask(s, {"id": ident})["id"] == ident  # lacks 'execute'
    assert ask(s, {"execute": "query-status", "arguments": {"x": 1}, "id": ident})["id"] == ident
    pre = session(negotiated=False)
    assert ask(pre, {"execute": "query-status", "id": ident})["id"] == ident


def test_no_id_no_echo() -> None:
    s = session()
    assert "id" not in ask(s, {"execute": "query-status"})
    assert "id" not in ask(s, "[1]")


@pytest.mark.parametrize("text", ["3", "[1]", '"s"', "null", "true", "[]", "-2.5"])
def test_non_object_input(text: str) -> None:
    assert generic(session(), text) == "QMP input must be a JSON object"


def test_request_structure_errors() -> None:
    s = session()
    assert generic(s, {"id": 1}) == "QMP input lacks member 'execute'"
    assert generic(s, {}) == "QMP input lacks member 'execute'"
    assert generic(s, {"execute": 5}) == "QMP input member 'execute' must be a string"
    assert generic(s, {"execute": "query-status", "arguments": [1]}) == \
        "QMP input member 'arguments' must be an object"
    assert generic(s, {"execute": "query-status", "xyz": 1}) == \
        "QMP input member 'xyz' is unexpected"
    assert generic(s, {"exec-oob": "query-status"}) == "QMP input member 'exec-oob' is unexpected"
    assert error(s, {"execute": "foo"}) == ("CommandNotFound", "The command foo has not been found")


def test_query_commands_lists_every_command() -> None:
    names = [c["name"] for c in ask(session(), {"execute": "query-commands"})["return"]]
    assert names == list(COMMANDS)
    assert {"migrate", "migrate_cancel", "migrate-incoming", "query-migrate", "quit"} <= set(names)


def test_query_version_and_status() -> None:
    ep = FakeEndpoint()
    s = session(ep)
    assert ask(s, {"execute": "query-version"})["return"] == {
        "qemu": {"major": 9, "minor": 2, "micro": 1}, "package": "migsim"}
    assert ask(s, {"execute": "query-status"})["return"] == {"running": True, "status": "running"}
    ep.running = False
    assert ask(s, {"execute": "query-status"})["return"] == {"running": False, "status": "paused"}
    assert ep.calls[-1] == ("query_status", None)  # the endpoint tells its run state


def test_quit_ends_the_session() -> None:
    s = session()
    assert ask(s, {"execute": "quit", "id": 9}) == {"return": {}, "id": 9}
    assert s.closed
    assert s.feed(b'{"execute": "query-status"}') == []
    assert s.event("MIGRATION", {"status": "active"}, 0.0) is None


# -- endpoint errors -------------------------------------------------------------------------------


def test_endpoint_qmp_error_passes_class_and_text() -> None:
    ep = FakeEndpoint()
    s = session(ep)
    ep.migrating = True
    caps = {"capabilities": [{"capability": "xbzrle", "state": True}]}
    assert generic(s, {"execute": "migrate-set-capabilities", "arguments": caps}) == \
        "There's a migration process in progress"
    ep.fail_with = QmpError("Device not active", "DeviceNotActive")
    assert error(s, {"execute": "migrate_cancel"}) == ("DeviceNotActive", "Device not active")


def test_endpoint_bug_becomes_generic_error_and_session_survives() -> None:
    ep = FakeEndpoint()
    s = session(ep)
    ep.fail_with = ZeroDivisionError("division by zero")
    desc = generic(s, {"execute": "migrate_cancel", "id": 3})
    assert desc == "migsim: internal error in migrate_cancel: ZeroDivisionError: division by zero"
    ep.fail_with = None
    assert ask(s, {"execute": "migrate_cancel"}) == {"return": {}}


def test_unencodable_endpoint_reply_becomes_generic_error() -> None:
    ep = FakeEndpoint()
    ep.info = {"status": object()}
    s = session(ep)
    assert generic(s, {"execute": "query-migrate"}).startswith("migsim: internal error")


# -- argument checking (QEMU's visitor texts) --------------------------------------------------------


def set_caps(s: QmpSession, caps: Any) -> str:
    return generic(s, {"execute": "migrate-set-capabilities", "arguments": {"capabilities": caps}})


def set_params(s: QmpSession, **params: Any) -> dict[str, Any]:
    args = {k.replace("_", "-"): v for k, v in params.items()}
    return ask(s, {"execute": "migrate-set-parameters", "arguments": args})


def test_unexpected_argument() -> None:
    s = session()
    assert generic(s, {"execute": "query-status", "arguments": {"x": 1}}) == \
        "Parameter 'x' is unexpected"
    assert generic(s, {"execute": "migrate-set-parameters", "arguments": {"xyz": 1}}) == \
        "Parameter 'xyz' is unexpected"


def test_missing_argument() -> None:
    s = session()
    assert generic(s, {"execute": "migrate-set-capabilities"}) == \
        "Parameter 'capabilities' is missing"
    assert set_caps(s, [{"capability": "xbzrle"}]) == "Parameter 'capabilities[0].state' is missing"
    assert set_caps(s, [{"state": True}]) == "Parameter 'capabilities[0].capability' is missing"


def test_capability_list_types() -> None:
    s = session()
    assert set_caps(s, {"capability": "xbzrle"}) == \
        "Invalid parameter type for 'capabilities', expected: array"
    assert set_caps(s, ["xbzrle"]) == \
        "Invalid parameter type for 'capabilities[0]', expected: object"
    assert set_caps(s, [{"capability": "xbzrle", "state": True},
                        {"capability": "events", "state": "on"}]) == \
        "Invalid parameter type for 'capabilities[1].state', expected: boolean"
    assert set_caps(s, [{"capability": 1, "state": True}]) == \
        "Invalid parameter type for 'capabilities[0].capability', expected: string"
    assert set_caps(s, [{"capability": "foo", "state": True}]) == \
        "Parameter 'capability' does not accept value 'foo'"
    assert set_caps(s, [{"capability": "xbzrle", "state": True, "x": 1}]) == \
        "Parameter 'capabilities[0].x' is unexpected"


def test_capability_enum_is_the_endpoints() -> None:
    ep = FakeEndpoint(supports=("events",))
    s = session(ep)
    assert set_caps(s, [{"capability": "xbzrle", "state": True}]) == \
        "Parameter 'capability' does not accept value 'xbzrle'"
    assert ep.calls == []  # refused before the endpoint is asked
    caps = {"capabilities": [{"capability": "events", "state": True}]}
    assert ask(s, {"execute": "migrate-set-capabilities", "arguments": caps}) == {"return": {}}
    assert ep.enabled == {"events"}


def test_parameter_types() -> None:
    s = session()
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"xbzrle-cache-size": 1.5e8}}) == \
        "Parameter 'xbzrle-cache-size' expects uint64"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"downtime-limit": "300"}}) == \
        "Parameter 'downtime-limit' expects uint64"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"max-bandwidth": 2**64}}) == \
        "Parameter 'max-bandwidth' expects uint64"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"cpu-throttle-initial": 256}}) == \
        "Parameter 'cpu-throttle-initial' expects uint8_t"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"x-checkpoint-delay": 2**32}}) == \
        "Parameter 'x-checkpoint-delay' expects uint32_t"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"cpu-throttle-tailslow": 1}}) == \
        "Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"tls-creds": 5}}) == \
        "Invalid parameter type for 'tls-creds', expected: StrOrNull"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"multifd-compression": "lz4"}}) == \
        "Parameter 'multifd-compression' does not accept value 'lz4'"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"cpr-exec-command": ["a", 1]}}) == \
        "Invalid parameter type for 'cpr-exec-command[1]', expected: string"
    assert generic(s, {"execute": "migrate-set-parameters",
                       "arguments": {"block-bitmap-mapping": [{"node-name": "a", "alias": "b"}]}}
                   ) == "Parameter 'block-bitmap-mapping[0].bitmaps' is missing"


def test_first_bad_member_in_schema_order_is_reported() -> None:
    s = session()
    args = {"downtime-limit": "x", "announce-initial": "y", "zzz": 1}
    assert generic(s, {"execute": "migrate-set-parameters", "arguments": args}) == \
        "Parameter 'announce-initial' expects uint64"


def test_parameters_reach_the_endpoint_normalised() -> None:
    ep = FakeEndpoint()
    s = session(ep)
    assert set_params(s, downtime_limit=500, max_bandwidth=1250000000,
                      xbzrle_cache_size=268435456, tls_creds=None) == {"return": {}}
    assert ep.calls[-1] == ("migrate_set_parameters", {
        "downtime-limit": 500, "max-bandwidth": 1250000000, "xbzrle-cache-size": 268435456,
        "tls-creds": ""})
    set_params(s, downtime_limit=-1)  # QEMU takes negative uint64 values modulo 2**64
    assert ep.calls[-1] == ("migrate_set_parameters", {"downtime-limit": 2**64 - 1})
    assert ask(s, {"execute": "query-migrate-parameters"})["return"]["downtime-limit"] == 2**64 - 1


def test_migrate_uri_and_channels() -> None:
    ep = FakeEndpoint()
    s = session(ep)
    assert generic(s, {"execute": "migrate"}) == "need either 'uri' or 'channels' argument"
    main = {"channel-type": "main",
            "addr": {"transport": "socket", "type": "inet", "host": "10.0.0.2", "port": "4444"}}
    assert generic(s, {"execute": "migrate",
                       "arguments": {"uri": "tcp:a:1", "channels": [main]}}) == \
        "need either 'uri' or 'channels' argument"
    assert generic(s, {"execute": "migrate", "arguments": {"uri": "ftp:x"}}) == \
        "unknown migration protocol: ftp:x"
    assert generic(s, {"execute": "migrate", "arguments": {"uri": 4444}}) == \
        "Invalid parameter type for 'uri', expected: string"
    assert generic(s, {"execute": "migrate", "arguments": {"uri": "tcp:a:1", "resume": "no"}}) \
        == "Invalid parameter type for 'resume', expected: boolean"
    assert generic(s, {"execute": "migrate", "arguments": {"channels": [main, main]}}) == \
        "Channel list has more than one main entry"
    cpr = {"channel-type": "cpr", "addr": {"transport": "file", "filename": "/x", "offset": 0}}
    assert generic(s, {"execute": "migrate", "arguments": {"channels": [cpr]}}) == \
        "Channel list has no main entry"
    bad = {"channel-type": "main", "addr": {"transport": "socket", "type": "inet", "host": "h"}}
    assert generic(s, {"execute": "migrate", "arguments": {"channels": [bad]}}) == \
        "Parameter 'channels[0].addr.port' is missing"
    odd = {"channel-type": "main", "addr": {"transport": "socket", "type": "unix",
                                            "path": "/s", "host": "h"}}
    assert generic(s, {"execute": "migrate", "arguments": {"channels": [odd]}}) == \
        "Parameter 'channels[0].addr.host' is unexpected"
    assert generic(s, {"execute": "migrate", "arguments": {"channels": [
        {"channel-type": "main", "addr": {"transport": "pigeon"}}]}}) == \
        "Parameter 'transport' does not accept value 'pigeon'"
    assert ep.calls == []
    assert ask(s, {"execute": "migrate", "arguments": {"uri": "tcp:10.0.0.2:4444"}}) == \
        {"return": {}}
    assert ask(s, {"execute": "migrate", "arguments": {"channels": [main, cpr], "resume": True}}
               ) == {"return": {}}
    assert ep.calls == [("migrate", ("tcp:10.0.0.2:4444", None, False)),
                        ("migrate", (None, [main, cpr], True))]


def test_migrate_incoming_arguments() -> None:
    ep = FakeEndpoint("destination")
    s = session(ep)
    main = {"channel-type": "main", "addr": {"transport": "exec", "args": ["cat"]}}
    assert generic(s, {"execute": "migrate-incoming", "arguments": {"channels": [main, main]}}) \
        == "Channel list must have only one entry, for type 'main'"
    assert generic(s, {"execute": "migrate-incoming",
                       "arguments": {"uri": "tcp:0:4444", "exit-on-error": "no"}}) == \
        "Invalid parameter type for 'exit-on-error', expected: boolean"
    assert ask(s, {"execute": "migrate-incoming",
                   "arguments": {"uri": "tcp:0:4444", "exit-on-error": False}}) == {"return": {}}
    assert ep.calls == [("migrate_incoming", ("tcp:0:4444", None, False))]


# -- JSON parse errors and recovery ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "desc"), [
    ("@", "JSON parse error, stray '@'"),
    ("}", "JSON parse error, expecting value"),
    ('{"execute" "x"}', "JSON parse error, missing : in object pair"),
    ('{"execute": "x",}', "JSON parse error, expecting value"),
    ('{"execute": "x" "y": 1}', "JSON parse error, expected separator in dict"),
    ('{"a": [1 2]}', "JSON parse error, expected separator in list"),
    ("{1: 2}", "JSON parse error, key is not a string in object"),
    ('{"a": 1, "a": 2}', "JSON parse error, duplicate key"),
    ("foo", "JSON parse error, invalid keyword 'foo'"),
    ('{"a": tru}', "JSON parse error, invalid keyword 'tru'"),
    ('"\\x"', "JSON parse error, invalid escape sequence in string"),
    ('"\\ud800"', "JSON parse error, \\ud800 is not a valid Unicode character"),
    ("01", "JSON parse error, stray '01'"),
    ("-x", "JSON parse error, stray '-x'"),
    ("1.e5", "JSON parse error, stray '1.e'"),
])
def test_parse_errors_have_qemu_texts(text: str, desc: str) -> None:
    s = session()
    reply = ask(s, text)
    assert reply == {"error": {"class": "GenericError", "desc": desc}}
    assert "return" in ask(s, {"execute": "query-status"})  # and the session recovers


def test_invalid_utf8_is_reported_and_recovered() -> None:
    s = session()
    assert generic(s, b'{"execute": "\xc3\x28"}') == \
        "JSON parse error, invalid UTF-8 sequence in string"
    assert generic(s, b"\xff") == "JSON parse error, stray '\ufffd'"
    assert "return" in ask(s, {"execute": "query-status"})


def test_a_broken_message_gets_one_error_then_parsing_resumes() -> None:
    s = session()
    replies = [decode(r) for r in s.feed(
        b'{"execute": @ "query-status", "arguments": {"a": [1, 2]}, "id": 1}'
        b'{"execute": "query-status", "id": 2} '
        b'{"execute": "x", "arguments": {"a": [1, 2 3], "b": {}}, "id": 3}'
        b'{"execute": "query-status", "id": 4}')]
    assert [("error" in r, r.get("id")) for r in replies] == [
        (True, None), (False, 2), (True, None), (False, 4)]
    # a control character inside a string, then the next line
    replies = [decode(r) for r in s.feed(b'{"execute": "qu\x01ery"}\n{"execute": "quit"}\n')]
    assert [("error" in r) for r in replies] == [True, False]


def test_unfinished_message_is_reset_by_0xff_and_newline() -> None:
    s = session()
    assert s.feed(b'{"execute": "query-status", "arguments": {\n') == []
    replies = [decode(r) for r in s.feed(b'\xff\n{"execute": "query-status", "id": 5}\n')]
    assert replies[-1]["id"] == 5 and "return" in replies[-1]
    assert all("error" in r for r in replies[:-1]) and len(replies) == 2


def test_limits_message_size_depth_and_tokens() -> None:
    limits = Limits(max_message_bytes=4096, max_tokens=100, max_depth=8)
    s = QmpSession(FakeEndpoint(), limits=limits)
    ask(s, {"execute": "qmp_capabilities"})
    huge = json.dumps({"execute": "query-status", "id": "x" * 5000})
    assert generic(s, huge) == "JSON token size limit exceeded"
    assert generic(s, "[" * 20 + "]" * 20) == "JSON nesting depth limit exceeded"
    assert generic(s, json.dumps({"execute": "query-status", "id": list(range(200))})) == \
        "JSON token count limit exceeded"
    assert "return" in ask(s, {"execute": "query-status", "id": [[[1]]]})


def test_unfinished_token_is_held_only_up_to_the_limit() -> None:
    stream = JsonStream(Limits(max_message_bytes=1000))
    assert stream.feed(b'{"id": "' + b"a" * 900) == []
    out = stream.feed(b"a" * 200)
    assert out == [JsonError("JSON token size limit exceeded")]
    assert len(stream._pending) == 0
    assert stream.feed(b'a"}\n{"x": 1}') == [{"x": 1}]


def test_numbers_follow_qemu() -> None:
    values = parse_document(
        b"[9223372036854775807, 9223372036854775808, 18446744073709551616, -1, 1.0, 1e2, 0.5e-3]")
    assert values == [[2**63 - 1, 2**63, float(2**64), -1, 1.0, 100.0, 0.0005]]
    assert [type(v) for v in values[0]] == [int, int, float, int, float, float, float]


def test_deep_nesting_within_the_limit_is_parsed_without_recursion() -> None:
    depth = Limits().max_depth
    (value,) = parse_document("[" * depth + "]" * depth)
    for _ in range(depth - 1):
        value = value[0]
    assert value == []
