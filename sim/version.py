"""migsim's version, from one source: ``version`` in pyproject.toml.

An installed migsim reads it from the package metadata (``importlib.metadata``), which pip wrote
from pyproject.toml. A source checkout run without installing (``PYTHONPATH=.``) reads the
pyproject.toml beside the package instead, so that another installed copy's metadata cannot speak
for this tree.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from functools import cache
from pathlib import Path

__all__ = ["version"]

DISTRIBUTION = "migsim"


@cache
def version() -> str:
    """The version string, such as ``"0.4.0"``; ``"unknown"`` if neither source has one."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        project = {}
    if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
        return str(project["version"])
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
