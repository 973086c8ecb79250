"""QEMU's migration parameters (REF §6.2), each described once: the one table every layer reads.

A :class:`Parameter` is one member of ``query-migrate-parameters``: its QMP name, its QAPI type,
what a fresh QEMU shows, the :class:`~sim.spec.MigrationSpec` field it is (``None`` for the
parameters migsim accepts and shows but does not model: TLS, announce, COLO, ...), its QEMU unit
and the scale to the spec's SI unit, the range and choices QEMU accepts, and QEMU's complaint
when a value is out of range. From this table come:

* the QAPI schema of ``migrate-set-parameters`` (:data:`sim.qmp.qapi.MIGRATE_SET_PARAMETERS`);
* the bounds and choices of the spec's parameter fields (:func:`spec_metadata`, read by the
  scenario loader), and so the YAML checks;
* ``query-migrate-parameters`` (:func:`to_qmp`), ``migrate-set-parameters``' range checks
  (:func:`refusal`) and what a change does to a spec (:func:`apply`).

Values in a spec are SI (seconds, bytes/s); QMP values are QEMU's integers (ms, bytes/s, MB/s).
A spec is never converted on its way to the engine: :func:`to_qmp` only renders it for a QMP
client, rounding to QEMU's units, and :func:`apply` converts only the parameters a client set.

The texts are QEMU 10.1+'s (``migrate_params_check`` in ``migration/options.c``), in QEMU's
spelling, which uses the C names; QEMU's own typo in the ``max-cpu-throttle`` text is kept.

Model notes (departures from QEMU):
* A change is checked on the parameters it names (and on a rule that ties one of them to another);
  QEMU re-checks every parameter each time, which only differs when a scenario holds a value
  QEMU's integers cannot (0.4 ms shows as 0).
* ``block-bitmap-mapping`` is stored and shown, not checked further: migsim has no block devices.
* The checks that depend on capabilities (zero-copy-send or mapped-ram with compression or TLS)
  and the texts of QEMU releases before 10.1 ("Parameter 'x' expects ...") are not modelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .choices import MULTIFD_COMPRESSION
from .units import MiB

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: a MigrationSpec. sim.spec reads its bounds from this module, so this one cannot import it back:
#: it sees a spec as a dataclass with the fields the table names.
Spec = TypeVar("Spec", bound="DataclassInstance")

__all__ = ["CHECK_ORDER", "INTEGER_TYPES", "PARAMETERS", "Parameter", "apply", "refusal",
           "spec_metadata", "to_qmp", "unmodelled"]

UINT64_MAX = 2**64 - 1

#: the integer QAPI types of the table and the values they hold (QMP input wraps negatives, REF §7)
INTEGER_TYPES: dict[str, tuple[int, int]] = {
    "uint8": (0, 2**8 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, UINT64_MAX),
    "size": (0, UINT64_MAX),
}

#: QEMU units (what a person reads in QEMU's docs) -> the spec's unit kind (sim.units)
_SPEC_UNITS = {"ms": "time", "bytes": "size", "bytes/s": "rate", "MB/s": "rate"}


@dataclass(frozen=True, slots=True)
class Parameter:
    """One migration parameter, as QEMU defines it and as migsim models it."""

    name: str  # QMP name (hyphenated)
    qapi: str  # QAPI type: an INTEGER_TYPES key, bool, StrOrNull, [str], [...], or an enum's name
    default: Any  # what a fresh QEMU shows (None: absent until set)
    field: str | None = None  # the MigrationSpec field, None: accepted and shown, not modelled
    unit: str = ""  # QEMU's unit: ms | bytes | bytes/s | MB/s | % | "" (a count, a level, ...)
    scale: float = 1  # QMP value × scale = the spec's SI value (ms → s: 1e-3; MB/s → B/s: MiB)
    lo: int | None = None  # QEMU's own range check (None: only the QAPI type's limit)
    hi: int | None = None
    choices: tuple[str, ...] = ()  # an enum's values
    error: str = ""  # QEMU's text when the value fails the range check (or the rule below)
    floor: str | None = None  # a parameter whose value is a further lower bound
    page_power_of_two: bool = False  # QEMU: a power of two no less than the target page size

    @property
    def modelled(self) -> bool:
        return self.field is not None

    @property
    def range(self) -> tuple[int, int] | None:
        """The values QEMU accepts: its check within the QAPI type's own (None: not an integer)."""
        limits = INTEGER_TYPES.get(self.qapi)
        if limits is None:
            return None
        lo = limits[0] if self.lo is None else self.lo
        hi = limits[1] if self.hi is None else self.hi
        return lo, hi

    def to_spec(self, value: Any) -> Any:
        """A QMP value as the spec holds it (SI units)."""
        if self.scale != 1:
            return value * self.scale
        return list(value) if isinstance(value, list) else value

    def to_qmp(self, value: Any) -> Any:
        """A spec value as QEMU shows it: an integer in QEMU's unit, rounded to the nearest."""
        if value is None:  # max_bandwidth left to the version (see sim.engine.profiles.resolve)
            return self.default
        if self.qapi in INTEGER_TYPES:
            return int(round(value / self.scale))
        return list(value) if isinstance(value, list | tuple) else value


