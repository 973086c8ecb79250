"""Named quantities read off a run's tables, so case files can name what they check.

A quantity is a ``runs`` column (``downtime_s``, ``status``, ...), one of the pass-structure
quantities below, or a ratio ``A / B`` of two of them. In a case with several named runs, an
operand is written ``run.quantity``.

Pass structure (published-results §6 conventions): the passes table's last row of a completed
run is the stop-and-copy (the completion sync); the rows before it that sent pages are the live
passes, round 0 (the bulk pass) first. A sync that sent nothing (the policy's own end-of-round
sync just before completion) is not a pass in the papers' sense and is skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import pandas as pd

from sim.result import Result
from sim.spec import Scenario

Value = float | str
_PASS = re.compile(r"pass_pages\[(\d+)\]")


class QuantityError(KeyError):
    """The case names a quantity that does not exist."""


def _select(frame: pd.DataFrame, vm: str | None) -> pd.DataFrame:
    if vm is None or "vm" not in frame.columns:  # a single-guest run: `vm` does not apply
        return frame
    selected = frame[frame["vm"] == vm]
    if selected.empty and "run_id" in frame.columns and "status" in frame.columns:
        raise QuantityError(f"no guest named {vm!r}")
    return selected


def _live(passes: pd.DataFrame) -> list[float]:
    body = passes.iloc[:-1]
    return [float(p) for p in body.loc[body["pages_sent"] > 0, "pages_sent"]]


def extract(result: Result, scenario: Scenario, name: str, vm: str | None = None) -> Value:
    """The value of quantity ``name`` (no ratio, no run prefix) in one run's tables."""
    runs = _select(result.runs, vm)
    if len(runs) != 1:
        raise QuantityError(f"{name}: expected one run row, found {len(runs)}")
    run = runs.iloc[0]
    passes = _select(result.passes, vm)
    if name == "live_passes":
        return float(len(_live(passes)))
    if (m := _PASS.fullmatch(name)) is not None:
        live = _live(passes)
        i = int(m.group(1))
        return live[i] if i < len(live) else math.nan
    if name == "stop_copy_pages":
        return float(passes["pages_sent"].iloc[-1]) if len(passes) else math.nan
    if name == "transferred_pages":
        return float(run["transferred_bytes"]) / scenario.vm.page_size
    if name not in runs.columns:
        raise QuantityError(f"unknown quantity {name!r}")
    value = run[name]
    if isinstance(value, str):
        return value
    return float(value)


def mean(values: Sequence[Value]) -> Value:
    """Numbers: their mean; strings: the common value, or every distinct value joined by |."""
    if all(isinstance(v, int | float) for v in values):
        return float(sum(float(v) for v in values) / len(values))
    distinct = sorted({str(v) for v in values})
    return distinct[0] if len(distinct) == 1 else "|".join(distinct)


def operand(results: Mapping[str, Sequence[tuple[Result, Scenario]]], text: str,
            vm: str | None) -> Value:
    """``run.quantity`` (or ``quantity`` for the case's only run), averaged over seeds."""
    run, dot, name = text.strip().partition(".")
    if not dot:
        run, name = "", run
        if "" not in results:
            if len(results) != 1:
                raise QuantityError(f"{text}: name the run ({', '.join(results)})")
            run = next(iter(results))
    if run not in results:
        raise QuantityError(f"{text}: no run named {run!r}")
    return mean([extract(r, s, name, vm) for r, s in results[run]])


def value(results: Mapping[str, Sequence[tuple[Result, Scenario]]], quantity: str,
          vm: str | None = None) -> Value:
    """A quantity or a ratio ``A / B`` of two, over a case's runs (each a list over seeds)."""
    parts = quantity.split(" / ")
    if len(parts) == 1:
        return operand(results, parts[0], vm)
    if len(parts) != 2:
        raise QuantityError(f"{quantity}: only one ratio is supported")
    a, b = (operand(results, p, vm) for p in parts)
    if isinstance(a, str) or isinstance(b, str):
        raise QuantityError(f"{quantity}: a ratio of non-numbers")
    return a / b if b != 0 else math.inf
