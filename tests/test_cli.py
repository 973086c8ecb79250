"""The migsim command line, with the engine and the scenario loader replaced by fakes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim import cli
from sim.choices import NEGOTIATION_MODES
from sim.errors import ScenarioError
from sim.recorder import Recorder
from sim.result import Result
from sim.spec import Scenario
from sim.units import MiB

ROOT = Path(__file__).resolve().parents[1]


def small_result(scenario: Scenario, status: str = "completed") -> Result:
    rec = Recorder(f"{scenario.name}-0", scenario.name)
    rec.event(0.0, "source", "MIGRATION", "active")
    rec.event(0.0, "source", "MIGRATION_PASS", "1")
    for i in range(5):
        rec.sample(t_s=0.1 * i, bandwidth_bytes_per_s=100.0 * MiB, threshold_bytes=30.0 * MiB,
                   pending_bytes=(50 - 10 * i) * MiB, expected_downtime_s=0.5, dirty_pages_rate=0.0,
                   transferred_bytes=10 * i * MiB, throttle_pct=0.0, status="active")
    rec.event(0.45, "source", "MIGRATION", "device")
    rec.event(0.5, "source", "MIGRATION", status)
    rec.finish(
        seed=scenario.seed, status=status,
        failure_reason="" if status == "completed" else "destination crashed",
        negotiation="qemu", capabilities="", total_time_s=0.5, setup_time_s=0.0, downtime_s=0.05,
        expected_downtime_s=0.05, transferred_bytes=52 * MiB, precopy_bytes=50 * MiB,
        downtime_bytes=2 * MiB, normal_pages=13000, zero_pages=300, xbzrle_pages=0, xbzrle_records=0,
        xbzrle_bytes=0, xbzrle_cache_miss=0, xbzrle_cache_miss_rate=0.0,
        xbzrle_encoding_rate=0.0, xbzrle_overflow=0, plugin_pages=0, plugin_bytes=0, dirty_sync_count=2, mbps=832.0,
        max_throttle_pct=0.0, guest_cpu_lost_s=0.0, postcopy_faults=0, postcopy_stall_s=0.0, pages_lost=0,
    )
    return Result(**rec.frames(), scenario=scenario)


class Fakes:
    """Fake sim.scenario and sim.run modules, recording how they were called."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, dict[str, Any] | None]] = []
        self.ran: list[Scenario] = []
        self.load_error: BaseException | None = None
        self.run_error: BaseException | None = None
        self.status = "completed"

    def load_scenario(self, path: Any, overrides: dict[str, Any] | None = None) -> Scenario:
        self.loaded.append((str(path), overrides))
        if self.load_error is not None:
            raise self.load_error
        data = yaml.safe_load(Path(path).read_text()) or {}
        seed = int((overrides or {}).get("seed", data.get("seed", 0)))
        return Scenario(name=data.get("name", Path(path).stem), seed=seed, source_file=str(path))

    def to_dict(self, scenario: Scenario) -> dict[str, Any]:
        return {"name": scenario.name, "seed": scenario.seed}

    def run(self, scenario: Scenario, progress: Any = None) -> Result:
        self.ran.append(scenario)
        if self.run_error is not None:
            raise self.run_error
        return small_result(scenario, self.status)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    f = Fakes()
    scenario_module = types.ModuleType("sim.scenario")
    scenario_module.load_scenario = f.load_scenario  # type: ignore[attr-defined]
    scenario_module.to_dict = f.to_dict  # type: ignore[attr-defined]
    run_module = types.ModuleType("sim.run")
    run_module.run = f.run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sim.scenario", scenario_module)
    monkeypatch.setitem(sys.modules, "sim.run", run_module)
    monkeypatch.chdir(tmp_path)
    return f


def write_scenario(path: Path, name: str, seed: int = 1) -> Path:
    path.write_text(f"name: {name}\nseed: {seed}\n")
    return path