def _option(c_name: str, expects: str) -> str:
    return f"Option {c_name} expects {expects}"


#: REF §6.2, in query-migrate-parameters order (which is also MigrateSetParameters' order)
PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("announce-initial", "size", 50, unit="ms", hi=100000,
              error=_option("announce_initial", "a value between 0 and 100000")),
    Parameter("announce-max", "size", 550, unit="ms", hi=100000,
              error=_option("announce_max", "a value between 0 and 100000")),
    Parameter("announce-rounds", "size", 5, hi=1000,
              error=_option("announce_rounds", "a value between 0 and 1000")),
    Parameter("announce-step", "size", 100, unit="ms", lo=1, hi=10000,
              error=_option("announce_step", "a value between 0 and 10000")),
    Parameter("throttle-trigger-threshold", "uint8", 50, "throttle_trigger_threshold", "%",
              lo=1, hi=100, error=_option("throttle_trigger_threshold",
                                          "an integer in the range of 1 to 100")),
    Parameter("cpu-throttle-initial", "uint8", 20, "cpu_throttle_initial", "%", lo=1, hi=99,
              error=_option("cpu_throttle_initial", "an integer in the range of 1 to 99")),
    Parameter("cpu-throttle-increment", "uint8", 10, "cpu_throttle_increment", "%", lo=1, hi=99,
              error=_option("cpu_throttle_increment", "an integer in the range of 1 to 99")),
    Parameter("cpu-throttle-tailslow", "bool", False, "cpu_throttle_tailslow"),
    Parameter("tls-creds", "StrOrNull", ""),
    Parameter("tls-hostname", "StrOrNull", ""),
    Parameter("tls-authz", "StrOrNull", ""),
    # QEMU's check is "at most SIZE_MAX": the QAPI type already says so
    Parameter("max-bandwidth", "size", 128 * MiB, "max_bandwidth", "bytes/s"),
    Parameter("avail-switchover-bandwidth", "size", 0, "avail_switchover_bandwidth", "bytes/s"),
    # QEMU prints its macro, unexpanded: "(2000 * 1000)"
    Parameter("downtime-limit", "uint64", 300, "downtime_limit", "ms", scale=1e-3, hi=2000000,
              error=_option("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")),
    Parameter("x-checkpoint-delay", "uint32", 20000, unit="ms"),
    Parameter("multifd-channels", "uint8", 2, "multifd_channels", lo=1,
              error=_option("multifd_channels", "a value between 1 and 255")),
    Parameter("xbzrle-cache-size", "size", 64 * MiB, "xbzrle_cache_size", "bytes",
              page_power_of_two=True,
              error=_option("xbzrle_cache_size",
                            "a power of two no less than the target page size")),
    Parameter("max-postcopy-bandwidth", "size", 0, "max_postcopy_bandwidth", "bytes/s"),
    Parameter("max-cpu-throttle", "uint8", 99, "max_cpu_throttle", "%", lo=1, hi=99,
              floor="cpu-throttle-initial",
              error="max_Option cpu_throttle expects an integer in the range of "
                    "cpu_throttle_initial to 99"),
    Parameter("multifd-compression", "MultiFDCompression", "none", "multifd_compression",
              choices=MULTIFD_COMPRESSION),
    Parameter("multifd-zlib-level", "uint8", 1, "multifd_zlib_level", hi=9,
              error=_option("multifd_zlib_level", "a value between 0 and 9")),
    Parameter("multifd-qatzip-level", "uint8", 1, lo=1, hi=9,
              error=_option("multifd_qatzip_level", "a value between 1 and 9")),
    Parameter("multifd-zstd-level", "uint8", 1, "multifd_zstd_level", hi=20,
              error=_option("multifd_zstd_level", "a value between 0 and 20")),
    Parameter("block-bitmap-mapping", "[BitmapMigrationNodeAlias]", None),
    Parameter("x-vcpu-dirty-limit-period", "uint64", 1000, unit="ms", lo=1, hi=1000,
              error=_option("x-vcpu-dirty-limit-period", "a value between 1 and 1000")),
    # QEMU says MB/s; migsim reads them as MiB/s (sim.spec)
    Parameter("vcpu-dirty-limit", "uint64", 1, "vcpu_dirty_limit", "MB/s", scale=MiB, lo=1,
              error="Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s"),
    Parameter("mode", "MigMode", "normal",
              choices=("normal", "cpr-reboot", "cpr-transfer", "cpr-exec")),
    Parameter("zero-page-detection", "ZeroPageDetection", "multifd", "zero_page_detection",
              choices=("none", "legacy", "multifd")),
    Parameter("direct-io", "bool", False),
    Parameter("cpr-exec-command", "[str]", []),
)}

