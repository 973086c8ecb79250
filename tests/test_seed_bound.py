"""A seed the tables cannot hold (int64, plus a sweep's repeats) is refused when the scenario
loads, with one line, not after the whole simulation has run."""

from __future__ import annotations

import pytest

from sim.cli import main
from sim.errors import ScenarioError
from sim.scenario import loads_scenario


@pytest.mark.parametrize("seed", [2**63, 2**64, 2**63 - 1])
def test_huge_seed_is_refused_at_load(seed: int) -> None:
    with pytest.raises(ScenarioError, match=r"s\.yaml:1: seed: must be between 0 and"):
        loads_scenario(f"seed: {seed}\n", file="s.yaml")


def test_largest_seed_with_repeats_fits_int64() -> None:
    top = 2**63 - 1 - 10_000
    s = loads_scenario(f"seed: {top}\n", file="s.yaml")
    assert s.seed + 10_000 == 2**63 - 1


def test_cli_seed_override_is_checked(tmp_path, capsys) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    assert main(["check", str(path), "--set", f"seed={2**64}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed: must be between 0 and" in err[0]
