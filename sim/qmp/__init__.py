"""A QMP server over simulated endpoints (DESIGN §7, REF §7).

* :mod:`sim.qmp.json_stream` -- QEMU's JSON input: incremental parsing, limits, error recovery;
* :mod:`sim.qmp.qapi` -- the commands' argument schemas, checked with QEMU's error texts;
* :mod:`sim.qmp.protocol` -- one session: greeting, handshake, dispatch, events (no sockets);
* :mod:`sim.qmp.server` -- asyncio sockets for the source and destination, and the clock that
  advances the simulation in scaled real time.
"""

from __future__ import annotations

from .json_stream import JsonError, JsonStream, Limits
from .protocol import COMMANDS, QmpSession, encode

__all__ = ["COMMANDS", "JsonError", "JsonStream", "Limits", "QmpSession", "encode"]
