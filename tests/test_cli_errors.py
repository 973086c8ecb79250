"""The real CLI on real bad files: one line naming file:line: key, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = {
    "unknown-key.yaml": ("vm:\n  memory: 1GiB\nlink:\n  bandwidht: 1Gbit/s\n",
                         r"unknown-key.yaml:4: link.bandwidht: .*did you mean 'bandwidth'"),
    "negative.yaml": ("vm:\n  memory: -4GiB\n", r"negative.yaml:2: vm.memory: "),
    "cache.yaml": ("migration:\n  xbzrle_cache_size: 48MiB\n",
                   r"cache.yaml:2: migration.xbzrle_cache_size: .*power of two"),
    "kind.yaml": ("workload:\n  kind: hotspt\n", r"kind.yaml:2: workload.kind: .*hotspot"),
    "cap.yaml": ("migration:\n  capabilities: [xbzrl]\n",
                 r"cap.yaml:2: migration.capabilities.*did you mean 'xbzrle'"),
    "syntax.yaml": ("vm:\n  memory: [1GiB\n", r"syntax.yaml:\d+: "),
    "type.yaml": ("seed: one\n", r"type.yaml:1: seed: "),
}


def migsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_file_gives_one_line_and_exit_2(tmp_path, name, command):
    text, pattern = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    out = migsim(command, str(path), "-o", str(tmp_path / "out")) if command == "run" \
        else migsim(command, str(path))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()  # nothing written for a bad scenario


def test_missing_file(tmp_path):
    out = migsim("run", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_bad_fault_names_its_key(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text("vm:\n  memory: 64MiB\nlink:\n  faults:\n"
                    "    - {kind: bandwidth_drop, at: 1s, duration: 1s}\n")
    out = migsim("run", str(path), "-o", str(tmp_path / "out"))
    assert out.returncode == 2
    assert "link.faults[0].bandwidth: a bandwidth_drop fault needs a bandwidth > 0" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["check"], ["run", "x.yaml", "--bogus"], ["nosuch"], [], ["sweep", "x.yaml", "--workers", "abc"],
    ["compare", "a", "b", "--rtol", "x"], ["qmp", "x.yaml"],
])
def test_command_line_misuse_is_one_line(argv, capsys):
    """argparse's own errors too: one line naming the command, exit 2, no usage block."""
    from sim.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("migsim") and "-h)" in err[0], err
