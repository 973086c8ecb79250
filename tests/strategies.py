"""Hypothesis strategies and settings shared by the test files.

``fuzz_settings`` is how the fuzz tests scale: a fixed number of examples from fixed seeds by
default (the same examples every run), or, with the named environment variable set (``make fuzz``),
that many fresh random examples per test. ``yaml_trees`` draws YAML-like documents whose mapping
keys are mostly the parts of real scenario keys, so that they get past the first checks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sim.scenario import SCENARIO_KEYS

#: every part of a dotted scenario key: ``vm``, ``memory``, ``migration``, ``downtime_limit``, ...
SCENARIO_KEY_PARTS: tuple[str, ...] = tuple(sorted(
    {part for key in SCENARIO_KEYS for part in key.replace("[]", "").split(".")}))


def fuzz_settings(default: int, env: str) -> Any:
    """``default`` examples with fixed seeds, or ``$env`` examples with random ones."""
    examples = int(os.environ.get(env, "0"))
    return settings(max_examples=examples or default, deadline=None, derandomize=not examples,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def yaml_trees(leaves: st.SearchStrategy[Any], keys: Sequence[str], *, list_size: int,
               key_size: int, max_leaves: int) -> st.SearchStrategy[Any]:
    """``leaves``, and lists and mappings of them nested; a mapping key is one of ``keys`` or
    text of up to ``key_size`` characters, a list holds up to ``list_size`` items."""
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=list_size),
        st.dictionaries(st.one_of(st.sampled_from(list(keys)), st.text(max_size=key_size)), inner,
                        max_size=4)), max_leaves=max_leaves)
