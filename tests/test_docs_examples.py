"""The Python examples in README.md and docs/*.md run as written: every ```python block, verbatim,
in a fresh interpreter whose working directory is a scratch directory that sees the repository's
``scenarios/`` and ``examples/`` (so an example may read a scenario and write ``results/``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHARED = ("scenarios", "examples")


def examples() -> Iterator[tuple[str, str]]:
    """(where, code) for every python block: ``README.md:43`` is the line of its fence."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{doc.relative_to(ROOT)}:{line}", match.group(1)


EXAMPLES = list(examples())


def test_the_docs_have_python_examples() -> None:
    assert {where.split(":")[0] for where, _ in EXAMPLES} >= {"README.md",
                                                              "docs/writing-an-encoder.md"}


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_example_runs_verbatim(where: str, code: str, tmp_path: Path) -> None:
    for name in SHARED:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"


# -- the README's shell examples -------------------------------------------------------------------

SHELL_BLOCK = re.compile(r"^```\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_command(prefix: str) -> tuple[str, str]:
    """The README line that starts with ``prefix`` in a plain code block: (command, comment)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in SHELL_BLOCK.finditer(text):
        for line in block.group(1).splitlines():
            if line.startswith(prefix):
                command, _, comment = line.partition("#")
                return command.strip(), comment.strip()
    raise AssertionError(f"no README line starts with {prefix!r}")


def test_readme_override_example_shows_what_it_says(tmp_path: Path) -> None:
    """`migsim run ... --set ...` as written: it completes in the time its comment gives and
    writes to the folder the README names (not results/<name>/)."""
    import shlex

    import pandas as pd

    command, comment = readme_command("migsim run scenarios/xbzrle-raw.yaml --set")
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios", target_is_directory=True)
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, "-m", "sim", *argv[1:], "--no-plots"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-2000:]
    said = re.search(r"completes in ([\d.]+) s", comment)
    assert said is not None, comment
    folder = re.search(r"writes\s+`(results/[\w.-]+)/`", " ".join(
        (ROOT / "README.md").read_text(encoding="utf-8").split()))
    assert folder is not None
    assert not (tmp_path / "results" / "xbzrle-raw").exists()
    runs = pd.read_parquet(tmp_path / folder.group(1) / "runs.parquet")
    assert runs.status.iloc[0] == "completed"
    assert round(float(runs.total_time_s.iloc[0]), 1) == float(said.group(1))
