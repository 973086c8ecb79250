"""The names of migsim's fixed choice lists, each defined once, for every layer that needs them.

A scenario key's valid strings (``sim.spec`` field metadata), the QMP schema, ``migsim list`` and
the code that acts on each name all read these lists. The behaviour stays next to its code, keyed
by these names, and each such registry checks on import that it covers exactly this list:

* ``NEGOTIATION_MODES``: the operators of :mod:`sim.negotiation` (``MODES``);
* ``MULTIFD_COMPRESSION``: QEMU's MultiFDCompression values migsim models; ``none`` sends pages as
  they are, the others are the compressors of :mod:`sim.engine.multifd` (``COMPRESSORS``);
* ``WRITE_PATTERNS``: the write patterns of :mod:`sim.engine.content`; a name's position is the
  pattern id the compiled kernels branch on (``PATTERNS``).

This module imports nothing from ``sim``: the ground layer (``spec``, ``parameters``) can use it.
"""

from __future__ import annotations

#: the four ways a migration's capabilities get decided (DESIGN §3, REF §8), with one-line docs
NEGOTIATION_MODES: dict[str, str] = {
    "none": "the operator's source settings as given; the destination fails on a record it "
            "cannot decode",
    "qemu": "today's QEMU: capabilities set per side; needs-both-sides capabilities must match",
    "management": "libvirt-style: query source, set destination, set the destination's set on "
                  "the source",
    "inband": "a handshake over the return path agrees on the intersection; else legacy raw",
}

#: multifd-compression (REF §5.2): QEMU's MultiFDCompression enum as built with zlib and zstd
MULTIFD_COMPRESSION: tuple[str, ...] = ("none", "zlib", "zstd")

#: how a guest write changes a page's bytes (sim.engine.content); position = the kernels' id
WRITE_PATTERNS: tuple[str, ...] = ("clustered", "scattered", "counter", "full", "zero")

__all__ = ["MULTIFD_COMPRESSION", "NEGOTIATION_MODES", "WRITE_PATTERNS"]
