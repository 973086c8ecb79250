"""Run validation cases through the simulator and judge each quantity.

One :class:`Row` per (case, quantity): the expected value (from a formula, a published source
or a QEMU measurement), the model's value, the relative error and whether it is within the
case's tolerance. ``migsim validate`` prints the rows, writes them to ``validation.csv`` and draws
them (:mod:`sim.validation.report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sim.result import Result
from sim.spec import Scenario

from .cases import Case, Check, Value, deep_merge
from .quantities import value


@dataclass(frozen=True)
class Row:
    """One judged quantity."""

    case: str
    quantity: str
    expected: Value | None
    model: Value | None
    rel_error: float
    tolerance: str
    ok: bool | None  # None: reported, not judged
    kind: str  # model | qemu
    source: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(case: Case, check: Check, expected: Value | None, model: Value | None,
          note: str = "") -> Row:
    rel, ok = check.judge(expected, model)
    label = check.quantity if check.vm is None else f"{check.quantity} [{check.vm}]"
    return Row(case=case.id, quantity=label, expected=expected, model=model, rel_error=rel,
               tolerance=check.tolerance_text(), ok=ok, kind=case.kind, source=case.source,
               note=note or check.note)


def scenarios(case: Case, seed: int) -> dict[str, Scenario]:
    """The case's runs as scenarios, for one seed."""
    from sim.scenario import from_dict

    return {name: from_dict(deep_merge(data, {"seed": seed}), file=str(case.path),
                            bare_numbers=False)  # a case is YAML text: sizes need their units
            for name, data in case.runs.items()}


def run_model_case(case: Case) -> list[Row]:
    """Every run of ``case`` (for every seed) through the simulator; one row per check."""
    from sim.run import run_one

    results: dict[str, list[tuple[Result, Scenario]]] = {name: [] for name in case.runs}
    for seed in case.seeds:
        for name, scenario in scenarios(case, seed).items():
            results[name].append((run_one(scenario), scenario))
    rows = []
    for check in case.checks:
        try:
            model: Value | None = value(results, check.quantity, check.vm)
        except (KeyError, IndexError, ValueError) as err:
            rows.append(judge(case, check, check.expected, None, note=f"error: {err}"))
            continue
        rows.append(judge(case, check, check.expected, model))
    return rows


def run_cases(cases: Iterable[Case], runner: Callable[[Case], list[Row]] = run_model_case,
              on_case: Callable[[Case, list[Row], float], None] | None = None) -> list[Row]:
    """Run each case with ``runner``; ``on_case(case, rows, wall_s)`` after each one."""
    import time

    rows: list[Row] = []
    for case in cases:
        started = time.monotonic()
        case_rows = runner(case)
        rows.extend(case_rows)
        if on_case is not None:
            on_case(case, case_rows, time.monotonic() - started)
    return rows


def failures(rows: Sequence[Row]) -> list[Row]:
    """Rows out of tolerance (reported-only rows never fail)."""
    return [r for r in rows if r.ok is False]


def formula_agreement(case: Case) -> list[tuple[Check, float, float]]:
    """(check, expected in the file, the formula's value) for each check a formula covers: the
    guard against typos in the case data (used by the tests). ``formula:`` is one formula for
    every run, or a mapping run name -> formula."""
    from .formulas import evaluate

    if case.formula is None:
        return []
    per_run = "name" not in case.formula
    out = []
    for check in case.checks:
        if " / " in check.quantity or not isinstance(check.expected, int | float):
            continue
        run, dot, name = check.quantity.partition(".")
        if not dot:
            run, name = "", run
        spec = case.formula.get(run) if per_run else case.formula
        if spec is None:
            continue
        derived: Mapping[str, float] = evaluate(spec)
        if name in derived:
            out.append((check, float(check.expected), float(derived[name])))
    return out


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
