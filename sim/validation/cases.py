"""Validation cases as data: one YAML file per case, loaded into :class:`Case`.

Why data and not test code: a case is a claim about the world (a closed form, a published number,
a QEMU measurement) with its source and the tolerance the source justifies. Keeping those in
files lets ``migsim validate`` print them, a reader audit them, and new cases be added without
code. A model case looks like::

    id: v2-geometric-300ms
    title: one line
    source: where the expected numbers come from (with its published-results tag)
    scenario: {...}            # a migsim scenario (DESIGN §4), as a mapping
    runs: {raw: {...}, ...}    # optional: named variants, each deep-merged over `scenario`
    seeds: [0, 1, 2, 3]        # optional: the model value is the mean over these seeds
    formula: {name: geometric, M: 1GiB, ...}   # optional: tests re-derive the expected values
    checks:
      - {quantity: downtime_s, expected: 0.25, rel: 1.0e-9}
      - {quantity: "raw.downtime_s / xbzrle.downtime_s", at_least: 100, at_most: 30000}

A real-QEMU case has a ``qemu:`` section instead of ``scenario:`` (see :mod:`sim.validation.real`)
and its checks carry no expected value: QEMU's measurement is the expected value.

Check rules: ``rel`` (|model − expected| ≤ rel·|expected|, or ≤ ``or_within`` in the quantity's
unit when given: "downtime within 50% or 1.5 ms"), ``abs``, ``at_least`` with
``at_most`` (a range: both bounds, each derived from the source; a one-sided bound is refused,
since it passes values orders of magnitude off), ``equals`` (strings; ``true`` in a real case
means "equal to QEMU's"), ``report`` (shown, never judged).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CASES_DIR = Path(__file__).with_name("cases")
REAL_DIR = Path(__file__).with_name("real")
RULES = ("rel", "abs", "at_least", "at_most", "equals", "report")
# A range is written as at_least + at_most; it is the one check with two rule keys.
RANGE = ("at_least", "at_most")

Value = float | str


class CaseError(ValueError):
    """A case file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Check:
    """One quantity of one case and how close the model must come."""

    quantity: str
    rule: str
    expected: Value | None = None  # None: taken from the measurement (real cases)
    tol: float = 0.0
    vm: str | None = None  # a fleet's guest
    note: str = ""
    upper: float | None = None  # a range's upper bound (``expected`` is its lower one)
    slack: float = 0.0  # rel: also within this much, in the quantity's unit ("50% or 1.5 ms")

    @property
    def judged(self) -> bool:
        return self.rule != "report"

    def tolerance_text(self) -> str:
        if self.rule == "between":
            return f"in [{float(self.expected or 0):g}, {float(self.upper or 0):g}]"
        if self.rule == "rel" and self.slack > 0:
            return f"±{self.tol:.3g} rel or ±{self.slack:g}"
        return {
            "rel": f"±{self.tol:.3g} rel",
            "abs": f"±{self.tol:.3g}",
            "at_least": "≥ expected",
            "at_most": "≤ expected",
            "equals": "equal",
            "report": "(report)",
        }[self.rule]

    def judge(self, expected: Value | None, model: Value | None) -> tuple[float, bool | None]:
        """(relative error, ok); ok is None for a reported-only quantity. A bound has no
        relative error (NaN): its distance from the bound is not an error."""
        bound = self.rule in ("at_least", "at_most", "between")
        rel = math.nan if bound else relative_error(expected, model)
        if not self.judged:
            return rel, None
        if expected is None or model is None:
            return rel, False
        if self.rule == "equals" or isinstance(expected, str) or isinstance(model, str):
            return rel, str(expected) == str(model)
        e, m = float(expected), float(model)
        if math.isnan(m) or math.isnan(e):
            return rel, False
        ok = {
            "rel": abs(m - e) <= max(self.tol * abs(e), self.slack),
            "abs": abs(m - e) <= self.tol,
            "at_least": m >= e,
            "at_most": m <= e,
            "between": self.upper is not None and e <= m <= self.upper,
        }[self.rule]
        return rel, bool(ok)


def relative_error(expected: Value | None, model: Value | None) -> float:
    if not isinstance(expected, int | float) or not isinstance(model, int | float):
        return math.nan
    if expected == 0:
        return 0.0 if model == 0 else math.inf
    return abs(float(model) - float(expected)) / abs(float(expected))


