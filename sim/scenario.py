"""Scenario files: YAML in, a validated frozen ``Scenario`` out, every error pointing at its line.

The YAML is composed (not constructed) with PyYAML's safe loader, so every key path keeps the line it
came from; the tree is then converted field by field, driven by the dataclasses of ``sim.spec`` and
their metadata (units, bounds, choices), never by hand-written key lists (STYLE §3, §6). An error
reads ``file:line: key.path: problem (got X)``; ``--set`` overrides name the file ``<--set>``.

Sweeps (DESIGN §4): ``expand()`` turns a scenario with ``sweep:`` into one scenario per member:
the cartesian product of the ``grid`` lists, times the rows of the ``zip`` lists (equal lengths,
paired), times ``repeats`` seeds ``seed, seed+1, ...``. A member's ``params`` holds
``(dotted key, value)`` for each swept key (values in SI units, as in the member's fields), plus
``("repeat", i)`` when ``repeats > 1``. Its name is generated from those values, e.g.
``hotspot-xbzrle_cache_size=16MiB-writes_per_s=1000-r0`` (the ``-rN`` suffix only when
``repeats > 1``; a key is shortened to its last part unless two swept keys share it).

Choices made here:

* A section left empty (``vm:`` with nothing under it) means all its defaults.
* A ``phased`` workload's phases are written flat, ``{duration, <workload keys>}``; a phase's
  workload keys default to ``WorkloadSpec``'s defaults (not to the enclosing workload's values).
* ``to_dict()`` writes every field (defaults included, optional ones only when set), with units,
  so the file documents the run; ``params`` is written for sweep members and read back.
* Anchors, aliases and ``<<`` merge keys work; a document that expands to more than
  ``MAX_NODES`` nodes or nests deeper than ``MAX_DEPTH`` is refused (alias bombs), as is a file of
  more than ``MAX_BYTES`` or one that is not UTF-8 text, and a sweep of more than ``MAX_RUNS``
  runs. Each refusal is one ``file:line: key: problem`` line, found in bounded time and memory.
* Error lines stay one line: a value, key or file name with control characters in it is shown
  escaped (``'a\\nb'``), and long values are cut.

Several guests (DESIGN §4): each ``vms`` item may hold ``name`` (default ``vm0``, ``vm1``, ... by
index; unique) and the sections ``vm``, ``workload``, ``migration`` and ``endpoints``. An item's
sections are deep-merged over the top-level ones: mappings merge key by key, the item's value wins,
and anything else (lists included) replaces; an item section left empty inherits it all. A
``workload`` whose ``kind`` differs from the top-level one inherits nothing. ``Scenario.vms`` holds
the merged guests, each validated as a single-guest scenario would be (errors name
``vms[i].key.path`` and the line the value came from); the top-level sections stay as written.
``--set`` overrides apply before merging, so ``migration.start=3s`` reaches every guest that
inherits it; list items are addressed by index (``vms.1.migration.start=3s``). A swept top-level
key reaches every guest whose value equals the top-level one (what a guest inherits; a guest that
repeats the top-level value follows it too). ``to_dict`` writes each item as its ``name`` and what
differs from the top level.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import yaml

from sim import budget, capabilities, controllers, plugins, units
from sim.cluster import spec as cluster_spec
from sim.errors import ScenarioError
from sim.spec import ControllerSpec, GuestSpec, RegionSpec, Scenario, WorkloadSpec

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_RUNS",
    "SCENARIO_KEYS",
    "KeyInfo",
    "expand",
    "from_dict",
    "key_field",
    "key_unit",
    "load_scenario",
    "loads_scenario",
    "scenario_keys",
    "to_dict",
]

MAX_NODES = 100_000  # YAML nodes after alias expansion
MAX_DEPTH = 50  # nesting of mappings and lists
MAX_SEED = 2**63 - 1  # the runs table's seed column is int64
MAX_BYTES = units.MiB  # a scenario file (PyYAML composes about 200 KB/s of dense YAML)
MAX_RUNS = 10_000  # runs of one sweep (every member is validated on loading)
OVERRIDE_FILE = "<--set>"

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NOT_SWEPT = ("name", "sweep", "params", "plugins", "vms")  # roots that a sweep may not vary
_OMIT_EMPTY = ("params", "vms")  # fields that to_dict leaves out when empty
_PARSERS: dict[str, Callable[..., float]] = {
    "size": units.parse_size,
    "rate": units.parse_rate,
    "time": units.parse_time,
}
_FORMATTERS: dict[str, Callable[..., str]] = {
    "size": units.format_size,
    "rate": units.format_rate,
    "time": units.format_time,
}

Where = tuple[str, int | None]


# ---------------------------------------------------------------- the dataclass schema


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a spec dataclass (its annotations are strings)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _yaml_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]


def _optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _guest_sections() -> tuple[str, ...]:
    """The sections a ``vms`` item shares with the top level: ``vm``, ``workload``, ..."""
    return tuple(f.name for f in _yaml_fields(GuestSpec)
                 if _is_dataclass_type(_hints(GuestSpec)[f.name]))


_GUEST_SECTIONS = _guest_sections()


def _list_item(tp: Any) -> Any | None:
    """``T`` for ``tuple[T, ...]``, else None."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _keyed(tp: Any) -> Any | None:
    """``V`` for ``tuple[tuple[str, V], ...]`` (a mapping kept as ordered pairs), else None."""
    item = _list_item(tp)
    if item is not None and typing.get_origin(item) is tuple:
        args = typing.get_args(item)
        if len(args) == 2 and args[0] is str:
            return args[1]
    return None


def _inline_keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """Keys a mapping for ``cls`` may hold: its own fields and those of its inline sections."""
    keys: dict[str, dataclasses.Field[Any]] = {}
    for f in _yaml_fields(cls):
        if f.metadata.get("inline"):
            keys.update(_inline_keys(_hints(cls)[f.name]))
        else:
            keys[f.name] = f
    return keys


def key_field(key: str) -> tuple[dataclasses.Field[Any], Any] | None:
    """The field and type a dotted key such as ``vm.memory`` names, through sections only; None
    for a key that names no field (every sweep key names one)."""
    cls: Any = Scenario
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in _yaml_fields(cls)}
        if part not in fields:
            return None
        tp = _hints(cls)[part]
        if i == len(parts) - 1:
            return fields[part], tp
        inner, _ = _optional(tp)
        if not _is_dataclass_type(inner):
            return None
        cls = inner
    return None


def key_unit(key: str) -> str | None:
    """The unit kind (``size`` | ``rate`` | ``time``) of a dotted key, or None (no unit, no key)."""
    target = key_field(key)
    return target[0].metadata.get("unit") if target is not None else None


