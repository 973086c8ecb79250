"""One QMP session, without sockets: bytes in, reply messages out (REF §7).

:class:`QmpSession` holds one client's state over one endpoint:

* at connect, :meth:`QmpSession.greeting`:
  ``{"QMP": {"version": {"qemu": {"major": M, "minor": m, "micro": u}, "package": "migsim"},
  "capabilities": []}}`` (no OOB offered);
* capabilities negotiation: until ``qmp_capabilities`` succeeds every other command gets
  CommandNotFound "Expecting capabilities negotiation with 'qmp_capabilities'", and no events are
  delivered; a second ``qmp_capabilities`` gets CommandNotFound "Capabilities negotiation is
  already complete, command ignored"; ``{"enable": ["oob"]}`` gets GenericError "Capability oob
  not available" (QEMU's words when the monitor does not offer OOB);
* :meth:`QmpSession.feed` parses input with :class:`sim.qmp.json_stream.JsonStream` (framing,
  limits and error recovery are described there) and answers every complete message with exactly
  one ``{"return": ...}`` or ``{"error": {"class": ..., "desc": ...}}``, echoing ``id`` (any
  JSON value) whenever the request was an object carrying one;
* the request checks are QEMU's ``qmp_dispatch``: "QMP input must be a JSON object",
  "QMP input member 'execute' must be a string", "QMP input member 'arguments' must be an
  object", "QMP input member 'xyz' is unexpected", "QMP input lacks member 'execute'",
  CommandNotFound "The command foo has not been found"; then the arguments are checked against
  the command's schema (:mod:`sim.qmp.qapi`), then the endpoint method runs;
* :class:`sim.errors.QmpError` from the endpoint becomes ``{"error": {"class": e.error_class,
  "desc": e.desc}}``; any other exception is logged and becomes a GenericError
  "migsim: internal error in <command>: <Type>: <message>" -- the session survives;
* ``quit`` answers ``{"return": {}}`` and ends *this session* (:attr:`QmpSession.closed`; the
  server then closes the connection). QEMU would exit; the simulated guests and the server stay.

Output: each message is one JSON object, ASCII only (``\\uXXXX`` escapes), followed by CRLF.
Values that JSON cannot carry are made safe first: numpy scalars become Python numbers and a
non-finite float (NaN, infinity) becomes ``null``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sim.errors import QmpError

from . import hmp, introspect
from .json_stream import JsonError, JsonStream, Limits
from .qapi import ARGUMENTS, EVENTS, ArgumentError, check

__all__ = [
    "COMMANDS", "EndpointLike", "Limits", "QmpSession", "encode", "event_message",
    "parse_uri",
]

log = logging.getLogger("sim.qmp")

PACKAGE = "migsim"
#: the recursion a reply may have (ids are echoed as sent, and sent ids nest at most max_depth)
_MAX_JSON_DEPTH = 400


class EndpointLike(Protocol):
    """What a session needs of an endpoint (``sim.endpoints.Endpoint`` has it all)."""

    role: str
    version: tuple[int, int, int]

    @property
    def running(self) -> bool: ...
    def query_status(self) -> dict[str, Any]: ...
    def stop(self) -> None: ...
    def cont(self) -> None: ...
    def query_name(self) -> dict[str, Any]: ...
    def query_migrationthreads(self) -> list[dict[str, Any]]: ...
    def migrate_continue(self, state: str) -> None: ...
    def calc_dirty_rate(self, calc_time: int, calc_time_unit: str = "second",
                        sample_pages: int | None = None, mode: str = "page-sampling") -> None: ...
    def query_dirty_rate(self, calc_time_unit: str | None = None) -> dict[str, Any]: ...
    def query_migrate_capabilities(self) -> list[dict[str, Any]]: ...
    def migrate_set_capabilities(self, capabilities: list[dict[str, Any]]) -> None: ...
    def query_migrate_parameters(self) -> dict[str, Any]: ...
    def migrate_set_parameters(self, params: dict[str, Any]) -> None: ...
    def query_migrate(self) -> dict[str, Any]: ...
    def migrate(self, uri: str | None = None, channels: list[Any] | None = None,
                resume: bool = False) -> None: ...
    def migrate_cancel(self) -> None: ...
    def migrate_start_postcopy(self) -> None: ...
    def migrate_incoming(self, uri: str | None = None, channels: list[Any] | None = None,
                         exit_on_error: bool = True) -> None: ...


# -- output --------------------------------------------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts: numpy scalars -> Python numbers,
    non-finite floats -> None, tuples -> lists. Raises TypeError for anything else."""
    if depth > _MAX_JSON_DEPTH:
        raise ValueError("reply nests too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return _jsonable(item(), depth + 1)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(message: dict[str, Any]) -> bytes:
    """One wire message: compact-ish JSON like QEMU's, ASCII, CRLF-terminated."""
    return json.dumps(_jsonable(message), ensure_ascii=True, allow_nan=False).encode() + b"\r\n"


def _error(desc: str, error_class: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}}


