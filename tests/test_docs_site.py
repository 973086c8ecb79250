"""The docs site: the generated reference pages are the code's tables, the site builds with
``mkdocs build --strict`` (a broken link fails it), and neither the docs nor ``migsim list`` cite
the project's internal notes (the docs cite QEMU source files and papers)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim import reference
from sim.cli import main
from sim.parameters import PARAMETERS
from sim.recorder import COLUMNS
from sim.scenario import SCENARIO_KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INTERNAL = re.compile(r"\bREF §|\bDESIGN §|published-results\.md|/work/shared")


@pytest.mark.parametrize("name", sorted(reference.PAGES))
def test_generated_page_is_up_to_date(name: str) -> None:
    committed = (DOCS / "reference" / name).read_text(encoding="utf-8")
    assert committed == reference.PAGES[name](), (
        f"docs/reference/{name} is stale: run `make docs` (python -m sim.reference docs/reference)")


def test_every_schema_key_parameter_and_column_is_in_the_reference() -> None:
    scenario = (DOCS / "reference" / "scenario.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([^`]+)` \|", scenario, flags=re.M))
    assert rows == set(SCENARIO_KEYS)
    params = (DOCS / "reference" / "parameters.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^\| `([^`]+)` \|", params, flags=re.M)) == set(PARAMETERS)
    tables = (DOCS / "reference" / "tables.md").read_text(encoding="utf-8")
    for columns in COLUMNS.values():
        for column in columns:
            assert f"| `{column}` |" in tables


def test_reference_shows_units_bounds_and_qemu_names() -> None:
    page = reference.scenario_page()
    row = next(line for line in page.splitlines() if line.startswith("| `migration.downtime_limit`"))
    # QEMU: downtime-limit is 0..2 000 000 ms, default 300 ms (migration/options.c)
    assert "| time |" in row and "`300ms`" in row and "`downtime-limit`" in row
    assert "≤ 2000s" in row


def _build(docs_root: Path) -> subprocess.CompletedProcess[str]:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    return subprocess.run([str(mkdocs), "build", "--strict", "--site-dir",
                           str(docs_root / "site")], cwd=docs_root, capture_output=True,
                          text=True, timeout=120)


def test_site_builds_strict_and_a_broken_link_fails(tmp_path: Path) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    good = _build(tmp_path)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "site" / "reference" / "scenario" / "index.html").is_file()
    with (tmp_path / "docs" / "index.md").open("a", encoding="utf-8") as f:
        f.write("\nSee [nowhere](no-such-page.md).\n")
    bad = _build(tmp_path)
    assert bad.returncode != 0 and "no-such-page.md" in bad.stderr


def test_docs_cite_no_internal_notes() -> None:
    for path in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not INTERNAL.search(line), f"{path.relative_to(ROOT)}:{n}: {line}"


def test_migsim_list_cites_no_internal_notes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "xbzrle" in out and not INTERNAL.search(out), out
