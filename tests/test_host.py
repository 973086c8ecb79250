"""Host profiles (issue 15, item 1): ``host:`` merges a profile's sections under the scenario's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.errors import ScenarioError
from sim.scenario import load_scenario, loads_scenario
from sim.spec import SourceCpuSpec

HOST = "source_cpu:\n  per_page: 2us\n  copy_rate: 1GB/s\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_profile_relative_to_scenario_and_scenario_keys_win(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    _write(tmp_path / "hosts", "h.yaml", HOST)
    s = load_scenario(_write(tmp_path, "s.yaml",
                             "host: hosts/h.yaml\nsource_cpu: {copy_rate: 3GB/s}\n"))
    assert s.source_cpu.per_page == pytest.approx(2e-6)  # from the profile
    assert s.source_cpu.copy_rate == pytest.approx(3e9)  # the scenario's own key wins
    assert s.source_cpu.scan_rate == SourceCpuSpec().scan_rate  # neither: the built-in default


def test_inline_profile_and_set_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert loads_scenario("host: {source_cpu: {per_page: 1us}}\n").source_cpu.per_page \
        == pytest.approx(1e-6)
    _write(tmp_path, "h.yaml", HOST)
    monkeypatch.chdir(tmp_path)
    s = loads_scenario("vm: {memory: 64MiB}\n", overrides={"host": "h.yaml"})
    assert s.source_cpu.copy_rate == pytest.approx(1e9)


def test_no_host_is_unchanged() -> None:
    text = "source_cpu: {per_page: 0s}\n"
    assert loads_scenario(text) == loads_scenario(text)
    assert loads_scenario(text).source_cpu == SourceCpuSpec(per_page=0.0)


@pytest.mark.parametrize(("host", "where", "problem"), [
    (None, "s.yaml:1: host:", "no such host profile 'missing.yaml'"),
    ("source_cpu:\n  per_page: fast\n", "h.yaml:2: source_cpu.per_page:", "expected a time"),
    ("workload: {kind: idle}\n", "h.yaml:1: workload:", "not a host profile section"),
    ("- 1\n", "h.yaml:1:", "a host profile is a mapping"),
])
def test_bad_profile_is_one_line(tmp_path: Path, host: str | None, where: str,
                                 problem: str) -> None:
    name = "missing.yaml" if host is None else "h.yaml"
    if host is not None:
        _write(tmp_path, name, host)
    scenario = _write(tmp_path, "s.yaml", f"host: {name}\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario)
    assert where in str(e.value) and problem in str(e.value)
    run = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "--no-plots",
                          "-o", str(tmp_path / "out")], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