def event_message(name: str, data: dict[str, Any], timestamp: float) -> dict[str, Any]:
    """``{"event": NAME, "data": {...}, "timestamp": {"seconds": s, "microseconds": us}}``."""
    seconds = math.floor(timestamp)
    micro = min(int(round((timestamp - seconds) * 1e6)), 999999)
    return {"event": name, "data": data,
            "timestamp": {"seconds": int(seconds), "microseconds": micro}}


# -- URIs and channels (migration/channel.c, migration.c) -----------------------------------------

_URI_SCHEMES = ("exec:", "rdma:", "tcp:", "unix:", "vsock:", "fd:", "file:")


def parse_uri(uri: str) -> str:
    """The transport of a migration URI; QEMU's error for an unknown one."""
    for scheme in _URI_SCHEMES:
        if uri.startswith(scheme):
            return scheme[:-1]
    raise QmpError(f"unknown migration protocol: {uri}")


def _check_address(uri: str | None, channels: list[dict[str, Any]] | None, *,
                   incoming: bool) -> None:
    """QEMU's checks of ``uri`` / ``channels`` before anything else happens."""
    if (uri is None) == (channels is None):
        raise QmpError("need either 'uri' or 'channels' argument")
    if channels is not None:
        if incoming and len(channels) > 1:
            raise QmpError("Channel list must have only one entry, for type 'main'")
        seen: set[str] = set()
        for channel in channels:
            kind = channel["channel-type"]
            if kind in seen:
                raise QmpError(f"Channel list has more than one {kind} entry")
            seen.add(kind)
        if "main" not in seen:
            raise QmpError("Channel list has no main entry")
    else:
        assert uri is not None
        parse_uri(uri)


# -- commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Callable[[QmpSession, dict[str, Any]], Any]


def _qmp_capabilities(s: QmpSession, args: dict[str, Any]) -> Any:
    if s.negotiated:
        raise QmpError("Capabilities negotiation is already complete, command ignored",
                       "CommandNotFound")
    unavailable = [c for c in args.get("enable", []) if c not in s.offered]
    if unavailable:
        raise QmpError(f"Capability {', '.join(dict.fromkeys(unavailable))} not available")
    s.negotiated = True
    return {}


def _query_version(s: QmpSession, args: dict[str, Any]) -> Any:
    major, minor, micro = (int(x) for x in tuple(s.endpoint.version)[:3])
    return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": s.package}


def _query_commands(s: QmpSession, args: dict[str, Any]) -> Any:
    return [{"name": name} for name in COMMANDS]


def _query_status(s: QmpSession, args: dict[str, Any]) -> Any:
    """StatusInfo: QEMU's RunState, as the endpoint tells it."""
    return s.endpoint.query_status()


