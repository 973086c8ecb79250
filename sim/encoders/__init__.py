"""Page encoders, in QEMU's order: zero-page test, then XBZRLE delta, else the raw page.

``ENCODERS`` is the registry (name → class). Each encoder states the capability that switches it
on (``None``: always available) and whether it needs the page as last sent (``needs_previous``,
taken from the XBZRLE cache). The engine runs the built-ins through compiled fast paths in
:mod:`sim.kernel` with the same decisions and QEMU's record sizes (REF §2.7, ``wire:``);
``encode``/``decode`` here are the per-page reference forms tests and plug-ins use.
"""

from __future__ import annotations

from typing import ClassVar

from . import xbzrle as _xbzrle


class Encoder:
    """Base class: one way to put a page on the wire."""

    name: ClassVar[str]
    capability: ClassVar[str | None] = None
    needs_previous: ClassVar[bool] = False

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        """The record payload for ``page``; ``None`` means "not for this encoder: send raw"."""
        raise NotImplementedError

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        """The page a destination rebuilds from ``payload``; raises on bad input."""
        raise NotImplementedError


class Raw(Encoder):
    """The whole page: an 8-byte header + page bytes on the wire (4104 B for 4 KiB pages)."""

    name = "raw"

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        return bytes(page)

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        return bytes(payload)


class ZeroPage(Encoder):
    """An all-zero page as a 9-byte ZERO record (REF §3); the payload is the single byte 0."""

    name = "zero"

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        return b"\x00" if not any(page) else None

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        if payload != b"\x00":
            raise ValueError(f"Found a zero page with value {payload[0] if payload else -1}")
        page_size = len(previous) if previous is not None else 4096
        return bytes(page_size)


class Xbzrle(Encoder):
    """QEMU's XBZRLE delta against the cached copy (REF §2); 11 + n bytes on the wire."""

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


ENCODERS: dict[str, type[Encoder]] = {cls.name: cls for cls in (ZeroPage, Xbzrle, Raw)}

__all__ = ["ENCODERS", "Encoder", "Raw", "Xbzrle", "ZeroPage"]
