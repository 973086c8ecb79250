"""An example migsim plug-in: a zlib-compressed XOR delta against the page as last sent.

This is the kind of scheme the XBZRLE paper (Svärd et al., VEE 2011) set XBZRLE against: XOR the
new page with the cached copy, so unchanged bytes become zeros, and let a general-purpose
compressor squeeze the zeros out. It needs the previous page (``needs_previous``), so the source
keeps its page cache as for XBZRLE, and it has its own capability, negotiated like XBZRLE.

Use it from a scenario:

    plugins: [examples.zlib_xor]          # or a module next to the scenario file
    migration:
      capabilities: [x-zlib-xor]

A destination that does not list ``x-zlib-xor`` in ``supports`` (or is given only a QEMU
``version``) cannot decode its records.
"""

from __future__ import annotations

import zlib

import numpy as np

import sim

LEVEL = 1  # zlib's fastest level, like QEMU's multifd-zlib-level default


@sim.register_encoder
class ZlibXor(sim.Encoder):
    """zlib-compressed XOR delta against the cached copy of the page"""

    name = "zlib-xor"
    capability = "x-zlib-xor"
    needs_previous = True
    header = 11  # like an XBZRLE record: page header + a length

    def encode(self, page: bytes, previous: bytes | None) -> bytes | None:
        if previous is None:
            return None
        delta = np.frombuffer(page, np.uint8) ^ np.frombuffer(previous, np.uint8)
        if not delta.any():
            return b""  # unchanged: nothing to send
        payload = zlib.compress(delta.tobytes(), LEVEL)
        return payload if len(payload) < len(page) else None  # no gain: let raw take it

    def decode(self, payload: bytes, previous: bytes | None) -> bytes:
        if previous is None:
            raise ValueError("zlib-xor record without a previous page")
        delta = np.frombuffer(zlib.decompress(payload), np.uint8)
        if delta.size != len(previous):
            raise ValueError(f"zlib-xor delta of {delta.size} bytes for a {len(previous)}-byte "
                             "page")
        return (delta ^ np.frombuffer(previous, np.uint8)).tobytes()