def _stop(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.stop()
    return {}


def _cont(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.cont()
    return {}


def _query_name(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_name()


def _query_events(s: QmpSession, args: dict[str, Any]) -> Any:
    return [{"name": name} for name in EVENTS]


def _query_qmp_schema(s: QmpSession, args: dict[str, Any]) -> Any:
    return introspect.schema(ARGUMENTS, EVENTS, s._enum_values)


def _query_migrationthreads(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_migrationthreads()


def _migrate_continue(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.migrate_continue(args["state"])
    return {}


def _calc_dirty_rate(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.calc_dirty_rate(args["calc-time"], args.get("calc-time-unit", "second"),
                               args.get("sample-pages"), args.get("mode", "page-sampling"))
    return {}


def _query_dirty_rate(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_dirty_rate(args.get("calc-time-unit"))


def _human_monitor_command(s: QmpSession, args: dict[str, Any]) -> Any:
    return hmp.run(s.endpoint, args["command-line"])


def _query_migrate_capabilities(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_migrate_capabilities()


def _migrate_set_capabilities(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.migrate_set_capabilities(
        [{"capability": c["capability"], "state": c["state"]} for c in args["capabilities"]])
    return {}


def _query_migrate_parameters(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_migrate_parameters()


def _migrate_set_parameters(s: QmpSession, args: dict[str, Any]) -> Any:
    params = dict(args)
    for name in ("tls-creds", "tls-hostname", "tls-authz"):
        if name in params and params[name] is None:
            params[name] = ""  # StrOrNull: null resets to "" (QEMU)
    s.endpoint.migrate_set_parameters(params)
    return {}


def _query_migrate(s: QmpSession, args: dict[str, Any]) -> Any:
    return s.endpoint.query_migrate()


def _migrate(s: QmpSession, args: dict[str, Any]) -> Any:
    uri, channels = args.get("uri"), args.get("channels")
    _check_address(uri, channels, incoming=False)
    s.endpoint.migrate(uri=uri, channels=channels, resume=bool(args.get("resume", False)))
    return {}


def _migrate_cancel(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.migrate_cancel()
    return {}


def _migrate_start_postcopy(s: QmpSession, args: dict[str, Any]) -> Any:
    s.endpoint.migrate_start_postcopy()
    return {}


def _migrate_incoming(s: QmpSession, args: dict[str, Any]) -> Any:
    uri, channels = args.get("uri"), args.get("channels")
    _check_address(uri, channels, incoming=True)
    s.endpoint.migrate_incoming(uri=uri, channels=channels,
                                exit_on_error=bool(args.get("exit-on-error", True)))
    return {}


def _quit(s: QmpSession, args: dict[str, Any]) -> Any:
    s.closed = True
    return {}


#: every command served, in query-commands order
COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("qmp_capabilities", _qmp_capabilities),
    Command("query-version", _query_version),
    Command("query-commands", _query_commands),
    Command("query-status", _query_status),
    Command("query-migrate-capabilities", _query_migrate_capabilities),
    Command("migrate-set-capabilities", _migrate_set_capabilities),
    Command("query-migrate-parameters", _query_migrate_parameters),
    Command("migrate-set-parameters", _migrate_set_parameters),
    Command("query-migrate", _query_migrate),
    Command("migrate", _migrate),
    Command("migrate_cancel", _migrate_cancel),
    Command("migrate-start-postcopy", _migrate_start_postcopy),
    Command("migrate-incoming", _migrate_incoming),
    Command("stop", _stop),
    Command("cont", _cont),
    Command("query-name", _query_name),
    Command("query-events", _query_events),
    Command("query-qmp-schema", _query_qmp_schema),
    Command("query-migrationthreads", _query_migrationthreads),
    Command("migrate-continue", _migrate_continue),
    Command("calc-dirty-rate", _calc_dirty_rate),
    Command("query-dirty-rate", _query_dirty_rate),
    Command("human-monitor-command", _human_monitor_command),
    Command("quit", _quit),
)}
assert set(COMMANDS) == set(ARGUMENTS)

_NEGOTIATION_COMMANDS = ("qmp_capabilities",)


# -- the session ---------------------------------------------------------------------------------


class QmpSession:
    """One client of one endpoint: the greeting, the handshake, commands and events."""

    def __init__(self, endpoint: Any, *, limits: Limits | None = None,
                 package: str = PACKAGE, offered: Sequence[str] = ()) -> None:
        self.endpoint = endpoint
        self.package = package
        self.offered = tuple(offered)  # QMP capabilities offered in the greeting (none: no OOB)
        self.negotiated = False
        self.closed = False
        self.stream = JsonStream(limits)
        self.requests = 0

    def greeting(self) -> bytes:
        version = _query_version(self, {})
        return encode({"QMP": {"version": version, "capabilities": list(self.offered)}})

    def feed(self, data: bytes) -> list[bytes]:
        """Parse ``data`` and answer each complete message (nothing more once closed)."""
        replies: list[bytes] = []
        if self.closed:
            return replies
        for item in self.stream.feed(data):
            replies.append(self._reply(item))
            if self.closed:
                break
        return replies

    def event(self, name: str, data: dict[str, Any], timestamp: float) -> bytes | None:
        """The wire form of an event for this client, or None before the handshake / once
        closed."""
        if not self.negotiated or self.closed:
            return None
        return encode(event_message(name, data, timestamp))

    def handle(self, request: Any) -> dict[str, Any]:
        """One parsed request -> its reply message (with ``id`` when the request had one)."""
        self.requests += 1
        if not isinstance(request, dict):
            return _error("QMP input must be a JSON object")
        reply = self._dispatch(request)
        if "id" in request:
            reply["id"] = request["id"]
        return reply

    def _reply(self, item: Any) -> bytes:
        if isinstance(item, JsonError):
            return encode(_error(item.desc))
        reply = self.handle(item)
        try:
            return encode(reply)
        except (TypeError, ValueError) as err:  # an endpoint returned something odd
            log.exception("QMP reply cannot be encoded")
            fallback = _error(f"migsim: internal error: reply cannot be encoded: {err}")
            if "id" in reply:
                fallback["id"] = reply["id"]
            try:
                return encode(fallback)
            except (TypeError, ValueError):
                return encode(_error(fallback["error"]["desc"]))

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        execute: str | None = None
        for key, value in request.items():
            if key == "execute":
                if not isinstance(value, str):
                    return _error("QMP input member 'execute' must be a string")
                execute = value
            elif key == "arguments":
                if not isinstance(value, dict):
                    return _error("QMP input member 'arguments' must be an object")
            elif key != "id":
                return _error(f"QMP input member '{key}' is unexpected")
        if execute is None:
            return _error("QMP input lacks member 'execute'")
        command = COMMANDS.get(execute)
        if command is None or (not self.negotiated and execute not in _NEGOTIATION_COMMANDS):
            if not self.negotiated:
                return _error("Expecting capabilities negotiation with 'qmp_capabilities'",
                              "CommandNotFound")
            return _error(f"The command {execute} has not been found", "CommandNotFound")
        try:
            args = check(ARGUMENTS[execute], request.get("arguments", {}), self._enum_values)
        except ArgumentError as err:
            return _error(err.desc)
        try:
            result = command.handler(self, args)
        except QmpError as err:
            return _error(str(err.desc), str(err.error_class))
        except Exception as err:  # a bug below us must not end the session
            log.exception("QMP command %s failed", execute)
            return _error(f"migsim: internal error in {execute}: {type(err).__name__}: {err}")
        try:
            result = _jsonable(result)
        except (TypeError, ValueError) as err:
            log.exception("QMP command %s returned an unencodable value", execute)
            return _error(f"migsim: internal error in {execute}: {err}")
        return {"return": {} if result is None else result}

    def _enum_values(self, name: str) -> Sequence[str] | None:
        """The MigrationCapability enum of this endpoint's QEMU: the capabilities it lists."""
        if name != "MigrationCapability":
            return None
        try:
            caps = self.endpoint.query_migrate_capabilities()
            return [str(c["capability"]) for c in caps]
        except Exception:  # let the endpoint itself refuse
            from sim.capabilities import CAPABILITIES
            return list(CAPABILITIES)
