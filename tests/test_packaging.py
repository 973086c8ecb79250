"""``pip install .`` ships what migsim reads at run time: a wheel is built and inspected, then
unpacked and run from another directory (``migsim validate`` needs the case files)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _data_files() -> list[str]:
    """Every file under sim/ that git tracks and that is not Python: what the wheel must hold."""
    out = subprocess.run(["git", "ls-files", "sim"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return sorted(p for p in out.stdout.split() if not p.endswith(".py"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)]
    # offline with the venv's setuptools first; else pip's isolated build (setuptools>=77)
    for extra in (["--no-build-isolation"], []):
        built = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        wheels = list(out.glob("migsim-*.whl"))
        if built.returncode == 0 and wheels:
            return wheels[0]
    pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1:]}")


def test_the_data_files_are_the_ones_expected() -> None:
    files = _data_files()
    assert "sim/validation/guest/guest.S" in files
    assert sum(p.startswith("sim/validation/cases/") for p in files) >= 10
    assert sum(p.startswith("sim/validation/real/") for p in files) >= 3


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [p for p in _data_files() if p not in names]
    assert not missing, f"not in {wheel.name}: {missing}"
    assert "sim/__main__.py" in names
    metadata = zipfile.ZipFile(wheel).read("migsim-0.4.0.dist-info/METADATA").decode()
    assert "\nVersion: 0.4.0\n" in metadata


@pytest.mark.slow  # about a minute on two shared cores (one validation case, a fresh import)
def test_installed_validate_runs_from_elsewhere(wheel: Path, tmp_path: Path) -> None:
    """The unpacked wheel, run from an empty directory: the cases are found and judged."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    ran = subprocess.run([sys.executable, "-m", "sim", "--version"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=60)
    assert ran.stdout == "migsim 0.4.0\n", ran.stderr
    ran = subprocess.run([sys.executable, "-m", "sim", "validate", "--case", "v3-*", "-o", "out"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "v3-geometric-30ms" in ran.stdout
    assert (work / "out" / "validation.csv").exists()
    source = subprocess.run([sys.executable, "-c", "import sim; print(sim.__file__)"], cwd=work,
                            env=env, capture_output=True, text=True, timeout=60)
    assert source.stdout.startswith(str(site)), source.stdout  # the wheel's copy, not the tree's


@pytest.mark.slow  # a fresh import per command from the unpacked wheel
def test_installed_subcommands_answer_from_elsewhere(wheel: Path, tmp_path: Path) -> None:
    """Every subcommand of the installed wheel starts from an empty folder: its help, and the
    ones that need no input answer (completion) or refuse bad input with one line, exit 2."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}

    def migsim(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sim", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)

    for command in ("run", "sweep", "check", "list", "qmp", "plot", "compare", "validate",
                    "calibrate", "capture", "completion"):
        assert migsim(command, "-h").returncode == 0, command
    assert "calibrate" in migsim("completion", "bash").stdout
    for args in (("calibrate", "--from", "nowhere"), ("capture", "--listen", "10.0.0.1:1",
                                                       "-o", "x"), ("plot", "nowhere")):
        out = migsim(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, (args, out)
