"""Code from outside migsim: the plug-in modules a scenario names (``plugins:``) and the encoders
that installed packages list under the ``migsim.encoders`` entry-point group (DESIGN §9).

Loading a scenario calls both, before its keys are read, so what the plug-ins register (encoders
and their capabilities) is known by then. A sweep worker, which has not loaded the scenario file,
calls them again before it runs a member.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path

from sim.encoders import ENCODERS, ENTRY_POINT_GROUP, Encoder, register_encoder

# The entry points are read once per process; ``loaded`` holds their names after that.
_entry_points: dict[str, list[str] | None] = {"loaded": None}


def import_plugin(module: str, file: str) -> None:
    """Import a plug-in module; the scenario's directory and the working directory are searched
    too (a console script does not have the working directory on ``sys.path``). ``file`` is the
    scenario's path, or a ``<name>`` that is not a file."""
    if module in sys.modules:
        return
    extra = [str(Path.cwd())]
    if not file.startswith("<"):
        extra.insert(0, str(Path(file).resolve().parent))
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        importlib.import_module(module)
    finally:
        for p in added:
            sys.path.remove(p)


def load_entry_points() -> list[str]:
    """Import the modules that installed packages list under ``migsim.encoders`` (once per
    process); returns the names loaded. A broken entry point raises ImportError naming it."""
    if _entry_points["loaded"] is not None:
        return list(_entry_points["loaded"])
    loaded: list[str] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - reported with the entry point's name
            raise ImportError(f"entry point {ep.name!r} ({ep.value}) of group "
                              f"{ENTRY_POINT_GROUP}: {err}") from err
        if isinstance(obj, type) and issubclass(obj, Encoder) and obj.name not in ENCODERS:
            register_encoder(obj)
        loaded.append(ep.name)
    _entry_points["loaded"] = loaded
    return loaded
