"""``report.html``: one self-contained page per results directory, for eyes and for CI artifacts.

``write_report(result, outdir, figures)`` writes the scenario's name, a summary table of the runs
(units in the headers, from :mod:`sim.labels`), the figures it is given as (PNG, caption) pairs
embedded as base64 (so the file stands alone), the scenario YAML, the events count and what
generated the page. No JavaScript; every text is escaped. ``sim.figures.draw_standard_figures``
calls it after drawing, so ``migsim run`` and ``migsim plot`` leave it.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.labels import format_cell, format_param, summary_column
from sim.result import SCENARIO_FILE, provenance, read_provenance, scenario_yaml, write_atomic

if TYPE_CHECKING:
    import pandas as pd

    from sim.result import Result

REPORT_FILE = "report.html"

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; box-sizing: border-box; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.meta { color: #666; font-size: 0.85em; }
.wide { overflow-x: auto; }
"""


def write_report(result: Result, outdir: str | os.PathLike[str],
                 figures: Sequence[tuple[str | os.PathLike[str], str]] = (),
                 source: str | None = None) -> Path:
    """Write ``outdir/report.html`` and return its path.

    ``figures``: the PNGs to embed, as (path, caption) pairs in page order; those not on disk are
    left out. ``sim.figures.draw_standard_figures`` passes the standard figures it drew.
    ``source`` names the results folder (default ``outdir``'s name). The provenance line comes
    from ``outdir/provenance.json``, else from the Result.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = [(Path(f), caption) for f, caption in figures
            if Path(f).suffix == ".png" and Path(f).is_file()]
    prov = read_provenance(out) or provenance(result.scenario)
    page = render_report(result, pngs, saved_scenario(result, out),
                         source=out.name if source is None else source, provenance=prov)
    path = out / REPORT_FILE
    write_atomic(path, page.encode("utf-8"))
    return path


def render_report(result: Result, figures: Sequence[tuple[Path, str]], scenario_text: str | None,
                  source: str = "", provenance: dict[str, Any] | None = None) -> str:
    """The page as a string (see ``write_report``)."""
    name = scenario_name(result) or source or "results"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>migsim report: {_esc(name)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>migsim report: {_esc(name)}</h1>",
        f"<p>Scenario <strong>{_esc(name)}</strong>: {_esc(status_line(result.runs))}.</p>",
        "<h2>Runs</h2>",
        runs_table(result),
        "<h2>Figures</h2>",
        *(_figure(path, caption) for path, caption in figures),
        "" if figures else "<p>(no figures)</p>",
        "<h2>Events</h2>",
        events_section(result.events),
        "<h2>Scenario</h2>",
        f"<pre>{_esc(scenario_text or '(no scenario saved with these tables)')}</pre>",
        f'<p class="meta">{_esc(generation_line(source))}</p>',
        "" if provenance is None else f'<p class="meta">{_esc(provenance_line(provenance))}</p>',
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


# -- pieces ---------------------------------------------------------------------------------------


def scenario_name(result: Result) -> str | None:
    """The scenario's name: from the Scenario object(s), else from the runs table."""
    scenario = result.scenario
    if isinstance(scenario, list):
        names = list(dict.fromkeys(s.name for s in scenario))
        return ", ".join(names) if names else None
    if scenario is not None:
        return str(scenario.name)
    if "scenario" in result.runs.columns and len(result.runs):
        return ", ".join(dict.fromkeys(str(s) for s in result.runs["scenario"]))
    return None


def status_line(runs: pd.DataFrame) -> str:
    """``5 runs: 3 completed, 2 cancelled``."""
    n = len(runs)
    text = f"{n} run{'s' if n != 1 else ''}"
    if "vm" in runs.columns and n:
        text = f"{n} migrations of {runs['vm'].nunique()} guests"
    if n and "status" in runs.columns:
        counts = runs["status"].value_counts(sort=False)
        text += ": " + ", ".join(f"{int(k)} {s}" for s, k in counts.items())
    return text


def runs_table(result: Result) -> str:
    """The runs as an HTML table: Result.summary() with units in the headers."""
    summary = result.summary()
    if not len(summary):
        return "<p>(no runs)</p>"
    if len(summary) > 1 and "scenario" in summary.columns and summary["scenario"].nunique() == 1:
        summary = summary.drop(columns="scenario")  # named in the heading already
    params = set(result.params)
    head = []
    for column in summary.columns:
        header = column if column in params and column != "vm" else summary_column(column).report
        head.append(f"<th>{_esc(header)}</th>")
    rows = []
    for _, row in summary.iterrows():
        cells = []
        for column in summary.columns:
            value = row[column]
            if column in params and column != "vm":
                text, numeric = format_param(column, value), False
            else:
                fmt = summary_column(column).format
                text, numeric = format_cell(value, fmt), fmt != "s"
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{_esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="wide"><table class="runs">\n<thead><tr>{"".join(head)}</tr></thead>\n'
            "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table></div>")


def events_section(events: pd.DataFrame) -> str:
    """The number of events and how many of each kind."""
    n = len(events)
    text = f"<p>{n} event{'s' if n != 1 else ''} in the events table.</p>"
    if not n or "event" not in events.columns:
        return text
    counts = events["event"].value_counts()
    rows = "\n".join(f'<tr><td>{_esc(str(kind))}</td><td class="num">{int(k)}</td></tr>'
                     for kind, k in counts.items())
    return (text + '\n<table class="events">\n<thead><tr><th>event</th><th>count</th></tr>'
            f"</thead>\n<tbody>\n{rows}\n</tbody>\n</table>")


def saved_scenario(result: Result, outdir: Path) -> str | None:
    """The scenario as saved next to the tables, else as the Result's Scenario writes it."""
    saved = outdir / SCENARIO_FILE
    if saved.is_file():
        return saved.read_text(encoding="utf-8")
    if result.scenario is None:
        return None
    try:
        return scenario_yaml(result.scenario)
    except Exception as err:  # the page is still useful without it
        return f"(scenario not shown: {type(err).__name__}: {err})"


def generation_line(source: str = "") -> str:
    """What made the page: migsim's version, Python, and when."""
    from importlib import metadata

    try:
        version = metadata.version("migsim")
    except metadata.PackageNotFoundError:
        version = "unknown"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    where = f" from {source}" if source else ""
    return f"Generated by migsim {version} (Python {platform.python_version()}){where} at {now}."


def provenance_line(prov: dict[str, Any]) -> str:
    """The result's provenance in words: version, scenario hash, command line."""
    import shlex

    digest = prov.get("scenario_sha256") or "none"
    command = prov.get("command")
    shown = shlex.join(str(a) for a in command) if isinstance(command, list) else "unknown"
    return (f"Provenance: migsim {prov.get('migsim_version', 'unknown')}, scenario sha256 "
            f"{digest}, command: {shown}")


# -- helpers --------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="{_esc(path.stem)}">\n'
            f'<img src="data:image/png;base64,{data}" alt="{_esc(caption)}">\n'
            f"<figcaption>{_esc(path.name)}: {_esc(caption)}</figcaption>\n</figure>")
