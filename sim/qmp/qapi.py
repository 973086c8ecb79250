"""A small QAPI type system: the argument schemas of the commands migsim serves, checked as QEMU's
generated visitors check them (QEMU ``qapi/qobject-input-visitor.c``, ``qapi/qapi-visit-core.c``).

The checks are structural only (types, mandatory members, unknown members, enum values); ranges
and states are the endpoint's business. The texts are QEMU's, all GenericError:

* ``Parameter 'capabilities' is missing`` (full path, e.g. ``capabilities[0].state``);
* ``Parameter 'x' is unexpected`` (full path);
* ``Invalid parameter type for 'capabilities[0].state', expected: boolean`` (also ``integer``,
  ``string``, ``number``, ``object``, ``array``, ``null``);
* ``Parameter 'xbzrle-cache-size' expects uint64`` (uint64 and size: any non-integer, or an
  integer outside int64..uint64; a negative int64 is taken modulo 2**64, as QEMU does);
* ``Parameter 'cpu-throttle-initial' expects uint8_t`` (uint8/16/32 out of range: the member's
  own name, ``null`` for a list element);
* ``Parameter 'capability' does not accept value 'foo'`` (own name, ``null`` in a list);
* ``Invalid parameter type for 'tls-creds', expected: StrOrNull`` (alternates).

The schema of ``migrate-set-parameters`` is built from :mod:`sim.parameters`, the one table of
migration parameters, so the QMP check and the endpoint's can only agree on names and types.

Members are visited in schema order, so the first offending member in schema order is the one
reported; unexpected members are reported after all declared members have been visited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from sim.parameters import PARAMETERS, Parameter

__all__ = [
    "Alternate", "ArgumentError", "Enum", "ListOf", "Member", "QType", "Scalar", "Struct",
    "Union_", "check",
]


class ArgumentError(Exception):
    """An argument does not fit the schema; ``desc`` is QEMU's GenericError text."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        super().__init__(desc)


@dataclass(frozen=True, slots=True)
class Scalar:
    """int (int64), uint8, uint16, uint32, uint64, size, bool, str, number, any, null."""

    kind: str


@dataclass(frozen=True, slots=True)
class Enum:
    """An enum: fixed ``values``, or looked up by ``name`` at check time (``enums`` argument of
    :func:`check`), which lets an endpoint's version decide which capabilities exist."""

    name: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListOf:
    element: QType


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type: QType
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Struct:
    name: str
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Union_:
    """A flat union: ``base`` members, one of them the enum ``discriminator``; its value picks the
    ``variants`` type (a Struct or a Union_), whose members sit in the same object."""

    name: str
    base: tuple[Member, ...]
    discriminator: str
    variants: Mapping[str, Struct | Union_] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alternate:
    """One of several JSON types (only StrOrNull is needed): ``branches`` are "str" / "null"."""

    name: str
    branches: tuple[str, ...]


QType = Union[Scalar, Enum, ListOf, Struct, Union_, Alternate]  # noqa: UP007

Path = tuple[str | int, ...]
EnumLookup = Callable[[str], Sequence[str] | None]

