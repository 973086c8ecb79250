"""The package's shape, read from its source with ``ast``: the modules of ``sim/`` import each other
without a cycle (imports inside functions and imports by name count), and no module uses a
``_private`` name of another sim module (STYLE §2: a leading ``_`` means private to its module)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "sim"

def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of sim/ (a package by its __init__.py)."""
    modules = {}
    for path in sorted(SIM.rglob("*.py")):
        parts = path.relative_to(SIM.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _logger(call: ast.Call) -> bool:
    """``logging.getLogger("sim.qmp")``: a logger's name, not an import."""
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "getLogger") or (
        isinstance(func, ast.Name) and func.id == "getLogger")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class _Reader:
    """What one module imports (edges) and which private names of other modules it uses."""

    name: str
    is_package: bool
    imports: set[str] = field(default_factory=set)
    private_uses: set[str] = field(default_factory=set)
    # local name -> the sim module it is bound to, or "module:object" for an imported object
    bound: dict[str, str] = field(default_factory=dict)

    def owner(self, target: str) -> str:
        """The module a bound name belongs to."""
        return target.split(":", 1)[0]

    def base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.name if self.is_package else self.name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def use(self, owner: str, name: str) -> None:
        if owner != self.name and owner in MODULES and _private(name):
            self.private_uses.add(f"{owner}.{name}")

    def resolve(self, node: ast.expr) -> str | None:
        """The sim module (or "module:object") an expression stands for, if any."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            outer = self.resolve(node.value)
            if outer is None or ":" in outer:
                return None
            inner = f"{outer}.{node.attr}"
            return inner if inner in MODULES else f"{outer}:{node.attr}"
        if isinstance(node, ast.Call) and not _logger(node) and node.args:
            first = node.args[0]  # importlib.import_module("sim.x"), the CLI's _module("sim.x")
            if isinstance(first, ast.Constant) and first.value in MODULES:
                return str(first.value)
        return None

    def read(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):  # bindings first: a use may come before the import in order
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES or alias.name.split(".")[0] == "sim":
                        self.imports.add(alias.name)
                        if alias.asname:
                            self.bound[alias.asname] = alias.name
                        else:
                            self.bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = self.base(node)
                if base not in MODULES:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    local = alias.asname or alias.name
                    if sub in MODULES:
                        self.imports.add(sub)
                        self.bound[local] = sub
                    else:
                        self.imports.add(base)
                        self.bound[local] = f"{base}:{alias.name}"
                        self.use(base, alias.name)
            elif (isinstance(node, ast.Assign) and len(node.targets) == 1
                  and isinstance(node.targets[0], ast.Name)):
                target = self.resolve(node.value)
                if isinstance(node.value, ast.Call) and target is not None and ":" not in target:
                    self.bound[node.targets[0].id] = target
        loggers = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call) and _logger(node)
                   for arg in node.args}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in MODULES and id(node) not in loggers:
                # A string naming a module is an import by name: importlib.import_module("sim.x"),
                # the CLI's _module("sim.x") and its registry table, a forkserver preload list.
                self.imports.add(str(node.value))
            elif isinstance(node, ast.Attribute):
                outer = self.resolve(node.value)
                if outer is not None:
                    self.use(self.owner(outer), node.attr)
                    if ":" not in outer and f"{outer}.{node.attr}" in MODULES:
                        self.imports.add(f"{outer}.{node.attr}")
        self.imports.discard(self.name)
        self.imports &= set(MODULES)


def _readers() -> Iterator[_Reader]:
    for name, path in MODULES.items():
        reader = _Reader(name, path.name == "__init__.py")
        reader.read(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        yield reader


READERS = {reader.name: reader for reader in _readers()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_imports_inside_functions_and_by_name() -> None:
    """The checks below are only as good as the reader: it finds the kinds of import sim uses."""
    reader = _Reader("sim.example", is_package=False)
    reader.read(ast.parse(
        "import importlib\n"
        "from sim.spec import Scenario\n"
        "def f():\n"
        "    from sim.result import _hidden\n"
        "    from . import units\n"
        "    mod = importlib.import_module('sim.scenario')\n"
        "    mod._private(units._TABLE, Scenario._field)\n"
        "    return load('sim.report')\n"))
    assert reader.imports == {"sim.spec", "sim.result", "sim.units", "sim.scenario", "sim.report"}
    assert reader.private_uses == {"sim.result._hidden", "sim.scenario._private",
                                   "sim.units._TABLE", "sim.spec._field"}


def test_sim_has_no_import_cycle() -> None:
    graph = {name: reader.imports for name, reader in READERS.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(name: str) -> None:
    assert sorted(READERS[name].private_uses) == []


# Size units are defined once, in sim/units.py.
UNIT_NAMES = ("KiB", "MiB", "GiB", "TiB")


def _defines_units(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id in UNIT_NAMES for t in node.targets) for node in tree.body)


def test_size_units_are_defined_only_in_units() -> None:
    defining = {name for name, path in MODULES.items()
                if _defines_units(ast.parse(path.read_text(encoding="utf-8")))}
    assert defining == {"sim.units"}