def test_run_prints_summary_and_writes_files(fakes: Fakes, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`migsim run` prints a table with units, saves tables + plots to results/<name>."""
    path = write_scenario(tmp_path / "quick.yaml", "quick")
    assert cli.main(["run", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "downtime ms" in out and "transferred MiB" in out and "completed" in out
    assert "failure reason" not in out
    outdir = tmp_path / "results" / "quick"
    for name in ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
                 "runs.csv", "scenario.yaml", "timeline.png"):
        assert (outdir / name).is_file(), name
    assert f"wrote {Path('results') / 'quick'}/" in out
    assert Result.load(outdir, with_scenario=False).runs.loc[0, "status"] == "completed"


def test_run_overrides_seed_output_and_no_plots(fakes: Fakes, tmp_path: Path) -> None:
    """--set and --seed reach load_scenario; -o picks the directory; --no-plots skips figures."""
    path = write_scenario(tmp_path / "quick.yaml", "quick")
    code = cli.main(["run", str(path), "-o", str(tmp_path / "out"), "--set", "link.bandwidth=1Gbit/s",
                     "--set", "migration.capabilities=[xbzrle]", "--seed", "9", "--no-plots"])
    assert code == 0
    assert fakes.loaded == [(str(path), {"link.bandwidth": "1Gbit/s",
                                         "migration.capabilities": "[xbzrle]", "seed": 9})]
    assert fakes.ran[0].seed == 9
    assert (tmp_path / "out" / "runs.parquet").is_file()
    assert not (tmp_path / "out" / "timeline.png").exists()


def test_run_several_scenarios_one_folder_each(fakes: Fakes, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """With several files and -o DIR, each scenario gets DIR/<name>; equal names get -2."""
    a = write_scenario(tmp_path / "a.yaml", "alpha")
    b = write_scenario(tmp_path / "b.yaml", "beta")
    c = write_scenario(tmp_path / "c.yaml", "alpha")
    assert cli.main(["run", str(a), str(b), str(c), "-o", str(tmp_path / "out"), "--no-plots"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha", "alpha-2", "beta"]
    out = capsys.readouterr().out
    assert "== alpha" in out and "== beta" in out


def test_failed_run_shows_failure_reason_and_exits_0(fakes: Fakes, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A failed migration is a result, not a CLI error; the table shows why it failed."""
    fakes.status = "failed"
    assert cli.main(["run", str(write_scenario(tmp_path / "x.yaml", "x")), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "failure reason" in out and "destination crashed" in out


def test_scenario_error_is_one_line_exit_2(fakes: Fakes, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A ScenarioError prints exactly its one line on stderr, no traceback, and exits 2."""
    path = write_scenario(tmp_path / "bad.yaml", "bad")
    fakes.load_error = ScenarioError("must be > 0 (got -5 B/s)", file=str(path), line=14,
                                     key="link.bandwidth")
    assert cli.main(["run", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err == f"{path}:14: link.bandwidth: must be > 0 (got -5 B/s)\n"
    assert out == ""
    assert fakes.ran == []


def test_debug_shows_the_traceback(fakes: Fakes, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_scenario(tmp_path / "bad.yaml", "bad")
    fakes.load_error = ScenarioError("nope", file=str(path), line=1, key="vm")
    assert cli.main(["run", str(path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(f"{path}:1: vm: nope")


def test_missing_file_is_one_line_exit_2(fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "nowhere.yaml"]) == 2
    assert capsys.readouterr().err == "nowhere.yaml: no such file\n"


def test_bad_set_is_one_line_exit_2(fakes: Fakes, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_scenario(tmp_path / "a.yaml", "a")
    assert cli.main(["run", str(path), "--set", "link.bandwidth"]) == 2
    assert capsys.readouterr().err == "--set link.bandwidth: expected key.path=value\n"


def test_yaml_error_is_one_line_exit_2(fakes: Fakes, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML syntax error the loader lets through still prints a single file:line line."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{path}:")


def test_internal_error_exit_1(fakes: Fakes, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    fakes.run_error = ZeroDivisionError("division by zero")
    assert cli.main(["run", str(write_scenario(tmp_path / "a.yaml", "a"))]) == 1
    err = capsys.readouterr().err
    assert err == "migsim: internal error: ZeroDivisionError: division by zero\n"


def test_keyboard_interrupt_exit_130(fakes: Fakes, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    fakes.run_error = KeyboardInterrupt()
    assert cli.main(["run", str(write_scenario(tmp_path / "a.yaml", "a"))]) == 130
    assert capsys.readouterr().err == "migsim: interrupted\n"


def test_check(fakes: Fakes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` prints ok per good file, one line per bad one, and exits 2 if any is bad."""
    good = write_scenario(tmp_path / "good.yaml", "good")
    assert cli.main(["check", str(good)]) == 0
    assert capsys.readouterr().out == f"ok {good}\n"
    assert cli.main(["check", str(good), str(tmp_path / "missing.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == f"ok {good}\n"
    assert err == f"{tmp_path / 'missing.yaml'}: no such file\n"
    fakes.load_error = ScenarioError("'xbzrl' is not known", file="good.yaml", line=9,
                                     key="migration.capabilities")
    assert cli.main(["check", str(good)]) == 2
    assert capsys.readouterr().err == "good.yaml:9: migration.capabilities: 'xbzrl' is not known\n"
    assert fakes.ran == []


def test_list_with_fake_registries(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`list` shows each registry's names with their one-line docs, plus the negotiation modes."""

    class Raw:
        """Sends the page as it is."""

    class Uniform:
        """Writes pages uniformly at random.

        More text that is not shown.
        """

    encoders = types.ModuleType("sim.encoders")
    encoders.ENCODERS = {"raw": Raw}  # type: ignore[attr-defined]
    workloads = types.ModuleType("sim.workloads")
    workloads.WORKLOADS = {"uniform": Uniform}  # type: ignore[attr-defined]
    capabilities = types.ModuleType("sim.capabilities")
    capabilities.CAPABILITIES = {  # type: ignore[attr-defined]
        "xbzrle": types.SimpleNamespace(doc="delta-encode re-sent pages against a cache"),
    }
    for name, module in [("sim.encoders", encoders), ("sim.workloads", workloads),
                         ("sim.capabilities", capabilities)]:
        monkeypatch.setitem(sys.modules, name, module)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "encoders:\n  raw  Sends the page as it is.\n" in out
    assert "  uniform  Writes pages uniformly at random.\n" in out
    assert "More text" not in out
    assert "  xbzrle  delta-encode re-sent pages against a cache\n" in out
    assert "negotiation modes:" in out
    for mode, doc in NEGOTIATION_MODES.items():
        assert f"  {mode}" in out and doc in out


def test_list_survives_a_missing_registry(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sim.capabilities", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "sim.negotiation", None)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "capabilities:\n  (unavailable:" in out
    assert "management" in out


def test_plot_redraws_from_saved_tables(fakes: Fakes, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    small_result(Scenario(name="p")).save(tmp_path / "res")
    assert cli.main(["plot", str(tmp_path / "res")]) == 0
    assert (tmp_path / "res" / "timeline.png").stat().st_size > 0
    assert "timeline.png" in capsys.readouterr().out
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_plot_accepts_the_folder_of_a_run_of_several_scenarios(
        fakes: Fakes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`migsim run A B -o DIR` writes DIR/alpha and DIR/beta; `migsim plot DIR` redraws both."""
    a = write_scenario(tmp_path / "a.yaml", "alpha")
    b = write_scenario(tmp_path / "b.yaml", "beta")
    assert cli.main(["run", str(a), str(b), "-o", str(tmp_path / "out"), "--no-plots"]) == 0
    (tmp_path / "out" / "notes").mkdir()  # a folder without tables is left alone
    capsys.readouterr()
    assert cli.main(["plot", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for name in ("alpha", "beta"):
        assert (tmp_path / "out" / name / "timeline.png").stat().st_size > 0
        assert f"wrote {tmp_path / 'out' / name / 'timeline.png'}" in printed
    assert not list((tmp_path / "out" / "notes").iterdir())
    assert not (tmp_path / "out" / "timeline.png").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["plot", str(tmp_path / "empty")]) == 2  # no tables anywhere: one line
    assert capsys.readouterr().err.count("\n") == 1


def test_format_summary_is_fixed_width() -> None:
    """Every line of the summary table has its columns at the same offsets."""
    both = Result.concat([small_result(Scenario(name="a")), small_result(Scenario(name="b"))])
    text = cli.format_summary(both.summary())
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["run_id", "scenario"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 4
    col = lines[0].index("total s")
    assert all(line[col + len("total s") - 1] != " " for line in lines[2:])


def test_progress_bar_only_on_a_tty_after_the_delay() -> None:
    stream = io.StringIO()
    quiet = cli.Progress("x", stream)
    quiet(1.0, 10.0)
    assert stream.getvalue() == "" and not quiet.enabled
    bar = cli.Progress("run", stream, enabled=True, delay_s=0.0, every_s=0.0)
    bar(5.0, 10.0)
    assert stream.getvalue().startswith("\rrun [") and "50.0%" in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\r\033[K")
    late = cli.Progress("run", io.StringIO(), enabled=True, delay_s=60.0)
    late(5.0, 10.0)
    assert not late.drawn


def test_subprocess_missing_file() -> None:
    """As a real process: one line on stderr, exit 2, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "check", "no-such.yaml"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "no-such.yaml: no such file\n"


def test_version_from_pyproject() -> None:
    """``migsim --version`` and ``python -m sim --version`` print pyproject.toml's version."""
    import tomllib

    import sim
    from sim.version import version

    root = Path(__file__).resolve().parent.parent
    expected = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert expected == "0.4.0"
    assert version() == sim.__version__ == expected
    for module in ("sim", "sim.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                             text=True, timeout=60, cwd=root)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"migsim {expected}\n"


def test_python_dash_m_sim_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "sim", "check", "/nonexistent.yaml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == "/nonexistent.yaml: no such file\n"


def test_list_values_print_as_comma_lists() -> None:
    """Capabilities in the summary table: ``xbzrle``, not ``('xbzrle',)``."""
    import numpy as np

    from sim.labels import format_cell

    assert format_cell(("xbzrle",), "s") == "xbzrle"
    assert format_cell(["xbzrle", "auto-converge"], "s") == "xbzrle,auto-converge"
    assert format_cell(np.array(["multifd"], dtype=object), "s") == "multifd"
    assert format_cell((), "s") == "none"
    assert format_cell("xbzrle", "s") == "xbzrle"
    assert format_cell(np.float64(1.5), ".1f") == "1.5"


def test_log_progress_prints_a_line_every_few_seconds() -> None:
    stream = io.StringIO()
    now = [100.0]
    log = cli.LogProgress("quick", stream, every_s=5.0, clock=lambda: now[0])
    log(1.0, 3600.0)
    assert stream.getvalue() == ""  # not before every_s
    now[0] = 105.5
    log(12.5, 3600.0)
    now[0] = 107.0
    log(13.0, 3600.0)  # too soon after the last line
    assert stream.getvalue() == "migsim: quick: sim 12.5 s of at most 3600 s (0.3%), 6 s of wall time\n"
    log.close()


def test_run_outside_a_tty_logs_progress(tmp_path: Path) -> None:
    """``migsim run`` with stderr a file: progress lines, plain (no ``\\r``)."""
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nvm: {memory: 1GiB}\n"
                    "workload: {kind: hotspot, writes_per_s: 200000, hot_set: 256MiB}\n"
                    "link: {bandwidth: 1Gbit/s}\nmigration: {max_time: 60s}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys; from sim import cli; cli.LogProgress.__init__.__kwdefaults__['every_s'] = 0.2; "
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(path), "-o",
                           str(tmp_path / "out"), "--no-plots"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("migsim: long: sim ") for line in lines), proc.stderr
    assert "\r" not in proc.stderr


def test_run_with_overrides_defaults_to_its_own_folder(fakes: Fakes, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Without -o, --set/--seed never replace results/<name> of the scenario as written: they
    go to results/<name>-<6 hex digits of the overrides>, the same for the same overrides."""
    path = write_scenario(tmp_path / "quick.yaml", "quick")
    assert cli.main(["run", str(path), "--no-plots"]) == 0
    plain = tmp_path / "results" / "quick"
    before = (plain / "runs.parquet").read_bytes()
    sets = ["--set", "link.bandwidth=1Gbit/s", "--set", "migration.capabilities=[xbzrle]"]
    assert cli.main(["run", str(path), *sets, "--no-plots"]) == 0
    tag = cli.overrides_tag({"link.bandwidth": "1Gbit/s", "migration.capabilities": "[xbzrle]"})
    assert len(tag) == 6 and int(tag, 16) >= 0
    assert (tmp_path / "results" / f"quick-{tag}" / "runs.parquet").is_file()
    assert f"wrote {Path('results') / f'quick-{tag}'}/" in capsys.readouterr().out
    assert (plain / "runs.parquet").read_bytes() == before
    reordered = ["--set", "migration.capabilities=[xbzrle]", "--set", "link.bandwidth=1Gbit/s"]
    assert cli.main(["run", str(path), *reordered, "--no-plots"]) == 0
    assert cli.main(["run", str(path), "--seed", "9", "--no-plots"]) == 0
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == sorted(["quick", f"quick-{tag}", f"quick-{cli.overrides_tag({'seed': 9})}"])


def test_output_dirs_tag_only_default_folders_with_overrides() -> None:
    """-o wins as given; without it, overrides add the tag to every scenario's folder (run and
    sweep choose their folder the same way)."""
    tag = cli.overrides_tag({"seed": 3})
    assert cli._output_dirs(["a"], "out", {"seed": 3}) == [Path("out")]
    assert cli._output_dirs(["a", "b"], "out", {"seed": 3}) == [Path("out/a"), Path("out/b")]
    assert cli._output_dirs(["a", "a"], None, {"seed": 3}) == [
        Path(f"results/a-{tag}"), Path(f"results/a-{tag}-2")]
    assert cli._output_dirs(["a"], None, {}) == [Path("results/a")]
    assert tag != cli.overrides_tag({"seed": 4})