_UINT_MAX = {"uint8": (2**8 - 1, "uint8_t"), "uint16": (2**16 - 1, "uint16_t"),
             "uint32": (2**32 - 1, "uint32_t")}
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def _full(path: Path) -> str:
    """QEMU's full_name(): ``a.b[0].c``."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out or "<anonymous>"


def _own(path: Path) -> str:
    """The name the visitor was given: the member name, or "null" for a list element."""
    return path[-1] if path and isinstance(path[-1], str) else "null"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self, enums: EnumLookup | None) -> None:
        self.enums = enums

    def value(self, qtype: QType, v: Any, path: Path) -> Any:
        if isinstance(qtype, Scalar):
            return self.scalar(qtype.kind, v, path)
        if isinstance(qtype, Enum):
            if not isinstance(v, str):
                raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: string")
            values = self.enums(qtype.name) if self.enums is not None else None
            if values is None:
                values = qtype.values
            if v not in values:
                raise ArgumentError(f"Parameter '{_own(path)}' does not accept value '{v}'")
            return v
        if isinstance(qtype, ListOf):
            if not isinstance(v, list):
                raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: array")
            return [self.value(qtype.element, item, (*path, i)) for i, item in enumerate(v)]
        if isinstance(qtype, Alternate):
            if isinstance(v, str) and "str" in qtype.branches:
                return v
            if v is None and "null" in qtype.branches:
                return None
            raise ArgumentError(
                f"Invalid parameter type for '{_own(path)}', expected: {qtype.name}")
        # Struct or Union_
        if not isinstance(v, dict):
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: object")
        out: dict[str, Any] = {}
        self.members(qtype, v, path, out)
        for key in v:
            if key not in out:
                raise ArgumentError(f"Parameter '{_full((*path, key))}' is unexpected")
        return out

    def members(self, qtype: Struct | Union_, obj: dict[str, Any], path: Path,
                out: dict[str, Any]) -> None:
        declared = qtype.members if isinstance(qtype, Struct) else qtype.base
        for m in declared:
            if m.name not in obj:
                if m.optional:
                    continue
                raise ArgumentError(f"Parameter '{_full((*path, m.name))}' is missing")
            out[m.name] = self.value(m.type, obj[m.name], (*path, m.name))
        if isinstance(qtype, Union_):
            variant = qtype.variants.get(out[qtype.discriminator])
            if variant is not None:
                self.members(variant, obj, path, out)

    def scalar(self, kind: str, v: Any, path: Path) -> Any:
        if kind == "any":
            return v
        if kind == "int":
            if _is_int(v) and _INT64_MIN <= v <= _INT64_MAX:
                return v
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: integer")
        if kind in ("uint64", "size") or kind in _UINT_MAX:
            if _is_int(v) and 0 <= v <= _UINT64_MAX:
                value = v
            elif _is_int(v) and _INT64_MIN <= v < 0:
                value = v + 2**64  # QEMU accepts negative values "for backward compatibility"
            else:
                raise ArgumentError(f"Parameter '{_full(path)}' expects uint64")
            if kind in _UINT_MAX:
                limit, cname = _UINT_MAX[kind]
                if value > limit:
                    raise ArgumentError(f"Parameter '{_own(path)}' expects {cname}")
            return value
        if kind == "bool":
            if isinstance(v, bool):
                return v
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: boolean")
        if kind == "str":
            if isinstance(v, str):
                return v
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: string")
        if kind == "number":
            if _is_int(v) or isinstance(v, float):
                return float(v)
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: number")
        if kind == "null":
            if v is None:
                return None
            raise ArgumentError(f"Invalid parameter type for '{_full(path)}', expected: null")
        raise AssertionError(f"unknown scalar kind {kind!r}")


def check(qtype: Struct, args: dict[str, Any], enums: EnumLookup | None = None) -> dict[str, Any]:
    """Check a command's ``arguments`` object against its schema; returns the members given (with
    uint64 values normalised). Raises :class:`ArgumentError` with QEMU's text."""
    result = _Checker(enums).value(qtype, args, ())
    assert isinstance(result, dict)
    return result


# -- the schemas (QEMU qapi/*.json, as of 10.x) ------------------------------------------------

def _opt(name: str, qtype: QType) -> Member:
    return Member(name, qtype, optional=True)


STR, BOOL, UINT64, SIZE, UINT8, UINT16, UINT32 = (
    Scalar("str"), Scalar("bool"), Scalar("uint64"), Scalar("size"), Scalar("uint8"),
    Scalar("uint16"), Scalar("uint32"))
STR_OR_NULL = Alternate("StrOrNull", ("str", "null"))

QMP_CAPABILITY = Enum("QMPCapability", ("oob",))
MIGRATION_CAPABILITY = Enum("MigrationCapability")  # values: the endpoint's (see check())

MIGRATION_CAPABILITY_STATUS = Struct("MigrationCapabilityStatus", (
    Member("capability", MIGRATION_CAPABILITY), Member("state", BOOL)))

BITMAP_ALIAS = Struct("BitmapMigrationBitmapAlias", (
    Member("name", STR), Member("alias", STR),
    _opt("transform", Struct("BitmapMigrationBitmapAliasTransform", (_opt("persistent", BOOL),))),
))
NODE_ALIAS = Struct("BitmapMigrationNodeAlias", (
    Member("node-name", STR), Member("alias", STR), Member("bitmaps", ListOf(BITMAP_ALIAS))))

#: the QAPI types that sim.parameters names (an enum is named by its type, its values are the
#: parameter's choices)
_PARAMETER_TYPES: dict[str, QType] = {
    "uint8": UINT8, "uint32": UINT32, "uint64": UINT64, "size": SIZE, "bool": BOOL,
    "StrOrNull": STR_OR_NULL, "[str]": ListOf(STR),
    "[BitmapMigrationNodeAlias]": ListOf(NODE_ALIAS),
}


def _parameter_type(p: Parameter) -> QType:
    return Enum(p.qapi, p.choices) if p.choices else _PARAMETER_TYPES[p.qapi]


#: MigrateSetParameters, in schema order (REF §6.2): every parameter of sim.parameters
MIGRATE_SET_PARAMETERS = Struct("MigrateSetParameters", tuple(
    _opt(p.name, _parameter_type(p)) for p in PARAMETERS.values()))

