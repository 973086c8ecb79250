"""What ``migsim validate`` shows: a text table, ``validation.csv`` and a figure.

The figure has two panels: model against expected on log-log axes (a point on the diagonal is a
perfect match; quantities of every unit share the axes because the diagonal is unit-free), and
each quantity's relative error on a log axis next to its case, with the tolerance marked where it
is relative. Out-of-tolerance points are red, reported-only ones grey.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .suite import Row, is_number

CSV_COLUMNS = ("case", "quantity", "expected", "model", "rel_error", "tolerance", "ok", "kind",
               "note", "source")
FLOOR = 1e-12  # relative errors of exactly 0 are drawn here


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int | float):
        v = float(value)
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):d}"
        return f"{v:.6g}"
    return str(value)


def _ok(row: Row) -> str:
    return {True: "ok", False: "FAIL", None: "-"}[row.ok]


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width columns: case, quantity, expected, model, rel error, tolerance, ok."""
    headers = ("case", "quantity", "expected", "model", "rel error", "tolerance", "ok")
    cells = [(r.case, r.quantity, _fmt(r.expected), _fmt(r.model),
              "-" if math.isnan(r.rel_error) else f"{r.rel_error:.2e}", r.tolerance, _ok(r))
             for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    right = (False, False, True, True, True, False, False)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    previous = None
    for row, cell in zip(rows, cells, strict=True):
        shown = list(cell)
        if row.case == previous:
            shown[0] = ""
        previous = row.case
        out.append(line(shown))
    return "\n".join(out)


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            d = row.as_dict()
            writer.writerow({k: ("" if d[k] is None else d[k]) for k in CSV_COLUMNS})
    return path


def _colour(row: Row) -> str:
    return {True: "tab:green", False: "tab:red", None: "tab:gray"}[row.ok]


def _scatter(ax: Any, xs: Sequence[float], ys: Sequence[float], rows: Sequence[Row], marker: str,
             label: str | None = None) -> None:
    """Judged points filled and on top; reported-only ones hollow grey underneath."""
    for judged in (False, True):
        sel = [i for i, r in enumerate(rows) if (r.ok is not None) == judged]
        if not sel:
            continue
        colours = [_colour(rows[i]) for i in sel]
        style: dict[str, Any] = ({"c": colours, "edgecolors": "none", "zorder": 3} if judged
                                 else {"facecolors": "none", "edgecolors": colours, "zorder": 2})
        ax.scatter([xs[i] for i in sel], [ys[i] for i in sel], marker=marker, s=28, alpha=0.8,
                   label=label if judged or not any(r.ok is not None for r in rows) else None,
                   **style)


def draw(rows: Sequence[Row], path: Path) -> Path:
    """The two-panel figure (PNG) of ``rows``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [r for r in rows if is_number(r.expected) and is_number(r.model)]
    cases = list(dict.fromkeys(r.case for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(5.0, 0.32 * len(cases) + 2)),
                                   gridspec_kw={"width_ratios": [1, 1.3]})
    pos = [r for r in numeric if float(r.expected) > 0 and float(r.model) > 0]  # type: ignore[arg-type]
    markers = {"≥ expected": "^", "≤ expected": "v"}  # bounds: the point must lie above / below
    for kind, marker in (("model", "o"), ("qemu", "s")):
        for shape in (marker, "^", "v"):
            pts = [r for r in pos if r.kind == kind and markers.get(r.tolerance, marker) == shape]
            if not pts:
                continue
            label = "closed form / published" if kind == "model" else "real QEMU (expected)"
            _scatter(ax1, [float(r.expected) for r in pts],  # type: ignore[arg-type]
                     [float(r.model) for r in pts], pts, shape,  # type: ignore[arg-type]
                     label if shape == marker else
                     f"bound ({shape}: model must be {'above' if shape == '^' else 'below'})")
    if pos:
        lo = min(min(float(r.expected), float(r.model)) for r in pos)  # type: ignore[arg-type]
        hi = max(max(float(r.expected), float(r.model)) for r in pos)  # type: ignore[arg-type]
        ax1.plot([lo, hi], [lo, hi], color="black", lw=0.8, zorder=0)
        ax1.set_xscale("log")
        ax1.set_yscale("log")
    ax1.set_xlabel("expected (formula, published, or QEMU measured)")
    ax1.set_ylabel("model (migsim)")
    ax1.set_title("model vs expected (each point one quantity, any unit)")
    ax1.legend(loc="upper left", fontsize=8)

    y = {c: i for i, c in enumerate(cases)}
    for r in rows:
        if math.isnan(r.rel_error) or math.isinf(r.rel_error):
            continue
        _scatter(ax2, [max(r.rel_error, FLOOR)], [y[r.case]], [r],
                 "s" if r.kind == "qemu" else "o")
        if r.tolerance.endswith(" rel"):
            tol = float(r.tolerance.split()[0].lstrip("±"))
            ax2.scatter(tol, y[r.case], marker="|", c="black", s=120, lw=1)
    ax2.set_xscale("log")
    ax2.set_xlim(FLOOR / 3, 10)
    ax2.set_yticks(range(len(cases)), cases, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel(f"relative error (|model − expected| / expected; 0 drawn at {FLOOR:g})")
    ax2.set_title("relative error per quantity ( | = relative tolerance )")
    ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
