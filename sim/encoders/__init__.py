"""Page encoders, in QEMU's order: zero-page test, then XBZRLE delta, then plug-ins, else raw.

``ENCODERS`` is the registry (name → class): the built-ins, then plug-ins in registration
order, which is the order the engine tries them in (after XBZRLE, before raw). Each encoder
states the capability that switches it on (``None``: always available) and whether it needs the
page as last sent (``needs_previous``, taken from the source's page cache, which then exists even
without XBZRLE). ``register_encoder`` adds one, registering its capability with
:mod:`sim.capabilities` so that negotiation, QMP and the tables handle it like XBZRLE (DESIGN §9).

The engine runs the built-ins through compiled fast paths in :mod:`sim.engine.kernel` with QEMU's
record sizes (REF §2.7, ``wire:``). Plug-ins run through ``encode_batch`` on synthetic pages to
build modelled size tables, and through ``encode``/``decode`` page by page in exact mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .. import capabilities
from ..errors import PluginError
from . import xbzrle as _xbzrle

#: entry-point group through which installed packages register encoders (read by sim.plugins)
ENTRY_POINT_GROUP = "migsim.encoders"


def call_plugin(encoder: Encoder, method: str, *args: object) -> object:
    """``encoder.method(*args)``, with whatever the plug-in's code does wrong (an exception, a
    ``sys.exit``) turned into one :class:`~sim.errors.PluginError` line that names it. Ctrl-C
    still interrupts."""
    try:
        return getattr(encoder, method)(*args)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure of foreign code
        what = (f"called sys.exit({err.code!r})" if isinstance(err, SystemExit)
                else f"raised {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        raise PluginError(f"plug-in encoder {encoder.name!r}: {method}() {what}") from None


def check_payload(encoder: Encoder, payload: object) -> bytes | None:
    """A plug-in's ``encode`` result: bytes-like or None, else a PluginError naming it."""
    if payload is None or isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise PluginError(f"plug-in encoder {encoder.name!r}: encode() returned "
                      f"{type(payload).__name__}; it must return bytes or None")


class Encoder:
    """Base class: one way to put a page on the wire.

    Subclass it, set ``name`` and ``capability`` (and ``needs_previous`` for a delta), write
    ``encode`` and ``decode``, and decorate the class with :func:`register_encoder`.
    """

    name: ClassVar[str]
    capability: ClassVar[str | None] = None
    needs_previous: ClassVar[bool] = False
    #: wire bytes of a record besides its payload (QEMU's page header + length, as XBZRLE's 11)
    header: ClassVar[int] = 11
    #: the RAM-flag value of its records; a destination that does not know it reports it
    record_flag: ClassVar[int] = 0x1000
    #: the capability changes more than the wire format (never enabled by a negotiation alone)
    side_effect: ClassVar[bool] = False

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        """The record payload for ``page`` (``previous``: the page as last sent, for a delta).

        ``None``: not for this encoder (the next one, or raw, takes the page); ``b""``: the page
        is unchanged since ``previous``, nothing is sent.
        """
        raise NotImplementedError

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        """The page a destination rebuilds from ``payload``; raises on bad input."""
        raise NotImplementedError

    def encode_batch(self, pages: np.ndarray,
                     previous: np.ndarray | None) -> Sequence[bytes | None]:
        """``encode`` over the rows of ``pages`` (``uint8[n, page_size]``); override for speed."""
        if previous is None:
            return [self.encode(row.tobytes(), None) for row in pages]
        return [self.encode(row.tobytes(), old.tobytes())
                for row, old in zip(pages, previous, strict=True)]


class Raw(Encoder):
    """The whole page: an 8-byte header + page bytes on the wire (4104 B for 4 KiB pages)."""

    name = "raw"

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        return bytes(page)

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        return bytes(payload)


class ZeroPage(Encoder):
    """An all-zero page as a 9-byte ZERO record (QEMU migration/ram.c, save_zero_page); the payload is the single byte 0."""

    name = "zero"

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        return b"\x00" if not any(page) else None

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        if payload != b"\x00":
            raise ValueError(f"Found a zero page with value {payload[0] if payload else -1}")
        page_size = len(previous) if previous is not None else 4096
        return bytes(page_size)


class Xbzrle(Encoder):
    """QEMU's XBZRLE delta against the cached copy (QEMU migration/xbzrle.c); 11 + n bytes on the wire."""

    name = "xbzrle"
    capability = "xbzrle"
    needs_previous = True

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        if previous is None:
            return None
        return _xbzrle.encode(previous, page)

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        if previous is None:
            raise ValueError("XBZRLE record without a previous page")
        return _xbzrle.decode(payload, previous)


ENCODERS: dict[str, type[Encoder]] = {}
BUILT_IN = ("zero", "xbzrle", "raw")


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Add an encoder (a class decorator). Its capability is registered if new: on the wire,
    known to no QEMU release (so a destination given only a ``version`` cannot decode it).

    Raises:
        ValueError: another class already has this name, or the encoder is malformed.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__}: an encoder needs a 'name'")
    existing = ENCODERS.get(name)
    if existing is not None and existing is not cls:
        if existing.__module__ == cls.__module__ and existing.__qualname__ == cls.__qualname__:
            pass  # the same module imported again (a re-run notebook cell): take the new class
        else:
            raise ValueError(f"encoder '{name}' is already registered by "
                             f"{existing.__module__}.{existing.__qualname__}")
    if name not in BUILT_IN:
        if cls.capability is None:
            raise ValueError(f"encoder '{name}': a plug-in needs its own 'capability'")
        if int(cls.header) < 0:
            raise ValueError(f"encoder '{name}': 'header' must be >= 0")
        doc = (cls.__doc__ or "").strip().splitlines()
        cap = capabilities.CAPABILITIES.get(cls.capability)
        if cap is None or cap.on_wire:
            capabilities.register(capabilities.Capability(
                cls.capability, side_effect=bool(cls.side_effect), on_wire=True,
                doc=doc[0] if doc else f"the {name} encoder"))
        else:
            raise ValueError(f"encoder '{name}': capability '{cls.capability}' is QEMU's "
                             "and not a wire encoding")
    ENCODERS[name] = cls
    return cls


def plugins_in_force(enabled: frozenset[str] | set[str]) -> list[type[Encoder]]:
    """The plug-in encoders whose capability is enabled, in registration order."""
    return [cls for name, cls in ENCODERS.items()
            if name not in BUILT_IN and cls.capability in enabled]


for _cls in (ZeroPage, Xbzrle, Raw):
    register_encoder(_cls)

__all__ = ["BUILT_IN", "ENCODERS", "ENTRY_POINT_GROUP", "Encoder", "Raw", "Xbzrle", "ZeroPage",
           "plugins_in_force", "register_encoder"]