INET_SOCKET_ADDRESS = Struct("InetSocketAddress", (
    Member("host", STR), Member("port", STR), _opt("numeric", BOOL), _opt("to", UINT16),
    _opt("ipv4", BOOL), _opt("ipv6", BOOL), _opt("keep-alive", BOOL),
    _opt("keep-alive-count", UINT32), _opt("keep-alive-idle", UINT32),
    _opt("keep-alive-interval", UINT32), _opt("mptcp", BOOL),
))
SOCKET_ADDRESS = Union_(
    "SocketAddress", (Member("type", Enum("SocketAddressType", ("inet", "unix", "vsock", "fd"))),),
    "type", {
        "inet": INET_SOCKET_ADDRESS,
        "unix": Struct("UnixSocketAddress", (Member("path", STR), _opt("abstract", BOOL),
                                             _opt("tight", BOOL))),
        "vsock": Struct("VsockSocketAddress", (Member("cid", STR), Member("port", STR))),
        "fd": Struct("FdSocketAddress", (Member("str", STR),)),
    })
MIGRATION_ADDRESS = Union_(
    "MigrationAddress",
    (Member("transport", Enum("MigrationAddressType", ("socket", "exec", "rdma", "file"))),),
    "transport", {
        "socket": SOCKET_ADDRESS,
        "exec": Struct("MigrationExecCommand", (Member("args", ListOf(STR)),)),
        "rdma": INET_SOCKET_ADDRESS,
        "file": Struct("FileMigrationArgs", (Member("filename", STR), Member("offset", UINT64))),
    })
MIGRATION_CHANNEL = Struct("MigrationChannel", (
    Member("channel-type", Enum("MigrationChannelType", ("main", "cpr"))),
    Member("addr", MIGRATION_ADDRESS),
))

INT = Scalar("int")
MIGRATION_STATUS = Enum("MigrationStatus", (
    "none", "setup", "cancelling", "cancelled", "active", "postcopy-active", "postcopy-paused",
    "postcopy-recover-setup", "postcopy-recover", "completed", "failed", "colo",
    "pre-switchover", "device", "wait-unplug"))
TIME_UNIT = Enum("TimeUnit", ("second", "millisecond"))
DIRTY_RATE_MODE = Enum("DirtyRateMeasureMode", ("page-sampling", "dirty-ring", "dirty-bitmap"))

NO_ARGS = Struct("")
ARGUMENTS: dict[str, Struct] = {
    "qmp_capabilities": Struct("", (_opt("enable", ListOf(QMP_CAPABILITY)),)),
    "query-version": NO_ARGS,
    "query-commands": NO_ARGS,
    "query-status": NO_ARGS,
    "query-migrate-capabilities": NO_ARGS,
    "migrate-set-capabilities": Struct("", (
        Member("capabilities", ListOf(MIGRATION_CAPABILITY_STATUS)),)),
    "query-migrate-parameters": NO_ARGS,
    "migrate-set-parameters": MIGRATE_SET_PARAMETERS,
    "query-migrate": NO_ARGS,
    "migrate": Struct("", (
        _opt("uri", STR), _opt("channels", ListOf(MIGRATION_CHANNEL)),
        _opt("detach", BOOL), _opt("resume", BOOL))),
    "migrate_cancel": NO_ARGS,
    "migrate-start-postcopy": NO_ARGS,
    "migrate-incoming": Struct("", (
        _opt("uri", STR), _opt("channels", ListOf(MIGRATION_CHANNEL)),
        _opt("exit-on-error", BOOL))),
    "stop": NO_ARGS,
    "cont": NO_ARGS,
    "query-name": NO_ARGS,
    "query-events": NO_ARGS,
    "query-qmp-schema": NO_ARGS,
    "query-migrationthreads": NO_ARGS,
    "migrate-continue": Struct("", (Member("state", MIGRATION_STATUS),)),
    "calc-dirty-rate": Struct("", (
        Member("calc-time", INT), _opt("calc-time-unit", TIME_UNIT), _opt("sample-pages", INT),
        _opt("mode", DIRTY_RATE_MODE))),
    "query-dirty-rate": Struct("", (_opt("calc-time-unit", TIME_UNIT),)),
    "human-monitor-command": Struct("", (Member("command-line", STR), _opt("cpu-index", INT))),
    "quit": NO_ARGS,
}

#: the events the server sends, with their data's type
EVENTS: dict[str, Struct] = {
    "MIGRATION": Struct("", (Member("status", MIGRATION_STATUS),)),
    "MIGRATION_PASS": Struct("", (Member("pass", INT),)),
    "STOP": NO_ARGS,
    "RESUME": NO_ARGS,
}