#: the order of QEMU's checks (migrate_params_check): of several bad values, the first is reported
CHECK_ORDER: tuple[str, ...] = (
    "throttle-trigger-threshold", "cpu-throttle-initial", "cpu-throttle-increment",
    "downtime-limit", "multifd-channels", "multifd-zlib-level", "multifd-qatzip-level",
    "multifd-zstd-level", "xbzrle-cache-size", "max-cpu-throttle", "announce-initial",
    "announce-max", "announce-rounds", "announce-step", "x-vcpu-dirty-limit-period",
    "vcpu-dirty-limit",
)
assert set(CHECK_ORDER) == {p.name for p in PARAMETERS.values() if p.error}, \
    "CHECK_ORDER must list every parameter with a check, once"
assert all(PARAMETERS[p.floor].field is not None and p.field is not None
           for p in PARAMETERS.values() if p.floor is not None)


def spec_metadata(name: str) -> dict[str, Any]:
    """The :class:`~sim.spec.MigrationSpec` field metadata of parameter ``name``: the QMP name,
    the unit kind, and QEMU's range (in SI units) and choices, as the scenario loader reads them.

    A 64-bit type's own limit is not carried over: the loader refuses absurd numbers by itself.
    """
    p = PARAMETERS[name]
    meta: dict[str, Any] = {"qmp": name}
    if p.unit in _SPEC_UNITS:
        meta["unit"] = _SPEC_UNITS[p.unit]
    limits = p.range
    if limits is not None:
        lo, hi = limits
        meta["ge"] = p.to_spec(lo) if lo else 0
        if p.hi is not None or hi < UINT64_MAX:
            meta["le"] = p.to_spec(hi)
    if p.choices:
        meta["choices"] = p.choices
    return meta


def unmodelled(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters migsim does not model, as QMP values: those of ``changes``, or, with none
    given, a fresh QEMU's (``block-bitmap-mapping`` is absent until set). A ``null`` TLS value
    resets it to "" (QEMU)."""
    if changes is None:
        return {p.name: p.to_qmp(p.default) for p in PARAMETERS.values()
                if not p.modelled and p.default is not None}
    out: dict[str, Any] = {}
    for name, value in changes.items():
        p = PARAMETERS[name]
        if not p.modelled:
            out[name] = "" if value is None and p.qapi == "StrOrNull" else p.to_spec(value)
    return out


def to_qmp(spec: DataclassInstance, extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``query-migrate-parameters`` of an endpoint whose parameters are ``spec`` (plus the
    unmodelled ones in ``extras``, QMP values; missing ones show QEMU's default)."""
    extras = unmodelled() if extras is None else extras
    out: dict[str, Any] = {}
    for p in PARAMETERS.values():
        if p.field is not None:
            out[p.name] = p.to_qmp(getattr(spec, p.field))
        elif p.name in extras:
            out[p.name] = p.to_qmp(extras[p.name])
        elif p.default is not None:
            out[p.name] = p.to_qmp(p.default)
    return out


def apply(spec: Spec, changes: Mapping[str, Any]) -> Spec:
    """``spec`` with the modelled parameters among ``changes`` (QMP names and values, as
    ``migrate-set-parameters`` takes them) set; only those are converted. The unmodelled ones
    have no place in a spec: see :func:`unmodelled`. An unknown name raises ``KeyError``."""
    fields = {p.field: p.to_spec(changes[p.name])
              for p in (PARAMETERS[name] for name in changes) if p.field is not None}
    return dataclasses.replace(spec, **fields) if fields else spec


def refusal(changes: Mapping[str, Any], current: DataclassInstance, page_size: int) -> str | None:
    """QEMU's complaint about ``changes`` to an endpoint whose parameters are ``current``, or
    None when it takes them all. ``changes`` have passed the QAPI check (known names, values of
    their types). The first failing check in QEMU's order is the one reported.

    As QEMU, a rule between two parameters (``max-cpu-throttle`` at least
    ``cpu-throttle-initial``) is checked on the values after the change; unlike QEMU, the
    parameters not given are not checked again (a scenario may hold values QEMU's integers
    cannot, such as 0.4 ms).
    """
    for name in CHECK_ORDER:
        p = PARAMETERS[name]
        if name not in changes and not (p.floor is not None and p.floor in changes):
            continue
        value = changes[name] if name in changes else _qmp_value(p, current)
        if _refuses(p, value, changes, current, page_size):
            return p.error
    return None


def _refuses(p: Parameter, value: Any, changes: Mapping[str, Any], current: DataclassInstance,
             page_size: int) -> bool:
    if p.page_power_of_two:
        return bool(value < page_size or value & (value - 1))
    if p.lo is not None and value < p.lo:
        return True
    if p.hi is not None and value > p.hi:
        return True
    if p.floor is not None:
        floor = PARAMETERS[p.floor]
        return bool(value < (changes[floor.name] if floor.name in changes
                             else _qmp_value(floor, current)))
    return False


def _qmp_value(p: Parameter, spec: DataclassInstance) -> Any:
    assert p.field is not None
    return p.to_qmp(getattr(spec, p.field))
