"""The engine stays small parts (issue: one engine that reads like QEMU's loop): no class over
300 lines and no function over 120 in ``sim/engine``; no capability name asked inline in the
phases; no kernel counter index used outside the kernel."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "sim" / "engine"
SIM = ENGINE.parent
MAX_CLASS, MAX_FUNCTION = 300, 120


def _definitions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            yield node


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_engine_parts_are_small(path: Path) -> None:
    for node in _definitions(path):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
        assert length <= limit, f"{path.name}:{node.lineno}: {node.name} has {length} lines"


@pytest.mark.parametrize("name", ["precopy.py", "switchover.py", "postcopy.py", "migration.py"])
def test_phases_ask_policies_not_capability_names(name: str) -> None:
    """The loop and its phases ask the policies chosen at setup; a capability's name appears
    only where a policy is chosen (throttle.py, postcopy's trigger, the pipeline) or for the
    wire (return-path, postcopy-preempt)."""
    allowed = {"return-path", "postcopy-preempt", "postcopy-ram", "auto-converge"}
    text = (ENGINE / name).read_text()
    asked = set(re.findall(r'is_enabled\("([a-z-]+)"\)', text))
    assert asked <= allowed, f"{name} asks {sorted(asked - allowed)} inline"


def test_kernel_counter_indices_stay_in_the_kernel() -> None:
    for path in SIM.rglob("*.py"):
        if path.name == "kernel.py":
            continue
        assert not re.search(r"\bC_[A-Z_]+\b", path.read_text()), path