def _split_key(key: str) -> list[str]:
    """Split an override key into mapping keys; below a keyed field the rest is one key."""
    parts = key.split(".")
    cls: Any = Scenario
    for i, part in enumerate(parts):
        if cls is None:
            break
        fields = {f.name: f for f in _yaml_fields(cls)}
        if part not in fields:
            break
        tp, _ = _optional(_hints(cls)[part])
        if _keyed(tp) is not None and i + 1 < len(parts):
            return [*parts[: i + 1], ".".join(parts[i + 1 :])]
        cls = tp if _is_dataclass_type(tp) else None
    return parts


@dataclass(frozen=True)
class KeyInfo:
    """One YAML key, for ``migsim list`` and the docs: ``link.schedule[].at``, its kind, default."""

    key: str
    kind: str  # size | rate | time | int | float | str | bool | list[str] | mapping | list
    default: str  # as YAML would write it ("" when required, "null" when unset)
    choices: tuple[str, ...] = ()


def _kind(tp: Any, f: dataclasses.Field[Any]) -> str:
    inner, _ = _optional(tp)
    if "unit" in f.metadata:
        return str(f.metadata["unit"])
    if _keyed(inner) is not None:
        return "mapping"
    item = _list_item(inner)
    if item is not None:
        return f"list[{getattr(item, '__name__', 'object')}]"
    return getattr(inner, "__name__", str(inner))


def _default_text(f: dataclasses.Field[Any], tp: Any) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return ""
    dumped = _dump_value(tp, f, value)
    if dumped is None:
        return "null"
    return yaml.safe_dump(dumped, default_flow_style=True, width=10**6).strip().removesuffix(
        "\n..."
    ).removesuffix("...").strip()