@dataclass(frozen=True)
class Case:
    """One validation case (see the module docstring for the file format)."""

    id: str
    title: str
    source: str
    path: Path
    checks: tuple[Check, ...]
    kind: str = "model"  # model | qemu
    runs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> scenario dict
    seeds: tuple[int, ...] = (0,)
    formula: Mapping[str, Any] | None = None
    qemu: Mapping[str, Any] | None = None
    model: Mapping[str, Any] = field(default_factory=dict)  # real cases: model-only settings


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check(item: Any, where: str) -> Check:
    if not isinstance(item, Mapping) or "quantity" not in item:
        raise CaseError(f"{where}: a check needs a `quantity`")
    rules = [r for r in RULES if r in item]
    if any(r in rules for r in RANGE) and not all(r in rules for r in RANGE):
        raise CaseError(f"{where}: {item['quantity']}: a bound needs its other side too "
                        "(at_least and at_most, each derived from the source), or use rel")
    if rules == list(RANGE):
        low, high = item["at_least"], item["at_most"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) \
                or not low <= high:
            raise CaseError(f"{where}: {item['quantity']}: at_least and at_most must be numbers, "
                            "at_least ≤ at_most")
        rules = ["between"]
    if len(rules) != 1:
        raise CaseError(f"{where}: {item['quantity']}: give exactly one of {', '.join(RULES)}")
    rule = rules[0]
    value: Any = item.get(rule)
    expected = item.get("expected")
    tol = 0.0
    upper: float | None = None
    if rule == "between":
        expected, upper = float(item["at_least"]), float(item["at_most"])
    elif rule in ("rel", "abs"):
        tol = float(value)
    elif rule in ("at_least", "at_most"):
        expected = value
    elif rule == "equals" and value is not True:
        expected = value
    if isinstance(expected, bool) or (expected is not None
                                      and not isinstance(expected, int | float | str)):
        raise CaseError(f"{where}: {item['quantity']}: expected must be a number or a string")
    unknown = set(item) - {"quantity", "expected", "vm", "note", "or_within", *RULES}
    if unknown:
        raise CaseError(f"{where}: {item['quantity']}: unknown key(s) {', '.join(sorted(unknown))}")
    slack = item.get("or_within", 0.0)
    if "or_within" in item and (rule != "rel" or isinstance(slack, bool)
                                or not isinstance(slack, int | float) or slack < 0):
        raise CaseError(f"{where}: {item['quantity']}: or_within goes with rel and is a number "
                        "≥ 0 in the quantity's unit")
    return Check(quantity=str(item["quantity"]), rule=rule, expected=expected, tol=tol,
                 vm=item.get("vm"), note=str(item.get("note", "")), upper=upper,
                 slack=float(slack))


def load_case(path: Path) -> Case:
    """Read one case file; a malformed file raises :class:`CaseError` naming it."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping):
        raise CaseError(f"{path}: not a mapping")
    missing = [k for k in ("id", "title", "source", "checks") if k not in data]
    if missing:
        raise CaseError(f"{path}: missing {', '.join(missing)}")
    checks = tuple(_check(c, f"{path}") for c in data["checks"])
    kind = "qemu" if "qemu" in data else "model"
    runs: dict[str, Mapping[str, Any]] = {}
    if kind == "model":
        base = data.get("scenario")
        if not isinstance(base, Mapping):
            raise CaseError(f"{path}: a model case needs a `scenario` mapping")
        variants = data.get("runs") or {"": {}}
        runs = {str(name): deep_merge(base, over or {}) for name, over in variants.items()}
    elif any(c.expected is not None for c in checks):
        raise CaseError(f"{path}: a real-QEMU case takes its expected values from QEMU")
    return Case(id=str(data["id"]), title=str(data["title"]), source=str(data["source"]).strip(),
                path=path, checks=checks, kind=kind, runs=runs,
                seeds=tuple(int(s) for s in data.get("seeds", [0])),
                formula=data.get("formula"), qemu=data.get("qemu"),
                model=data.get("model") or {})


def load_cases(directory: Path = CASES_DIR) -> list[Case]:
    """Every ``*.yaml`` case in ``directory``, in file-name order."""
    return [load_case(p) for p in sorted(directory.glob("*.yaml"))]
