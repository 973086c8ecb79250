"""Bad scenarios through the real CLI: the corpus in tests/bad_scenarios/, generated files that are
binary, huge, deeply nested or alias bombs, bad ``--set`` overrides, and random mutations of a
valid scenario. Each must give exit status 2 and one line, ``file:line: key.path: problem (got X)``
(DESIGN §4), with no traceback, nothing written, and bounded time and memory.

``migsim check`` validates every file it is given, so the whole corpus goes through one
subprocess; ``migsim run`` stops at the first bad file, so it runs in-process, file by file.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from strategies import SCENARIO_KEY_PARTS, fuzz_settings, yaml_trees

from sim.cli import main
from sim.errors import ScenarioError
from sim.scenario import SCENARIO_KEYS, expand, loads_scenario

CORPUS_DIR = Path(__file__).parent / "bad_scenarios"
CORPUS = sorted(CORPUS_DIR.glob("*.yaml"))
# what follows the file name: ":line" when the problem has one, then ": " and the problem
AFTER_FILE = re.compile(r"(:\d+)?: \S.*")


def expectation(path: Path) -> str:
    """The regex of a corpus file's first line, ``# expect: <regex>``."""
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name}: the first line must be '# expect: ...'"
    return first.removeprefix("# expect: ")


def assert_one_line(path: str, stderr: str, expect: str) -> str:
    """stderr is one line, ``path:N: ...`` or ``path: ...``, and ``expect`` matches what follows
    the path."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith(f"{path}:"), line
    assert AFTER_FILE.fullmatch(line[len(path):]), line  # the path itself may hold ': '
    assert re.match(re.escape(path) + expect, line), f"{line}\n  does not match {expect!r}"
    return line


def migsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- the corpus


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 70
    for path in CORPUS:
        re.compile(expectation(path))


@pytest.fixture(scope="module")
def check_all() -> subprocess.CompletedProcess[str]:
    """``migsim check`` on the whole corpus, once."""
    return migsim("check", *map(str, CORPUS))


def test_check_refuses_every_file_at_once(check_all: subprocess.CompletedProcess[str]) -> None:
    assert check_all.returncode == 2, check_all.stderr[-2000:]
    assert check_all.stdout == ""  # no "ok FILE": every one of them is bad
    assert "Traceback" not in check_all.stderr
    assert len(check_all.stderr.splitlines()) == len(CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_check_line(check_all: subprocess.CompletedProcess[str], path: Path) -> None:
    mine = [line for line in check_all.stderr.splitlines() if line.startswith(f"{path}:")]
    assert_one_line(str(path), "\n".join(mine), expectation(path))


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_run_refuses_and_writes_nothing(path: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status = main(["run", str(path), "-o", str(out), "--no-plots"])
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.out == ""
    assert_one_line(str(path), captured.err, expectation(path))
    assert not out.exists()


# ---------------------------------------------------------------- generated: binary, huge, deep

RSS_LIMIT_KIB = 256 * 1024  # what the bad files may add to the peak RSS of a good one
TIME_LIMIT_S = 5.0


def _alias_bomb(levels: int = 12, width: int = 10) -> bytes:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


def _merge_bomb(levels: int = 12) -> bytes:
    """Like the alias bomb, through ``<<`` merge keys: each level merges the previous mapping and
    holds ten more copies of it."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    for i in range(1, levels):
        items = ", ".join(f"k{j}: *m{i - 1}" for j in range(10))
        lines.append(f"m{i}: &m{i} {{<<: *m{i - 1}, {items}}}")
    lines.append(f"vm:\n  <<: *m{levels - 1}")
    return ("\n".join(lines) + "\n").encode()


def _sweep(keys: list[str], values: int) -> bytes:
    """A sweep whose grid multiplies out to ``values ** len(keys)`` runs."""
    grid = "".join(f"    {key}: [{', '.join(str(i) for i in range(1, values + 1))}]\n"
                   for key in keys)
    return f"sweep:\n  grid:\n{grid}".encode()


def _block_nesting(levels: int) -> bytes:
    return b"".join(b" " * i + b"a:\n" for i in range(levels)) + b" " * levels + b"1\n"


