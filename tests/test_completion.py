"""`migsim completion bash|zsh`: a script generated from the argparse parser that completes every
subcommand, each one's options and the values of options with choices."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim import cli
from sim.completion import commands

ROOT = Path(__file__).resolve().parents[1]


def script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_bash_script_lists_every_subcommand_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    text = script("bash", capsys)
    _, subs = commands(cli.build_parser())
    assert {"run", "sweep", "check", "list", "plot", "compare", "validate", "completion"} <= set(subs)
    for name, cmd in subs.items():
        assert f"        {name}) opts=" in text
        assert all(option in text for option in cmd.options)
    assert "--match) COMPREPLY" in text and "run_id position params" in text
    assert text.rstrip().endswith("complete -o filenames -F _migsim migsim")


def test_zsh_script_is_the_bash_one_through_bashcompinit(
        capsys: pytest.CaptureFixture[str]) -> None:
    bash = script("bash", capsys)
    zsh = script("zsh", capsys)
    assert "bashcompinit" in zsh and zsh.endswith(bash)
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        cli.main(["completion", "fish"])
    assert stop.value.code == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_with_the_script(tmp_path: Path) -> None:
    """Loaded into a real bash, the function completes what a user types."""
    out = subprocess.run([sys.executable, "-m", "sim", "completion", "bash"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "migsim.bash").write_text(out)
    (tmp_path / "a.yaml").write_text("")
    probe = """
source migsim.bash
t() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _migsim
      echo "${COMPREPLY[*]}"; }
t migsim ru
t migsim compare --match p
t migsim completion ""
t migsim sweep --re
t migsim --debug pl
t migsim run a.y
"""
    done = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["run", "position params", "bash zsh", "--resume", "plot",
                                        "a.yaml"]
