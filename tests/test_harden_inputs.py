"""Valid-looking but absurd inputs end with one line and exit 2, never an internal error:
``--set`` values nested without end, damaged or foreign result folders, plug-in encoders that
raise, call ``sys.exit`` or return the wrong type, and scenarios too large for the machine."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

SCENARIO = textwrap.dedent("""\
    name: small
    vm:
      memory: 16MiB
    workload:
      kind: hotspot
      writes_per_s: 3000
      hot_set: 2MiB
    link:
      bandwidth: 1Gbit/s
    """)


def migsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env={**__import__("os").environ,
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SCENARIO)
    return path


def test_a_set_value_nested_20000_deep_is_one_line(scenario):
    line = one_line(migsim("check", str(scenario), "--set", "name=" + "[" * 20000))
    assert line.startswith("<--set>: name: not a valid YAML value: nested too deeply"), line
    assert len(line) < 300


@pytest.mark.parametrize("damage", ["garbage", "foreign", "truncated"])
@pytest.mark.parametrize("command", ["plot", "compare"])
def test_a_damaged_results_folder_is_one_line(tmp_path, scenario, damage, command):
    out = tmp_path / "out"
    assert migsim("run", str(scenario), "-o", str(out), "--no-plots").returncode == 0
    target = out / "samples.parquet"
    if damage == "garbage":
        target.write_bytes(b"not parquet at all")
    elif damage == "foreign":
        pd.DataFrame({"x": [1, 2]}).to_parquet(target)
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    args = [command, str(out)] + ([str(out)] if command == "compare" else [])
    line = one_line(migsim(*args))
    assert "samples.parquet" in line, line


BAD_PLUGIN = textwrap.dedent('''
    import sys
    import sim

    @sim.register_encoder
    class Misbehaves(sim.Encoder):
        name = "misbehaves"
        capability = "x-misbehaves"
        needs_previous = False
        header = 2

        def encode(self, page, previous):
            {body}

        def decode(self, payload, previous):
            return payload
    ''')


@pytest.mark.parametrize(("body", "said"), [
    ("sys.exit(0)", "called sys.exit(0)"),
    ("raise RuntimeError('boom')", "raised RuntimeError: boom"),
    ("return 42", "returned int"),
])
@pytest.mark.parametrize("content", ["modelled", "exact"])
def test_a_misbehaving_plugin_is_one_line_naming_it(tmp_path, body, said, content):
    name = f"misbehaves_{abs(hash((body, content)))}"
    (tmp_path / f"{name}.py").write_text(BAD_PLUGIN.format(body=body))
    path = tmp_path / "pl.yaml"
    path.write_text(SCENARIO.replace("memory: 16MiB", f"memory: 16MiB\n  content: {content}")
                    + f"plugins: [{name}]\nmigration:\n  capabilities: [x-misbehaves]\n")
    line = one_line(migsim("run", str(path), "-o", str(tmp_path / "out"), "--no-plots"))
    assert line.startswith("plug-in encoder 'misbehaves':") and said in line, line
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_plugin_that_exits_at_import_is_one_line(tmp_path):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    path = tmp_path / "ex.yaml"
    path.write_text(SCENARIO + "plugins: [exits_at_import]\n")
    line = one_line(migsim("check", str(path)))
    assert "ex.yaml:" in line and "plugins[0]" in line and "SystemExit" in line, line


def test_check_names_a_missing_trace_file(tmp_path):
    path = tmp_path / "tr.yaml"
    path.write_text("name: tr\nvm:\n  memory: 16MiB\nworkload:\n  kind: trace\n"
                    f"  trace: {tmp_path / 'nothere.csv'}\n")
    line = one_line(migsim("check", str(path)))
    assert line.startswith(f"{path}: workload.trace: no such file"), line


@pytest.mark.parametrize(("source", "destination"), [
    ("{d}/one.sock", "{d}/./one.sock"),
    ("localhost:4444", "127.0.0.1:4444"),
])
def test_qmp_refuses_one_socket_for_both_monitors(tmp_path, scenario, source, destination):
    line = one_line(migsim("qmp", str(scenario), "--source", source.format(d=tmp_path),
                           "--destination", destination.format(d=tmp_path)))
    assert "each endpoint needs its own socket" in line, line


MEASURE = textwrap.dedent("""\
    import sys
    from sim import budget
    from sim.run import run_one
    from sim.spec import LinkSpec, MigrationSpec, Scenario, VmSpec, WorkloadSpec
    from sim.units import GiB, MiB

    def status(field):  # kB in /proc/self/status
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    run_one(Scenario(name="warm", vm=VmSpec(memory=64 * MiB)))  # kernels compiled or loaded
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to what is resident now
    before = status("VmRSS")
    sc = Scenario(name="m", vm=VmSpec(memory=int(sys.argv[1]) * MiB, content=sys.argv[2]),
                  workload=WorkloadSpec(kind="uniform", writes_per_s=1000),
                  link=LinkSpec(bandwidth=10e9),
                  migration=MigrationSpec(max_bandwidth=0, capabilities=("xbzrle",)))
    run_one(sc)
    grew = status("VmHWM") - before
    print(grew / sum(n.bytes for n in budget.needs(sc)))
    """)


@pytest.mark.parametrize(("mib", "content"), [(64 * 1024, "modelled"), (256, "exact")])
def test_the_memory_estimate_matches_what_a_run_takes(mib, content):
    """The estimate against the peak RSS a real run adds (measured, not modelled)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(mib), content], capture_output=True,
                         text=True, timeout=300, check=True)
    ratio = float(out.stdout.strip().splitlines()[-1])
    assert 0.6 <= ratio <= 1.5, ratio


@pytest.mark.parametrize(("setting", "key"), [
    ("vm.memory=1024TiB", "vm.memory"),
    ("workload.writes_per_s=1000000000000000", "workload.writes_per_s"),
    ("vm.content=exact", "vm.content"),
])
def test_a_scenario_this_machine_cannot_hold_is_refused_at_check(scenario, setting, key):
    env_limit = {"MIGSIM_MEMORY_LIMIT": "16MiB"} if key == "vm.content" else {}
    out = subprocess.run([sys.executable, "-m", "sim.cli", "check", str(scenario), "--set",
                          setting], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, **env_limit})
    line = one_line(out)
    assert line.startswith(f"<--set>: {key}: this scenario needs about"), line


def test_nanosecond_phases_are_refused(tmp_path):
    """Each phase boundary in a 50 ms chunk is a slice of work: 1 ns phases made one chunk loop
    fifty million times."""
    path = tmp_path / "ph.yaml"
    path.write_text("name: ph\nvm:\n  memory: 16MiB\nworkload:\n  kind: phased\n  phases:\n"
                    "    - {duration: 1ns, kind: uniform, writes_per_s: 1000}\n"
                    "    - {duration: 1ns, kind: idle}\n")
    line = one_line(migsim("check", str(path)))
    assert line == f"{path}:7: workload.phases[0].duration: must be >= 1ms (got 1ns)", line
