"""``query-qmp-schema``: QEMU's introspection (SchemaInfo list, QEMU ``qapi/introspect.json``)
generated from the very schemas that check the arguments (:mod:`sim.qmp.qapi`), so what it
describes is what the server accepts.

Entries: one per command (``meta-type`` "command", ``arg-type``, ``ret-type``), per event
(``arg-type``), and per type they reach: builtins (``json-type``), enums (``values``), arrays
(``element-type``), objects (``members``, an optional one with ``"default": null``; a flat union
adds ``tag`` and ``variants``) and alternates. Departures: types keep their names (QEMU masks
them as numbers), an anonymous argument object is ``q_obj_<command>-arg`` as in QEMU's sources,
and every ``ret-type`` is ``any`` (the replies are not described).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .qapi import Alternate, Enum, ListOf, QType, Scalar, Struct, Union_

_JSON_TYPES = {"int": "int", "uint8": "int", "uint16": "int", "uint32": "int", "uint64": "int",
               "size": "int", "bool": "boolean", "str": "string", "number": "number",
               "null": "null", "any": "value"}

EnumValues = Callable[[str], Sequence[str] | None]


class _Schema:
    def __init__(self, enum_values: EnumValues) -> None:
        self.enum_values = enum_values
        self.entries: dict[str, dict[str, Any]] = {}

    def name(self, qtype: QType, anonymous: str) -> str:
        """The type's name, its entry added (once)."""
        if isinstance(qtype, Scalar):
            self.add(qtype.kind, {"meta-type": "builtin", "json-type": _JSON_TYPES[qtype.kind]})
            return qtype.kind
        if isinstance(qtype, ListOf):
            element = self.name(qtype.element, anonymous)
            self.add(f"[{element}]", {"meta-type": "array", "element-type": element})
            return f"[{element}]"
        if isinstance(qtype, Enum):
            values = list(self.enum_values(qtype.name) or qtype.values)
            self.add(qtype.name, {"meta-type": "enum", "values": values,
                                  "members": [{"name": v} for v in values]})
            return qtype.name
        if isinstance(qtype, Alternate):
            members = [{"type": self.name(Scalar(b), anonymous)} for b in qtype.branches]
            self.add(qtype.name, {"meta-type": "alternate", "members": members})
            return qtype.name
        name = qtype.name or anonymous
        if name in self.entries:
            return name
        self.entries[name] = {}  # reserved: a type may reach itself
        declared = qtype.members if isinstance(qtype, Struct) else qtype.base
        members = []
        for m in declared:
            member: dict[str, Any] = {"name": m.name,
                                      "type": self.name(m.type, f"{name}-{m.name}")}
            if m.optional:
                member["default"] = None
            members.append(member)
        entry: dict[str, Any] = {"meta-type": "object", "members": members}
        if isinstance(qtype, Union_):
            entry["tag"] = qtype.discriminator
            entry["variants"] = [{"case": case, "type": self.name(v, f"{name}-{case}")}
                                 for case, v in qtype.variants.items()]
        self.entries[name] = {"name": name, **entry}
        return name

    def add(self, name: str, entry: dict[str, Any]) -> None:
        self.entries.setdefault(name, {"name": name, **entry})


def schema(commands: Mapping[str, Struct], events: Mapping[str, Struct],
           enum_values: EnumValues) -> list[dict[str, Any]]:
    """The SchemaInfo list: commands and events first, then the types they reach."""
    types = _Schema(enum_values)
    out = []
    ret = types.name(Scalar("any"), "")
    for cmd, args in commands.items():
        arg = types.name(args, f"q_obj_{cmd}-arg") if args.members else \
            types.name(Struct("q_empty"), "")
        out.append({"name": cmd, "meta-type": "command", "arg-type": arg, "ret-type": ret})
    for event, data in events.items():
        arg = types.name(data, f"q_obj_{event}-arg") if data.members else \
            types.name(Struct("q_empty"), "")
        out.append({"name": event, "meta-type": "event", "arg-type": arg})
    return out + list(types.entries.values())
