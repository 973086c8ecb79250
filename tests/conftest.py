"""Fixtures for every test file. Builders of scenarios and tables, which module-level constants
use too, are plain functions in ``builders.py``; shared Hypothesis strategies and settings are in
``strategies.py``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

#: the seed of the ``rng`` fixture
RNG_SEED = 2026


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so a failing case replays."""
    return np.random.default_rng(RNG_SEED)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short folder for unix sockets (sun_path is 108 bytes; tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="mq", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