GENERATED: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", r": the file is empty; expected a mapping of scenario keys$"),
    "blank": (lambda: b"\n \n\t\n", r"(:\d+)?: (the file is empty|invalid YAML)"),
    "binary-junk": (lambda: random.Random(1).randbytes(64 * 1024),
                    r":\d+: is not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\); "),
    "utf-16": (lambda: "seed: 1\nvm: {memory: 1GiB}\n".encode("utf-16"),
               r":1: is not UTF-8 text \(byte 0xff at offset 0\)"),
    "nul-bytes": (lambda: b"seed: 1\nname: x\x00\x00\x00\n",
                  r":2: invalid YAML: unacceptable character #x0000: special characters are not "
                  r"allowed$"),
    "control-junk": (lambda: bytes(range(1, 32)) * 100,
                     r":1: invalid YAML: unacceptable character #x0001"),
    "50MB": (lambda: (b"seed: 1\n" + b"#" * 1023 + b"\n") * (50 * 1024),
             r": is larger than 1 MiB; a scenario is a short YAML text"),
    "1MiB-plus-one": (lambda: b"seed: 1\n" + b"#" * (1024 * 1024 - 7) + b"\n",
                      r": is larger than 1 MiB"),
    "deep-flow-nesting": (lambda: b"link: " + b"[" * 500_000 + b"]" * 500_000 + b"\n",
                          r":1: invalid YAML: nested too deeply \(more than 50 levels\)$"),
    "deep-flow-mappings": (lambda: b"{a: " * 200_000 + b"1" + b"}" * 200_000 + b"\n",
                           r":1: invalid YAML: nested too deeply"),
    "deep-block-nesting": (lambda: _block_nesting(1000),
                           r":\d+: invalid YAML: nested too deeply \(more than 50 levels\)$"),
    "deep-block-sequences": (lambda: b"- " * 300_000 + b"x\n",
                             r":1: invalid YAML: nested too deeply"),
    "nesting-past-50": (lambda: b"link: " + b"[" * 70 + b"]" * 70 + b"\n",
                        r":1: link(\[0\])+: nested more than 50 levels deep$"),
    "alias-bomb": (_alias_bomb,
                   r":\d+: l\d+(\[\d+\])*: the document expands to more than 100000 nodes"),
    "merge-bomb": (_merge_bomb, r":\d+: [\w.\[\]]+: the document expands to more than 100000 nodes"),
    "million-digit-int": (lambda: b"vm:\n  memory: " + b"9" * 1_000_000 + b"\n",
                          r":2: vm.memory: invalid YAML value: Exceeds the limit"),
    "million-digit-size": (lambda: b"vm:\n  memory: 1." + b"0" * 1_000_000 + b"GiB\n",
                           r":2: vm.memory: has too many digits"),
    "huge-exponent": (lambda: b"link:\n  bandwidth: 1e999999999Gbit/s\n",
                      r":2: link.bandwidth: has an exponent out of range"),
    "huge-sweep": (lambda: _sweep(["seed", "vm.vcpus", "workload.writes_per_s",
                                   "migration.max_passes"], 100),
                   r":1: sweep: makes more than 10000 runs; .*\(got 100000000 runs\)$"),
}


def _run_measured(args: list[str], timeout: float) -> tuple[int, str, str, float, int]:
    """Run ``migsim`` with ``args``: (status, stdout, stderr, wall seconds, peak RSS in KiB).

    ``os.wait4`` gives this child's own peak RSS (``RUSAGE_CHILDREN`` would be the largest of
    every child the test session has had)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args],
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        stdout.seek(0)
        stderr.seek(0)
        return (proc.returncode, stdout.read().decode(errors="replace"),
                stderr.read().decode(errors="replace"), elapsed, usage.ru_maxrss)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every GENERATED file, written once (the 50 MB one included)."""
    directory = tmp_path_factory.mktemp("generated")
    paths = {}
    for name, (make, _) in GENERATED.items():
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_bytes(make())
    return paths


def test_generated_files_in_one_process_bounded_memory(generated: dict[str, Path]) -> None:
    """``migsim check`` on all of them at once: one line each, in order; the process's peak RSS
    (a bound on every file's) stays small and it finishes in bounded time."""
    names = sorted(generated)
    status, stdout, stderr, elapsed, rss_kib = _run_measured(
        ["check", *(str(generated[n]) for n in names)], timeout=120)
    assert status == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == len(names), stderr
    for name, line in zip(names, lines, strict=True):
        assert_one_line(str(generated[name]), line, GENERATED[name][1])
    # Bounded: the bad files add little to what `migsim check` of a tiny good file takes (the
    # imports alone are a few hundred MiB and vary with the installation).
    good = generated[names[0]].with_name("good.yaml")
    good.write_text("seed: 1\n")
    _, _, _, _, base_kib = _run_measured(["check", str(good)], timeout=120)
    assert rss_kib - base_kib < RSS_LIMIT_KIB, \
        f"peak RSS {rss_kib / 1024:.0f} MiB, {base_kib / 1024:.0f} MiB for a good file"
    assert elapsed < 60, f"{elapsed:.1f} s"


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_file_is_refused_quickly(generated: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           name: str) -> None:
    """``migsim run`` on each one, in-process (so the time is the loader's, not Python's
    start-up): exit 2, one line, nothing written, within TIME_LIMIT_S."""
    path = generated[name]
    out = tmp_path / "out"
    start = time.monotonic()
    status = main(["run", str(path), "-o", str(out), "--no-plots"])
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.out == ""
    assert_one_line(str(path), captured.err, GENERATED[name][1])
    assert not out.exists()
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.1f} s"