def _choices(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    registry = f.metadata.get("registry")
    if registry == "workloads":
        return _workload_kinds()
    if registry == "capabilities":
        return tuple(capabilities.CAPABILITIES)
    return tuple(f.metadata.get("choices", ()))


def _walk_keys() -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """``(dotted key, field, type)`` for every leaf key; list items appear as ``key[].field``."""
    out: list[tuple[str, dataclasses.Field[Any], Any]] = []

    def walk(cls: type, prefix: str, stack: tuple[type, ...]) -> None:
        hints = _hints(cls)
        for f in _yaml_fields(cls):
            tp = hints[f.name]
            inner, _ = _optional(tp)
            if f.metadata.get("inline"):
                walk(inner, prefix, (*stack, cls))
                continue
            key = f"{prefix}{f.name}"
            item = _list_item(inner)
            if _is_dataclass_type(inner) and inner not in stack:
                walk(inner, key + ".", (*stack, cls))
            elif (item is not None and _is_dataclass_type(item) and item not in stack
                  and cls not in stack):
                walk(item, key + "[].", (*stack, cls))
            else:
                out.append((key, f, tp))

    walk(Scenario, "", ())
    return out


def scenario_keys() -> list[KeyInfo]:
    """Every YAML key of a scenario with its kind, default and valid values, in dataclass order."""
    return [KeyInfo(key, _kind(tp, f), _default_text(f, tp), _choices(f))
            for key, f, tp in _walk_keys()]


#: every dotted YAML key (``scenario_keys()`` adds kinds, defaults and choices)
SCENARIO_KEYS: tuple[str, ...] = tuple(key for key, _, _ in _walk_keys())


def _workload_kinds() -> tuple[str, ...]:
    from sim.workloads import WORKLOADS  # lazily: the workloads import numpy and more

    return tuple(WORKLOADS)


# ---------------------------------------------------------------- showing values in messages


def _show(value: object) -> str:
    """A value after "got": YAML-like (``null``, ``true``), strings quoted, long ones cut."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return _clip(text)


def _escape(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``), so it stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _clip(text: str, limit: int = 60) -> str:
    """``text`` as a short single line: control characters escaped, the end cut if too long."""
    text = _escape(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_name(key: str) -> str:
    """One key as a key path shows it: quoted if it is empty or has spaces around it."""
    return key if key and key.strip() == key and key.isprintable() else repr(key)


def _key_text(path: str) -> str:
    """A key path as an error line shows it (a YAML key may hold anything, newlines included)."""
    return _clip(path, 200)


def _one_line(err: ScenarioError) -> ScenarioError:
    """``err`` itself if its text is one line, else the same error with its parts escaped."""
    if str(err).isprintable():
        return err
    file = None if err.file is None else _escape(err.file)
    key = None if err.key is None else _key_text(err.key)
    return ScenarioError(_escape(err.problem), file=file, line=err.line, key=key)


def _names(value: Iterable[object]) -> str:
    return "[" + ", ".join(str(v) for v in value) + "]"


def _suggest(word: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid: {', '.join(valid)}"


# ---------------------------------------------------------------- YAML → plain tree + lines


class _Document:
    """The plain data of a scenario (dicts, lists, scalars) and where each key path came from."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.where: dict[str, Where] = {}
        self.raw: dict[str, str] = {}  # key path -> text of a plain YAML scalar
        # key paths whose value is a Python number from the API (already in SI units, so a bare
        # number is fine there; YAML text and --set must write the unit)
        self.si: set[str] = set()
        self.nodes = 0
        self._origin: Where = (file, None)
        self._with_lines = True
        self._constructor = yaml.constructor.SafeConstructor()

    # -- locating errors
    def locate(self, path: str) -> Where:
        probe = path
        while probe not in self.where:
            if not probe:
                return (self.file, None)
            probe = _parent(probe)
        return self.where[probe]

    def error(self, path: str, problem: str, *, at: str | None = None) -> ScenarioError:
        file, line = self.locate(at if at is not None else path)
        return ScenarioError(problem, file=file, line=line, key=_key_text(path) or None)

    def shown(self, path: str, default: str) -> str:
        """The value at ``path`` as the YAML wrote it (a plain scalar), else ``default``."""
        raw = self.raw.get(path)
        return default if raw is None else _clip(raw)

    def got(self, path: str, value: object) -> str:
        return f"(got {self.shown(path, _show(value))})"

    # -- building the tree
    def _mark(self, path: str, node: yaml.Node | None) -> None:
        line = node.start_mark.line + 1 if node is not None and self._with_lines else None
        self.where[path] = (self._origin[0], line)

    def _count(self, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(path, f"the document expands to more than {MAX_NODES} nodes "
                                   "(aliases nested too deeply?)")
        if depth > MAX_DEPTH:
            raise self.error(path, f"nested more than {MAX_DEPTH} levels deep")

    def tree(self, node: yaml.Node, path: str, depth: int = 0) -> object:
        self._count(path, depth)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}")
            items = []
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self._mark(child, item)
                items.append(self.tree(item, child, depth + 1))
            return items
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}")
            return self._mapping(node, path, depth)
        raise self.error(path, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode, path: str) -> object:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except Exception as e:  # PyYAML's constructors raise anything on bad text (!!bool maybe)
            problem = getattr(e, "problem", None) or str(e) or type(e).__name__
            raise self.error(path, f"invalid YAML value: {problem}") from e
        if node.style is None and isinstance(node.value, str):
            self.raw[path] = node.value
        return value

    def _pairs(self, node: yaml.MappingNode, path: str,
               depth: int) -> tuple[list[tuple[yaml.Node, yaml.Node]], list[tuple[yaml.Node, yaml.Node]]]:
        """The explicit ``(key, value)`` nodes of a mapping and those merged in with ``<<``."""
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                self._count(path, depth + 1)
                if not isinstance(source, yaml.MappingNode):
                    problem = "'<<' merges a mapping or a list of mappings"
                    raise ScenarioError(problem, file=self._origin[0],
                                        line=self._line(key_node), key=_key_text(path) or None)
                inner_explicit, inner_merged = self._pairs(source, path, depth + 1)
                merged.extend(inner_explicit + inner_merged)
        return explicit, merged

    def _line(self, node: yaml.Node) -> int | None:
        return node.start_mark.line + 1 if self._with_lines else None

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, object]:
        explicit, merged = self._pairs(node, path, depth)
        result: dict[str, object] = {}
        first_line: dict[str, int | None] = {}
        for key_node, value_node in explicit:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError("a key must be a name, not a mapping or a list",
                                    file=self._origin[0], line=self._line(key_node),
                                    key=_key_text(path) or None)
            key = str(key_node.value)
            child = _join(path, key)
            if key in result:
                first = first_line[key]
                was = f" (first at line {first})" if first is not None else ""
                raise ScenarioError(f"duplicate key{was}", file=self._origin[0],
                                    line=self._line(key_node),
                                    key=_key_text(_join(path, _key_name(key))))
            first_line[key] = self._line(key_node)
            self._mark(child, key_node)
            result[key] = self.tree(value_node, child, depth + 1)
        for key_node, value_node in merged:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
            if not key or key in result:
                continue
            child = _join(path, key)
            self._mark(child, key_node)
            result[key] = self.tree(value_node, child, depth + 1)
        return result

    def python(self, value: object, path: str, depth: int = 0) -> object:
        """A Python override value as tree data (a dataclass becomes its ``to_dict`` form)."""
        self._count(path, depth)
        self.where[path] = self._origin
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = _dump_dataclass(value)
        if isinstance(value, Mapping):
            out: dict[str, object] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.error(path, f"a key must be a string (got {_show(key)})")
                out[key] = self.python(item, _join(path, key), depth + 1)
            return out
        if isinstance(value, list | tuple):
            return [self.python(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.si.add(path)
        return value

    # -- overrides
    def override(self, data: dict[str, object], key: object, value: object) -> None:
        self._origin, self._with_lines = (OVERRIDE_FILE, None), False
        try:
            self._override(data, key, value)
        finally:
            self._origin, self._with_lines = (self.file, None), True

    def _override(self, data: dict[str, object], key: object, value: object) -> None:
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ScenarioError(f"not a key path such as link.bandwidth (got {_show(key)})",
                                file=OVERRIDE_FILE)
        parts = _split_key(key)
        cursor: Any = data  # a mapping, or a list whose items a number addresses (vms.1.vm)
        path = ""  # the key as the document names it: vms[1].vm
        for i, part in enumerate(parts):
            index: str | int = part
            if isinstance(cursor, list):
                if not (part.isascii() and part.isdigit() and int(part) < len(cursor)):
                    prefix = ".".join(parts[:i])
                    raise ScenarioError(f"'{prefix}' has no item {part}; it has {len(cursor)}, "
                                        "numbered from 0", file=OVERRIDE_FILE, key=key)
                index = int(part)
                path = f"{path}[{index}]"
            else:
                path = _join(path, part)
            if i == len(parts) - 1:
                break
            child = cursor.get(index) if isinstance(cursor, dict) else cursor[index]
            if child is None:
                child = cursor[index] = {}
                self.where.setdefault(path, self._origin)
            if not isinstance(child, dict | list):
                raise ScenarioError(f"cannot set a key below '{'.'.join(parts[: i + 1])}', which "
                                    f"is not a section (got {_show(child)})",
                                    file=OVERRIDE_FILE, key=key)
            cursor = child
        for stale in [p for p in self.where if p == path or p.startswith((path + ".", path + "["))]:
            self.where.pop(stale, None)
            self.raw.pop(stale, None)
            self.si.discard(stale)
        if isinstance(value, str):
            try:
                node = yaml.compose(value, Loader=_Loader)  # refuses deep nesting, too
            except RecursionError as e:
                raise ScenarioError(f"not a valid YAML value: nested more than {MAX_DEPTH} "
                                    "levels deep", file=OVERRIDE_FILE, key=key) from e
            except yaml.YAMLError as e:
                problem = getattr(e, "problem", None) or str(e)
                raise ScenarioError(f"not a valid YAML value: {problem} "
                                    f"(got {_clip(repr(value), 80)})",
                                    file=OVERRIDE_FILE, key=key) from e
            self.where[path] = self._origin
            cursor[index] = None if node is None else self.tree(node, path)
        else:
            cursor[index] = self.python(value, path)

    # -- several guests
    def merge_guests(self, data: dict[str, Any]) -> None:
        """Merge each ``vms`` item over the top-level sections (see the module docstring)."""
        items = data.get("vms")
        if not isinstance(items, list):
            return  # absent, or not a list: the builder reports it
        if not items:
            raise self.error("vms", "needs at least one guest (got [])")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue  # the builder reports it
            path = f"vms[{i}]"
            merged = {"name": f"vm{i}", **item}
            for section in _GUEST_SECTIONS:
                if section not in data:
                    continue
                top, own = data[section], item.get(section)
                if own is None:
                    own = {}  # an empty section inherits everything
                if section == "workload" and _other_kind(top, own):
                    merged[section] = own
                else:
                    merged[section] = self._merged(top, own, section, f"{path}.{section}")
            items[i] = merged

    def _merged(self, top: object, own: object, top_path: str, path: str) -> object:
        """``own`` deep-merged over ``top``; inherited values keep the line they came from."""
        if not (isinstance(top, dict) and isinstance(own, dict)):
            return own
        out = {key: self._inherited(value, _join(top_path, key), _join(path, key))
               for key, value in top.items() if key not in own}
        for key, value in own.items():
            out[key] = (self._merged(top[key], value, _join(top_path, key), _join(path, key))
                        if key in top else value)
        return out

    def _inherited(self, value: object, top_path: str, path: str) -> object:
        if top_path in self.where:
            self.where[path] = self.where[top_path]
        if top_path in self.raw:
            self.raw[path] = self.raw[top_path]
        if top_path in self.si:
            self.si.add(path)
        if isinstance(value, dict):
            for key, item in value.items():
                self._inherited(item, _join(top_path, key), _join(path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self._inherited(item, f"{top_path}[{i}]", f"{path}[{i}]")
        return value


def _other_kind(top: object, own: object) -> bool:
    """Whether an item's workload is of another kind than the top-level one (so inherits nothing)."""
    if not (isinstance(own, dict) and "kind" in own):
        return False
    return bool(own["kind"] != (top.get("kind", WorkloadSpec().kind) if isinstance(top, dict)
                                else WorkloadSpec().kind))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


class _Refused(yaml.YAMLError):
    """The composer stopped: the document nests too deeply or has too many nodes."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document with more than ``MAX_NODES`` nodes or nested far
    deeper than ``MAX_DEPTH`` while it composes, before its recursion or memory gets there
    (``tree()`` then refuses anything past ``MAX_DEPTH``, naming the key path)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > 2 * MAX_DEPTH:
                raise _Refused(f"nested too deeply (more than {MAX_DEPTH} levels)",
                               self.peek_event().start_mark)
            if self._nodes > MAX_NODES:
                raise _Refused(f"the document has more than {MAX_NODES} nodes",
                               self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, file: str) -> yaml.Node | None:
    if len(text) > MAX_BYTES:
        raise ScenarioError(f"is longer than {units.format_size(MAX_BYTES)}; a scenario is a short "
                            f"YAML text (got {len(text)} characters)", file=file)
    try:
        return yaml.compose(text, Loader=_Loader)
    except _Refused as e:
        raise ScenarioError(f"invalid YAML: {e.problem}", file=file, line=e.mark.line + 1) from e
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, most controls)
        character = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise ScenarioError(f"invalid YAML: unacceptable character {character}: {e.reason}",
                            file=file, line=text.count("\n", 0, e.position) + 1) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p) or str(e)
        raise ScenarioError(f"invalid YAML: {_escape(problem)}", file=file,
                            line=None if mark is None else mark.line + 1) from e
    except yaml.YAMLError as e:
        raise ScenarioError(f"invalid YAML: {_escape(str(e))}", file=file) from e
    except RecursionError as e:
        raise ScenarioError(f"invalid YAML: nested too deeply (more than {MAX_DEPTH} levels)",
                            file=file) from e


# ---------------------------------------------------------------- tree → dataclasses


class _Builder:
    """Converts the plain tree into ``sim.spec`` dataclasses, checking each value on the way."""

    def __init__(self, doc: _Document) -> None:
        self.doc = doc

    def section(self, cls: type, value: object, path: str) -> Any:
        doc = self.doc
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise doc.error(path, f"expected a mapping of {cls.__name__} keys {doc.got(path, value)}")
        known = _inline_keys(cls)
        for key in value:
            if key not in known:
                raise doc.error(_join(path, _key_name(key)), "unknown key" + _suggest(key, known),
                                at=_join(path, key))
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for f in _yaml_fields(cls):
            tp = hints[f.name]
            if f.metadata.get("inline"):
                own = _inline_keys(tp)
                kwargs[f.name] = self.section(tp, {k: v for k, v in value.items() if k in own}, path)
            elif f.name in value:
                kwargs[f.name] = self.value(tp, f, value[f.name], _join(path, f.name))
            elif f.default is MISSING and f.default_factory is MISSING:
                raise doc.error(path, f"missing required key '{f.name}'")
        return cls(**kwargs)

    def value(self, tp: Any, f: dataclasses.Field[Any], value: object, path: str) -> Any:
        doc = self.doc
        inner, optional = _optional(tp)
        if value is None and optional:
            return None
        if _is_dataclass_type(inner):
            if inner is ControllerSpec and isinstance(value, str):
                value = {"kind": value}  # controller: nova, for {kind: nova}
            return self.section(inner, value, path)
        keyed = _keyed(inner)
        if keyed is not None:
            return self.keyed(keyed, value, path)
        item = _list_item(inner)
        if item is not None:
            if not isinstance(value, list):
                raise doc.error(path, f"expected a list {doc.got(path, value)}")
            items = tuple(self.value(item, f, v, f"{path}[{i}]") for i, v in enumerate(value))
            self.check_list(f, items, path)
            return items
        return self.scalar(inner, f, value, path)

    def scalar(self, tp: Any, f: dataclasses.Field[Any], value: object, path: str) -> Any:
        doc = self.doc
        meta = f.metadata
        got = doc.got(path, value)
        unit = meta.get("unit")
        result: Any
        if unit is not None:
            source = value
            if path in doc.raw and (isinstance(value, bool)
                                    or not isinstance(value, int | float | str | None)):
                source = doc.raw[path]  # YAML made a date or a bool of it: show it as written
            try:
                result = _PARSERS[unit](source, signed=True, bare=path in doc.si)
            except ValueError as e:
                raise doc.error(path, str(e)) from e
            if tp is int:
                result = int(result)
        elif tp is bool:
            if not isinstance(value, bool):
                raise doc.error(path, f"expected true or false {got}")
            result = value
        elif tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise doc.error(path, f"expected an integer {got}")
            result = value
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise doc.error(path, f"expected a number {got}")
            if isinstance(value, int) and abs(value) > 2**64:
                raise doc.error(path, f"is too large {got}")
            if not math.isfinite(value):
                raise doc.error(path, f"must be a finite number {got}")
            result = float(value)
        elif tp is str:
            if isinstance(value, str):
                result = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                result = doc.raw.get(path, str(value))  # qemu_version: 10.2 unquoted
            else:
                raise doc.error(path, f"expected a string {got}")
        elif tp is object:
            return value
        else:  # pragma: no cover - a spec field type this converter does not know
            raise doc.error(path, f"cannot convert a value of type {tp}")
        self.check_scalar(f, result, path, value)
        return result

    def check_scalar(self, f: dataclasses.Field[Any], result: Any, path: str,
                     value: object) -> None:
        doc = self.doc
        meta = f.metadata
        unit = meta.get("unit")
        shown = doc.shown(path, _FORMATTERS[unit](result, exact=True) if unit else _show(value))
        got = f"(got {shown})"
        if "gt" in meta and not result > meta["gt"]:
            raise doc.error(path, f"must be > {_bound(meta, 'gt')} {got}")
        if "ge" in meta and "le" in meta and not meta["ge"] <= result <= meta["le"]:
            raise doc.error(path, f"must be between {_bound(meta, 'ge')} and "
                                  f"{_bound(meta, 'le')} {got}")
        if "ge" in meta and not result >= meta["ge"]:
            raise doc.error(path, f"must be >= {_bound(meta, 'ge')} {got}")
        if "le" in meta and not result <= meta["le"]:
            raise doc.error(path, f"must be <= {_bound(meta, 'le')} {got}")
        if meta.get("pow2") and (result <= 0 or result & (result - 1)):
            raise doc.error(path, f"must be a power of two {got}")
        if "choices" in meta and result not in meta["choices"]:
            choices = meta["choices"]
            raise doc.error(path, f"{_show(result)} is not one of {', '.join(choices)}"
                                  + _close(result, choices))
        registry = meta.get("registry")
        if registry == "workloads":
            kinds = _workload_kinds()
            if result not in kinds:
                raise doc.error(path, f"{_show(result)} is not a known workload kind"
                                      + _suggest(result, kinds))
        elif registry == "capabilities" and result not in capabilities.CAPABILITIES:
            # reported on the list (STYLE §6 example), at the item's line
            at = path
            path = _parent(path) if path.endswith("]") else path
            raise doc.error(path, f"{_show(result)} is not known"
                                  + _suggest(result, capabilities.CAPABILITIES), at=at)

    def check_list(self, f: dataclasses.Field[Any], items: tuple[Any, ...], path: str) -> None:
        if f.metadata.get("registry") != "capabilities":
            return
        seen: set[str] = set()
        for i, name in enumerate(items):
            if name in seen:
                raise self.doc.error(path, f"{_show(name)} is listed twice", at=f"{path}[{i}]")
            seen.add(name)
        if f.metadata.get("check_set"):
            try:
                capabilities.check_set(items)
            except ValueError as e:
                raise self.doc.error(path, f"{e} (got {_names(items)})") from e

    def keyed(self, value_tp: Any, value: object, path: str) -> tuple[tuple[str, Any], ...]:
        """A mapping of scenario key paths to values of those keys (``sweep.grid``, ``params``)."""
        doc = self.doc
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise doc.error(path, f"expected a mapping of key paths {doc.got(path, value)}")
        many = _list_item(value_tp) is not None  # sweep lists vs single values
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            child = _join(path, key)
            if key == "repeat" and not many:
                if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                    raise doc.error(child, f"expected a repeat index >= 0 {doc.got(child, item)}")
                out.append((key, item))
                continue
            if key == "controller" and all(isinstance(v, str) for v in
                                           (item if many and isinstance(item, list) else [item])):
                key = "controller.kind"  # controller: [nova, libvirt] sweeps the kind
            target = key_field(key)
            if target is None or key.split(".")[0] in _NOT_SWEPT:
                leaves = [k for k in SCENARIO_KEYS if "[]" not in k
                          and k.split(".")[0] not in _NOT_SWEPT]
                close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise doc.error(_join(path, _key_name(key)),
                                f"{_show(key)} is not a scenario key that can vary{hint}", at=child)
            field, tp = target
            if many:
                if not isinstance(item, list) or not item:
                    raise doc.error(child, f"expected a non-empty list of values "
                                           f"{doc.got(child, item)}")
                values = tuple(self.value(tp, field, v, f"{child}[{i}]")
                               for i, v in enumerate(item))
                out.append((key, values))
            else:
                out.append((key, self.value(tp, field, item, child)))
        return tuple(out)


def _bound(meta: Mapping[str, Any], name: str) -> str:
    bound = meta[name]
    unit = meta.get("unit")
    if unit is None or bound == 0:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)
    return str(_FORMATTERS[unit](bound, exact=True))


def _close(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# ---------------------------------------------------------------- checks across fields


_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")

# fail(key path, problem, value as text) -> the error; it appends "(got X)", X as the YAML had it
_Fail = Callable[[str, str, str], ScenarioError]


def _size(value: int) -> str:
    return units.format_size(value, exact=True)


def _check(s: Scenario, fail: _Fail) -> None:
    """Rules that tie several fields together (one field's own rules are in its metadata)."""
    _check_guest(s, fail)
    refused = budget.refusal(s) or budget.time_refusal(s)
    if refused is not None:
        raise fail(*refused)
    if s.seed > MAX_SEED:  # numpy takes any seed, but the tables hold it as int64
        raise fail("seed", f"must be <= {MAX_SEED} (2^63 - 1), with a sweep's repeats added "
                           f"(this run's seed would be {s.seed})", str(s.seed))
    names: dict[str, int] = {}
    for i, guest in enumerate(s.vms):
        prefix = f"vms[{i}]"
        if guest.name in names:
            raise fail(f"{prefix}.name", f"vms[{names[guest.name]}] has that name already; "
                                         "names must be unique", repr(guest.name))
        names[guest.name] = i
        _check_guest(guest, _within(prefix, fail))
    if s.cluster is not None:
        cluster_spec.check(s.cluster, [g.name for g in s.vms], fail)
    if s.controller is not None:
        wrong = controllers.refusal(s.controller, s)
        if wrong is not None:
            key, problem = wrong
            value = getattr(s.controller, key)
            raise fail(f"controller.{key}", problem,
                       units.format_time(value, exact=True) if isinstance(value, float)
                       else str(value))
    previous = -1.0
    for i, change in enumerate(s.link.schedule):
        if change.at <= previous:
            raise fail(f"link.schedule[{i}].at", "must be later than the previous change",
                       units.format_time(change.at, exact=True))
        previous = change.at
    for i, fault in enumerate(s.link.faults):
        if fault.kind == "link_down" and fault.duration <= 0:
            raise fail(f"link.faults[{i}].duration", "a link_down fault needs a duration > 0",
                       units.format_time(fault.duration, exact=True))
        if fault.kind == "bandwidth_drop" and fault.bandwidth <= 0:
            raise fail(f"link.faults[{i}].bandwidth",
                       "a bandwidth_drop fault needs a bandwidth > 0 (use link_down for 0)",
                       units.format_rate(fault.bandwidth))
        guests = [g.name for g in s.vms]
        if fault.vm is not None and fault.vm not in guests:
            raise fail(f"link.faults[{i}].vm", "no guest of that name in vms: "
                       + (", ".join(guests) or "(this scenario has no vms: list)"),
                       repr(fault.vm))


def _within(prefix: str, fail: _Fail) -> _Fail:
    """``fail`` for key paths below ``prefix``."""
    return lambda path, problem, got: fail(f"{prefix}.{path}", problem, got)


def _check_guest(s: Scenario | GuestSpec, fail: _Fail) -> None:
    """The rules of one guest: a scenario's top-level sections, or a ``vms`` item."""
    vm, migration = s.vm, s.migration
    page = vm.page_size
    if vm.memory < page:
        raise fail("vm.memory", f"must be at least one page of {_size(page)}", _size(vm.memory))
    if vm.memory % page:
        raise fail("vm.memory", f"must be a multiple of vm.page_size, {_size(page)}",
                   _size(vm.memory))
    for i, region in enumerate(vm.zero_regions):
        _check_region(region, f"vm.zero_regions[{i}]", vm.memory, fail, whole_pages=page)
    cache = migration.xbzrle_cache_size
    if cache < page or cache & (cache - 1):
        raise fail("migration.xbzrle_cache_size",
                   "Option xbzrle_cache_size expects a power of two no less than the target page "
                   f"size, {_size(page)}", _size(cache))
    if migration.max_cpu_throttle < migration.cpu_throttle_initial:  # QEMU's rule (sim.parameters)
        raise fail("migration.max_cpu_throttle", "must be at least migration.cpu_throttle_initial, "
                   f"{migration.cpu_throttle_initial}", str(migration.max_cpu_throttle))
    if not _VERSION.match(migration.qemu_version):
        raise fail("migration.qemu_version", "expected a QEMU version such as '10.2'",
                   repr(migration.qemu_version))
    for side in ("source", "destination"):
        endpoint = getattr(s.endpoints, side)
        if endpoint.version is not None and not _VERSION.match(endpoint.version):
            raise fail(f"endpoints.{side}.version", "expected a QEMU version such as '7.2'",
                       repr(endpoint.version))
        supported = capabilities.supported_by(endpoint.version, endpoint.supports)
        unknown = [c for c in endpoint.enabled if c not in supported]
        if unknown:
            what = (f"QEMU {endpoint.version}" if endpoint.supports is None
                    else "its supports list")
            raise fail(f"endpoints.{side}.enabled", f"not supported by this endpoint ({what})",
                       ", ".join(unknown))
    _check_workload(s, s.workload, "workload", fail)
    for i, phase in enumerate(s.workload.phases):
        _check_workload(s, phase.workload, f"workload.phases[{i}]", fail)


def _check_region(region: RegionSpec, key: str, memory: int, fail: _Fail,
                  whole_pages: int | None = None) -> None:
    """An address range of guest RAM: not empty, inside ``memory`` and, with ``whole_pages``,
    whole pages of that size."""
    got = f"offset {_size(region.offset)}, size {_size(region.size)}"
    if region.size <= 0:
        raise fail(f"{key}.size", "must be > 0", _size(region.size))
    if whole_pages is not None and (region.offset % whole_pages or region.size % whole_pages):
        raise fail(key, f"must be whole pages of vm.page_size, {_size(whole_pages)}", got)
    if region.offset + region.size > memory:
        raise fail(key, f"must lie inside vm.memory, {_size(memory)}", got)


def _check_workload(s: Scenario | GuestSpec, w: Any, path: str, fail: _Fail) -> None:
    memory, page = s.vm.memory, s.vm.page_size
    if w.hot_set is not None and w.hot_set > memory:
        raise fail(f"{path}.hot_set", f"must be at most vm.memory, {_size(memory)}",
                   _size(w.hot_set))
    for name in ("write_size", "word_size"):
        size = getattr(w, name)
        if size > page:
            raise fail(f"{path}.{name}", f"must be at most vm.page_size, {_size(page)}",
                       _size(size))
    if w.region is not None:
        _check_region(w.region, f"{path}.region", memory, fail)
    if w.kind == "phased" and not w.phases:
        raise fail(f"{path}.phases", "a phased workload needs at least one phase", "[]")
    if w.kind == "trace" and not w.trace:
        raise fail(f"{path}.trace", "a trace workload needs the path of its dirty log", "null")
    # The trace file itself, before any run (a missing one still fails its run, as before).
    if w.kind == "trace" and Path(w.trace).exists():
        from sim.workloads import read_trace

        read_trace(w.trace, memory // page)


# ---------------------------------------------------------------- loading


def load_scenario(path: str | Path, overrides: Mapping[str, object] | None = None) -> Scenario:
    """Read, validate and return the scenario in ``path``, with ``--set``-style ``overrides``.

    Raises:
        ScenarioError: anything wrong with the file or an override (``file:line: key: problem``).
    """
    file = str(path)
    try:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)  # no more: a huge file is refused, not read
        except FileNotFoundError as e:
            raise ScenarioError("no such file", file=file) from e
        except IsADirectoryError as e:
            raise ScenarioError("is a directory, not a scenario file", file=file) from e
        except OSError as e:
            raise ScenarioError(f"cannot read the file: {e.strerror or e}", file=file) from e
        if len(data) > MAX_BYTES:
            raise ScenarioError(f"is larger than {units.format_size(MAX_BYTES)}; a scenario is a "
                                "short YAML text (is it the right file?)", file=file)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ScenarioError(f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                                f"{e.start}); a scenario is a YAML text file", file=file,
                                line=data.count(b"\n", 0, e.start) + 1) from e
    except ScenarioError as e:
        raise _one_line(e) from e.__cause__
    return loads_scenario(text, file=file, overrides=overrides)


def loads_scenario(text: str, file: str = "<string>",
                   overrides: Mapping[str, object] | None = None) -> Scenario:
    """Like ``load_scenario`` for YAML ``text``; ``file`` names it in messages and gives the
    default name (its stem) unless it is a ``<placeholder>``."""
    try:
        return _loads(text, file, overrides)
    except ScenarioError as e:
        raise _one_line(e) from e.__cause__


def _loads(text: str, file: str, overrides: Mapping[str, object] | None) -> Scenario:
    node = _compose(text, file)
    if node is None:
        raise ScenarioError("the file is empty; expected a mapping of scenario keys", file=file)
    doc = _Document(file)
    doc.where[""] = (file, node.start_mark.line + 1)
    data = doc.tree(node, "")
    if not isinstance(data, dict):
        raise doc.error("", f"the top level must be a mapping of scenario keys "
                            f"(got {_show(data)})")
    return _finish(doc, data, overrides)


def from_dict(data: Mapping[str, object], *, file: str = "<dict>",
              overrides: Mapping[str, object] | None = None,
              bare_numbers: bool = True) -> Scenario:
    """Build a scenario from ``to_dict``-shaped data (values may carry units, as in YAML).

    A bare number of a size, rate or time is in SI units (bytes, B/s, s); ``bare_numbers=False``
    refuses one other than 0, as for YAML text (for data that a person wrote in YAML)."""
    doc = _Document(file)
    doc.where[""] = (file, None)
    try:
        tree = doc.python(dict(data), "")
        assert isinstance(tree, dict)
        if not bare_numbers:
            doc.si.clear()
        return _finish(doc, tree, overrides)
    except ScenarioError as e:
        raise _one_line(e) from e.__cause__


def _finish(doc: _Document, data: dict[str, Any],
            overrides: Mapping[str, object] | None) -> Scenario:
    for key, value in (overrides or {}).items():
        doc.override(data, key, value)
    if "host" in data:  # --set host=FILE is relative to the working folder, host: to the file
        _merge_host(doc, data, from_cwd="host" in (overrides or {}))
    doc.merge_guests(data)
    builder = _Builder(doc)
    try:
        plugins.load_entry_points()  # installed packages' encoders, once
    except ImportError as e:
        raise ScenarioError(str(e), file=doc.file) from e
    if "plugins" in data:  # imported first: they register capabilities, encoders, workloads
        field = {f.name: f for f in dataclasses.fields(Scenario)}["plugins"]
        for i, module in enumerate(builder.value(_hints(Scenario)["plugins"], field,
                                                 data["plugins"], "plugins")):
            try:
                plugins.import_plugin(module, doc.file)
            except (Exception, SystemExit) as e:  # any error in a plug-in is the scenario's
                raise doc.error(f"plugins[{i}]", f"cannot import plug-in module {_show(module)}: "
                                                 f"{type(e).__name__}: {_clip(str(e), 200)}") from e
    if "name" not in data and not doc.file.startswith("<"):
        data = {"name": Path(doc.file).stem, **data}
    scenario: Scenario = builder.section(Scenario, data, "")
    source = None if doc.file.startswith("<") else doc.file
    scenario = dataclasses.replace(scenario, source_file=source)

    def fail(path: str, problem: str, got: str) -> ScenarioError:
        return doc.error(path, f"{problem} (got {doc.shown(path, got)})")

    scenario = _replay_workloads(scenario, doc, fail,
                                 from_cwd=any("capture" in k for k in (overrides or {})))
    _check(scenario, fail)
    if scenario.sweep is not None:
        _check_sweep(scenario, doc)
    return scenario


def _replay_workloads(scenario: Scenario, doc: _Document, fail: _Fail, from_cwd: bool) -> Scenario:
    """Each ``replay`` workload's capture, read now: its path made relative to the scenario's
    folder (to the working folder from ``--set``), and ``writes_per_s`` (the fitted rates' sum),
    ``write_size`` and ``write_pattern`` (from ``pages.zst``, when there is one) taken from it."""
    from sim.replay import CAPTURE_PAGE_BYTES, CaptureError, fit

    base = Path.cwd() if from_cwd or doc.file.startswith("<") else Path(doc.file).parent

    def resolve(w: WorkloadSpec, vm: Any, path: str) -> WorkloadSpec:
        phases = tuple(dataclasses.replace(p, workload=resolve(p.workload, vm,
                                                               f"{path}.phases[{i}]"))
                       for i, p in enumerate(w.phases))
        w = dataclasses.replace(w, phases=phases) if phases else w
        if w.kind != "replay":
            return w
        if not w.capture:
            raise fail(f"{path}.capture", "a replay workload needs a capture folder", "null")
        folder = (base / w.capture).absolute()  # saved results name it wherever they are
        try:
            fitted = fit(folder)
        except CaptureError as e:
            raise fail(f"{path}.capture", str(e), str(w.capture)) from None
        if vm.memory != fitted.memory or vm.page_size != CAPTURE_PAGE_BYTES:
            raise fail(f"{path}.capture", f"the capture is of {fitted.memory} bytes of RAM "
                       f"({_size(fitted.memory)}) in 4 KiB pages: set vm.memory to "
                       f"{fitted.memory}B and vm.page_size to 4KiB", str(w.capture))
        return dataclasses.replace(
            w, capture=str(folder), writes_per_s=fitted.writes_per_s,
            write_size=fitted.write_size or w.write_size,
            write_pattern=fitted.write_pattern or w.write_pattern)

    scenario = dataclasses.replace(scenario,
                                   workload=resolve(scenario.workload, scenario.vm, "workload"))
    if scenario.vms:
        guests = tuple(dataclasses.replace(g, workload=resolve(g.workload, g.vm,
                                                               f"vms[{i}].workload"))
                       for i, g in enumerate(scenario.vms))
        scenario = dataclasses.replace(scenario, vms=guests)
    return scenario


#: the sections a host profile may set (docs/host-profiles.md)
HOST_SECTIONS = ("source_cpu", "destination_cpu", "switchover_cost", "accelerator", "link")


def _merge_host(doc: _Document, data: dict[str, Any], from_cwd: bool) -> None:
    """``host:`` (a file, relative to the scenario's folder, or an inline mapping): its sections
    go under the scenario's own, key by key; a key the scenario sets itself wins."""
    value = data.pop("host")
    if isinstance(value, str):
        base = Path.cwd() if from_cwd or doc.file.startswith("<") else Path(doc.file).parent
        path = base / value
        file = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise doc.error("host", f"no such host profile {_show(value)}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise doc.error("host", f"cannot read host profile {_show(value)}: {e}") from e
        node = _compose(text, file)
        host_doc = _Document(file)
        host_doc.where[""] = (file, 1)
        host = host_doc.tree(node, "") if node is not None else None
        where, raw = host_doc.where, host_doc.raw
    elif isinstance(value, dict):
        host, where, raw = value, {}, {}
        file = doc.file
    else:
        raise doc.error("host", f"a host profile file name or mapping (got {_show(value)})")
    if not isinstance(host, dict):
        raise ScenarioError(f"a host profile is a mapping of {_names(HOST_SECTIONS)} "
                            f"(got {_show(host)})", file=file, line=1)
    for section, body in host.items():
        if section not in HOST_SECTIONS:
            file_, line = where.get(section, doc.locate("host"))
            raise ScenarioError(f"not a host profile section{_suggest(str(section), HOST_SECTIONS)}",
                                file=file_,
                                line=line, key=str(section))
        own = data.get(section)
        if isinstance(body, dict) and isinstance(own, dict):
            data[section] = {**body, **own}
        elif own is None:
            data[section] = body
        for key, at in where.items():  # errors in the profile's values point into its file
            if key.startswith(section) and key not in doc.where:
                doc.where[key] = at
        for key, shown in raw.items():
            if key.startswith(section) and key not in doc.raw:
                doc.raw[key] = shown


def _check_sweep(s: Scenario, doc: _Document) -> None:
    assert s.sweep is not None
    sweep = s.sweep
    lengths = {key: len(values) for key, values in sweep.zip}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise doc.error("sweep.zip", f"the lists must have the same length (got {shown})")
    runs = math.prod(len(values) for _, values in sweep.grid) * sweep.repeats
    runs *= next(iter(lengths.values()), 1)
    if runs > MAX_RUNS:
        raise doc.error("sweep", f"makes more than {MAX_RUNS} runs; split it into several "
                                 f"scenarios (got {runs} runs)")
    for key, _ in sweep.zip:
        if key in dict(sweep.grid):
            raise doc.error(f"sweep.zip.{key}", "is also in sweep.grid; sweep it in one place")
    swept = {key: f"sweep.grid.{key}" for key, _ in sweep.grid}
    swept.update({key: f"sweep.zip.{key}" for key, _ in sweep.zip})
    for member in expand(s):

        def fail(path: str, problem: str, got: str, member: Scenario = member) -> ScenarioError:
            bare = re.sub(r"^vms\[\d+\]\.", "", path)  # a guest's key follows the swept one
            at = next((where for key, where in swept.items()
                       if bare == key or bare.startswith(key + ".")), None)
            shown = got if at is not None else doc.shown(path, got)
            return doc.error(path, f"in sweep member '{_clip(member.name, 200)}': {problem} "
                                   f"(got {shown})",
                             at=at)

        _check(member, fail)


# ---------------------------------------------------------------- sweeps


def expand(scenario: Scenario) -> list[Scenario]:
    """The runs of a scenario: its sweep members (see the module docstring), or itself."""
    sweep = scenario.sweep
    if sweep is None:
        return [scenario]
    base = dataclasses.replace(scenario, sweep=None)
    grid_keys = [key for key, _ in sweep.grid]
    zip_keys = [key for key, _ in sweep.zip]
    zip_rows: list[tuple[Any, ...]] = (list(zip(*(values for _, values in sweep.zip), strict=True))
                                       if sweep.zip else [()])
    labels = _labels(grid_keys + zip_keys)
    members = []
    for combo in itertools.product(*(values for _, values in sweep.grid)):
        for row in zip_rows:
            assignments = list(zip(grid_keys + zip_keys, (*combo, *row), strict=True))
            varied = base
            for key, value in assignments:
                varied = _assign_member(varied, key, value)
            parts = [f"{labels[key]}={_name_value(sweep, key, value)}" for key, value in assignments]
            for repeat in range(sweep.repeats):
                params = list(assignments)
                name_parts = list(parts)
                if sweep.repeats > 1:
                    params.append(("repeat", repeat))
                    name_parts.append(f"r{repeat}")
                members.append(dataclasses.replace(
                    varied,
                    name="-".join([scenario.name, *name_parts]),
                    seed=varied.seed + repeat,
                    params=tuple(params),
                ))
    return members


def _labels(keys: list[str]) -> dict[str, str]:
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)}


def _name_value(sweep: Any, key: str, value: object) -> str:
    unit = key_unit(key)
    if value is None:
        text = "null"
    elif unit is not None and isinstance(value, int | float):
        text = _FORMATTERS[unit](value, exact=True)
        text = text.replace("bit/s", "bps").replace("B/s", "Bps")
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}" if float(f"{value:g}") == value else repr(value)
    elif isinstance(value, int | str):
        text = str(value)
    elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        text = "+".join(value) if value else "none"
    else:  # a section or a list of sections: its position in the sweep list
        values = dict(sweep.grid).get(key) or dict(sweep.zip).get(key) or ()
        text = f"v{values.index(value)}" if value in values else "v"
    return re.sub(r"[\s/\\]+", "_", text)


def _assign_member(s: Scenario, key: str, value: object) -> Scenario:
    """``_assign`` for a sweep member: the guests that follow the top-level value follow too."""
    if s.vms and key.split(".")[0] in _GUEST_SECTIONS:
        s = dataclasses.replace(s, vms=tuple(
            _assign(guest, key, value) if _follows(s, guest, key) else guest for guest in s.vms))
    return _assign(s, key, value)


def _follows(s: Scenario, guest: GuestSpec, key: str) -> bool:
    """Whether ``guest`` has the top-level value of ``key`` (the same kind of workload, for
    ``workload.*`` keys)."""
    if key.startswith("workload.") and guest.workload.kind != s.workload.kind:
        return False
    return bool(_get(guest, key) == _get(s, key))


def _get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = None if obj is None else getattr(obj, part)
    return obj


def _assign(obj: Any, key: str, value: object) -> Any:
    """``obj`` with the dotted ``key`` set to ``value`` (sections created from their defaults)."""
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    child = getattr(obj, head)
    if child is None:
        child = _optional(_hints(type(obj))[head])[0]()
    return dataclasses.replace(obj, **{head: _assign(child, rest, value)})


# ---------------------------------------------------------------- writing back


def to_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario as YAML-ready data with units (``"4GiB"``, ``"300ms"``), every field written.

    ``loads_scenario(yaml.safe_dump(to_dict(s), sort_keys=False)) == s`` for every valid scenario
    (keep the key order: the order of sweep keys decides the order of the members).
    """
    out = _dump_dataclass(scenario)
    if scenario.vms:
        out["vms"] = [_dump_guest(guest, scenario) for guest in scenario.vms]
    return out


def _dump_guest(guest: GuestSpec, top: Scenario) -> dict[str, Any]:
    """A ``vms`` item: its name and what differs from the top-level sections it merges over."""
    out: dict[str, Any] = {"name": guest.name}
    for section in _GUEST_SECTIONS:
        own = _dump_dataclass(getattr(guest, section))
        if section == "workload" and guest.workload.kind != top.workload.kind:
            out[section] = own  # another kind inherits nothing
        elif diff := _diff(own, _dump_dataclass(getattr(top, section))):
            out[section] = diff
    return out


def _diff(own: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``own`` that differ from ``base``; a key only ``base`` has becomes null."""
    out: dict[str, Any] = {}
    for key in [*own, *(k for k in base if k not in own)]:
        mine, theirs = own.get(key), base.get(key)
        if mine == theirs:
            continue
        if isinstance(mine, dict) and isinstance(theirs, dict):
            mine = _diff(mine, theirs)
        out[key] = mine
    return out


def _dump_dataclass(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = _hints(type(obj))
    for f in _yaml_fields(type(obj)):
        value = getattr(obj, f.name)
        if f.metadata.get("inline"):
            out.update(_dump_dataclass(value))
            continue
        if value is None and f.default is None:
            continue
        if f.name in _OMIT_EMPTY and not value:
            continue
        out[f.name] = _dump_value(hints[f.name], f, value)
    return out


def _dump_value(tp: Any, f: dataclasses.Field[Any], value: Any) -> Any:
    if value is None:
        return None
    inner, _ = _optional(tp)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dump_dataclass(value)
    keyed = _keyed(inner)
    if keyed is not None:
        many = _list_item(keyed) is not None
        out: dict[str, Any] = {}
        for key, item in value:
            target = key_field(key)
            if target is None:
                out[key] = list(item) if many else item
            elif many:
                out[key] = [_dump_value(target[1], target[0], v) for v in item]
            else:
                out[key] = _dump_value(target[1], target[0], item)
        return out
    item_tp = _list_item(inner)
    if item_tp is not None:
        return [_dump_value(item_tp, f, v) for v in value]
    unit = f.metadata.get("unit")
    if unit is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return _FORMATTERS[unit](value, exact=True)
    return value