def test_bad_and_good_files_mixed(generated: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """One check of bad and good files mixed: a line per bad file, in order; the good one ok."""
    bad = [generated[n] for n in ("empty", "binary-junk", "50MB", "alias-bomb")]
    good = tmp_path / "good.yaml"
    good.write_text("vm: {memory: 64MiB}\n")
    assert main(["check", str(bad[0]), str(good), *map(str, bad[1:])]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"ok {good}\n"
    assert [line.split(":", 1)[0] for line in captured.err.splitlines()] == list(map(str, bad))


# ---------------------------------------------------------------- bad --set overrides

GOOD = "vm: {memory: 64MiB}\nlink: {bandwidth: 1Gbit/s}\n"
BAD_SETS = [
    ("link.bandwidth=0", r"<--set>: link\.bandwidth: must be > 0 \(got 0\)$"),
    ("vm.memroy=1GiB", r"<--set>: vm\.memroy: unknown key; did you mean 'memory'\?$"),
    ("vm.memory=[1GiB", r"<--set>: vm\.memory: not a valid YAML value: "),
    ("migration.capabilities=[xbzrle, multifd]",
     r"<--set>: migration\.capabilities: Multifd is not compatible with xbzrle"),
    ("migration.capabilities=[switchover-ack]",
     r"<--set>: migration\.capabilities: Capability 'switchover-ack' requires capability "
     r"'return-path'"),
    ("workload.kind=hotspt", r"<--set>: workload\.kind: 'hotspt' is not a known workload kind; "
                             r"did you mean 'hotspot'\?"),
    ("sweep.grid.vm.memroy=[1GiB]", r"<--set>: sweep\.grid\.vm\.memroy: 'vm\.memroy' is not a "
                                    r"scenario key that can vary; did you mean 'vm\.memory'\?"),
    ("vm.memory=1KiB", r"<--set>: vm\.memory: must be at least one page of 4KiB \(got 1KiB\)$"),
    ("vm.memory=1000000B", r"<--set>: vm\.memory: must be a multiple of vm\.page_size"),
    ("migration.xbzrle_cache_size=48MiB", r"<--set>: migration\.xbzrle_cache_size: .*power of two"),
    ("vm.page_size=3KiB", r"<--set>: vm\.page_size: must be a power of two \(got 3KiB\)$"),
    ("vm..memory=1", r"<--set>: not a key path such as link\.bandwidth \(got 'vm\.\.memory'\)$"),
    ("vm.memory=10 parsecs", r"<--set>: vm\.memory: unknown size unit 'parsecs'"),
    ("link.bandwidth=5 GiB/fortnight", r"<--set>: link\.bandwidth: unknown rate unit "
                                       r"'GiB/fortnight'"),
    ("vm.memory=1e999GiB", r"<--set>: vm\.memory: is too large \(got 1e999GiB\)$"),
    ("vm.memory=NaNMiB", r"<--set>: vm\.memory: expected a size such as 4GiB or a number"),
    ("vm.memory=!!python/object:os.system x", r"<--set>: vm\.memory: invalid YAML value: "),
    ("vm=[1]", r"<--set>: vm: expected a mapping of VmSpec keys \(got \[1\]\)$"),
    ("link=fast", r"<--set>: link: expected a mapping of LinkSpec keys \(got fast\)$"),
    ("seed=-1", r"<--set>: seed: must be between 0 and 9223372036854765807 \(got -1\)$"),
    ("seed.x=1", r"<--set>: seed: "),
    ("vms=[]", r"<--set>: vms: needs at least one guest \(got \[\]\)$"),
    ("vms.3.vm.memory=1GiB", r"<--set>: vms: "),
    ("vms=[{name: a}, {name: a}]", r"<--set>: vms\[1\]\.name: vms\[0\] has that name already"),
    ("endpoints.source.version=abc",
     r"<--set>: endpoints\.source\.version: expected a QEMU version such as '7\.2' \(got abc\)$"),
    ("plugins=[no_such_module]", r"<--set>: plugins\[0\]: cannot import plug-in module "
                                 r"'no_such_module': ModuleNotFoundError"),
    ("sweep.repeats=1000000", r"<--set>: sweep: makes more than 10000 runs"),
    ("sweep.zip={vm.memory: [64MiB], seed: [1, 2]}",
     r"<--set>: sweep\.zip: the lists must have the same length"),
    ("migration.downtime_limit=1h",
     r"<--set>: migration\.downtime_limit: must be between 0 and 2000s \(got 1h\)$"),
    ('vm.content="exa\\nct"', r"<--set>: vm\.content: 'exa\\nct' is not one of modelled, exact"),
    ("migration.downtime_limit=300", r"<--set>: migration\.downtime_limit: a bare number has no "
                                     r"unit; write 300ms or 300s \(got 300\)$"),
    ("vm.memory=4096", r"<--set>: vm\.memory: a bare number has no unit; write 4096GiB or 4096G"),
    ("sweep.grid.link.latency=[1ms, 2]", r"<--set>: sweep\.grid\.link\.latency\[1\]: a bare number "
                                         r"has no unit; write 2ms or 2s \(got 2\)$"),
    ("=1", r"--set =1: expected key\.path=value$"),
    ("novalue", r"--set novalue: expected key\.path=value$"),
]


@pytest.mark.parametrize(("override", "expect"), BAD_SETS, ids=[s for s, _ in BAD_SETS])
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             override: str, expect: str, command: str) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    out = tmp_path / "out"
    args = [command, str(path), "--set", override]
    if command == "run":
        args += ["-o", str(out), "--no-plots"]
    status = main(args)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert re.match(expect, lines[0]), f"{lines[0]}\n  does not match {expect!r}"
    assert not out.exists()


def test_bad_set_through_the_real_command(tmp_path: Path) -> None:
    """The same through a real process, for the exit status and streams as a shell sees them."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    out = migsim("run", str(path), "-o", str(tmp_path / "out"), "--set", "link.bandwidth=0")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == "<--set>: link.bandwidth: must be > 0 (got 0)\n"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- random mutations

BASE: dict[str, Any] = {
    "name": "mutant",
    "seed": 1,
    "vm": {"memory": "256MiB", "page_size": "4KiB", "content": "modelled",
           "zero_fraction": 0.25, "device_state": "1MiB"},
    "workload": {"kind": "hotspot", "writes_per_s": 50000, "hot_set": "16MiB",
                 "hot_probability": 0.9, "write_size": "64B", "write_pattern": "clustered",
                 "region": {"offset": "1MiB", "size": "64MiB"}},
    "link": {"bandwidth": "10Gbit/s", "latency": "0.1ms",
             "schedule": [{"at": "5s", "bandwidth": "1Gbit/s"}]},
    "migration": {"start": "2s", "downtime_limit": "300ms", "max_bandwidth": "128MiB/s",
                  "xbzrle_cache_size": "64MiB", "capabilities": ["xbzrle"], "max_time": "600s",
                  "qemu_version": "10.2", "switchover": "qemu"},
    "wire": {"page_header": "8B", "zero_page": "9B"},
    "endpoints": {"source": {"supports": ["xbzrle", "auto-converge", "return-path"]},
                  "destination": {"version": "7.2", "enabled": []}},
    "negotiation": "management",
    "vms": [{"name": "a"}, {"name": "b", "vm": {"memory": "128MiB"}}],
    "sweep": {"grid": {"migration.xbzrle_cache_size": ["16MiB", "64MiB"]},
              "zip": {"seed": [1, 2], "link.latency": ["0s", "1ms"]}, "repeats": 2},
}
BASE_TEXT = yaml.safe_dump(BASE, sort_keys=False)
KEY_NAMES = [k for k in SCENARIO_KEY_PARTS if k != "plugins"]  # never import a module by chance
UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "KB", "GB", "kB", "gib", "b", "bit/s", "Gbit/s", "Mbps",
         "MiB/s", "B/s", "s", "ms", "us", "µs", "ns", "min", "h", "parsecs", "GiB/fortnight", "%",
         "", " ", "e", "e999", "e-999", "e99999999"]

numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -0.0, 1, 4096, 2**64, 2**64 + 1, 1e308]))
unit_strings = st.builds(lambda n, sep, u: f"{n}{sep}{u}", numbers, st.sampled_from(["", " "]),
                         st.sampled_from(UNITS))
leaf = st.one_of(numbers, unit_strings, st.booleans(), st.none(), st.text(max_size=12),
                 st.sampled_from(KEY_NAMES), st.sampled_from(["xbzrle", "multifd", "hotspot",
                                                              "exact", "10.2", "abc"]))
values = yaml_trees(leaf, KEY_NAMES, list_size=4, key_size=8, max_leaves=8)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(tree: Any, draw: st.DrawFn) -> Any:
    """One random change: delete a key or item, rename a key, or replace a value."""
    paths = _paths(tree)
    path = draw(st.sampled_from(paths))
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    action = draw(st.sampled_from(["delete", "rename", "replace", "replace", "replace"]))
    if action == "delete":
        del parent[last]
    elif action == "rename" and isinstance(parent, dict):
        new = draw(st.one_of(st.sampled_from(KEY_NAMES), st.text(min_size=1, max_size=12),
                             st.builds(lambda k, i: k[:i] + k[i + 1:], st.just(str(last)),
                                       st.integers(0, 10))))
        if new and new != "plugins":
            parent[new] = parent.pop(last)
    else:
        parent[last] = draw(values)
    return tree


@st.composite
def mutants(draw: st.DrawFn) -> dict[str, Any]:
    tree = yaml.safe_load(BASE_TEXT)  # a fresh deep copy
    for _ in range(draw(st.integers(1, 4))):
        if not _paths(tree):
            break
        tree = _mutate(tree, draw)
    return tree  # type: ignore[no-any-return]


YAML_NOISE = list(":-[]{},&*!|>'\"#%@`?\t\n\x00\x01 ") + ["  ", "<<: ", "---", "\n  ", "~"]


def _check_error(err: ScenarioError, file: str) -> None:
    text = str(err)
    assert text.isprintable(), repr(text)  # one line: no newline, no control character
    assert err.file in (file, "<--set>"), text
    assert text.startswith(f"{err.file}:"), text
    assert AFTER_FILE.fullmatch(text[len(err.file):]), text
    if err.file == file and err.line is None:  # only whole-file problems lack a line
        assert text.startswith(f"{file}: the file is empty"), text
    if err.file == "<--set>":
        assert err.line is None, text
    if err.key is not None:
        assert f": {err.key}: " in text, text


def _load(text: str, file: str = "m.yaml", overrides: dict[str, object] | None = None) -> None:
    try:
        scenario = loads_scenario(text, file=file, overrides=overrides)
    except ScenarioError as err:
        _check_error(err, file)
    else:
        expand(scenario)  # a valid scenario's sweep expands (bounded by MAX_RUNS)


# MIGSIM_SCENARIO_FUZZ_EXAMPLES=5000 explores further (random seeds instead of the fixed ones)
FUZZ = fuzz_settings(200, "MIGSIM_SCENARIO_FUZZ_EXAMPLES")


def test_base_scenario_is_valid() -> None:
    assert len(expand(loads_scenario(BASE_TEXT))) == 2 * 2 * 2


@FUZZ
@given(mutants())
def test_mutated_scenario_loads_or_says_where(tree: dict[str, Any]) -> None:
    _load(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))


@FUZZ
@given(st.data())
def test_mutated_text_loads_or_says_where(data: st.DataObject) -> None:
    """Character-level damage to the YAML text itself: the parser's errors too are one line."""
    text = BASE_TEXT
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        noise = data.draw(st.one_of(st.sampled_from(YAML_NOISE), st.text(max_size=3)))
        if action == "insert":
            text = text[:at] + noise + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 20)):]
        else:
            text = text[:at] + noise + text[at + len(noise):]
    _load(text)


@FUZZ
@given(st.dictionaries(
    st.one_of(st.sampled_from([k for k in SCENARIO_KEYS if "[]" not in k
                               and not k.startswith("plugins")]),
              st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0123456789", min_size=1,
                      max_size=20).filter(lambda k: not k.startswith("plugins"))),
    st.one_of(unit_strings, st.text(max_size=12), numbers.map(str),
              st.sampled_from(["[xbzrle, multifd]", "{a: 1}", "[", "!!bool maybe", "~", "",
                               "'unclosed", "[1, [2, [3]]]", "*alias"])),
    max_size=3))
def test_random_overrides_load_or_say_where(overrides: dict[str, object]) -> None:
    _load(BASE_TEXT, overrides=overrides)
