"""Sweeps in worker processes and on dask (sim.sweep, ``migsim sweep``): the same tables as
``sim.run`` whatever runs them, failed members as rows, incremental files, resume and Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim import cli
from sim.result import Result
from sim.scenario import expand, load_scenario
from sim.sweep import MEMBERS_DIR, member_dirs, sweep

ROOT = Path(__file__).resolve().parents[1]
TABLE_FILES = ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet", "runs.csv",
               "scenario.yaml")

# Four short members; a list-valued swept key checks that members read back from disk combine
# into the same bytes as members run in one go.
TINY = """\
name: tiny-sweep
seed: 3
vm: {memory: 64MiB, zero_fraction: 0.2}
workload: {kind: hotspot, writes_per_s: 20000, hot_set: 8MiB}
link: {bandwidth: 1Gbit/s}
migration: {xbzrle_cache_size: 8MiB, max_time: 20s}
sweep:
  grid:
    workload.writes_per_s: [1000, 50000]
    migration.capabilities: [[], [xbzrle]]
"""

# Twelve members of ~0.1-0.2 s each: long enough to interrupt part-way.
SLOW = """\
name: slow-sweep
seed: 1
vm: {memory: 1GiB, zero_fraction: 0.25}
workload: {kind: uniform}
link: {bandwidth: 1Gbit/s}
migration: {max_bandwidth: 0}
sweep:
  grid:
    workload.writes_per_s: [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000,
                            12000]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_same(a: Result, b: Result) -> None:
    for name, frame in a.tables().items():
        other = b.tables()[name]
        assert frame.reset_index(drop=True).equals(other.reset_index(drop=True)), name


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in TABLE_FILES}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[sim.spec.Scenario, Result]:
    path = write(tmp_path_factory.mktemp("tiny"), "tiny.yaml", TINY)
    scenario = load_scenario(path)
    return scenario, sim.run(scenario)


def test_two_workers_equal_the_sequential_run(tiny, tmp_path):
    scenario, expected = tiny
    calls = []
    result = sweep(scenario, out_dir=tmp_path, workers=2,
                   progress=lambda *a: calls.append(a))
    assert_same(result, expected)
    assert list(result.runs.status) == ["completed"] * 4
    assert calls[0] == (0, 4, 0) and calls[-1] == (4, 4, 0)
    # The combined files are the ones sim.run's Result saves, byte for byte.
    expected.save(tmp_path / "sequential")
    assert file_bytes(tmp_path) == file_bytes(tmp_path / "sequential")
    for directory, member in zip(member_dirs(tmp_path, expand(scenario)), expand(scenario),
                                 strict=True):
        saved = Result.load(directory)
        assert list(saved.runs.run_id) == [member.name]
        assert saved.scenario == member


def test_a_member_that_raises_becomes_a_failed_row(tmp_path):
    trace = tmp_path / "trace.csv"
    pd.DataFrame({"t_s": [0.01 * i for i in range(200)],
                  "page": [7 * i for i in range(200)]}).to_csv(trace, index=False)
    path = write(tmp_path, "trace.yaml", f"""\
name: trace-sweep
vm: {{memory: 16MiB, content: exact}}
workload: {{kind: trace, trace: {trace}}}
sweep:
  grid:
    workload.trace: [{trace}, {tmp_path / "missing.csv"}]
""")
    scenario = load_scenario(path)
    result = sweep(scenario, out_dir=tmp_path / "out", workers=2)
    runs = result.runs
    assert list(runs.status) == ["completed", "failed"]
    bad = runs.iloc[1]
    assert bad.failure_reason.startswith("FileNotFoundError: ")
    assert "missing.csv" in bad.failure_reason
    assert bad["workload.trace"] == str(tmp_path / "missing.csv")
    assert bad.seed == 0 and bad.pages_lost == 0 and not bad.memory_match
    assert pd.isna(bad.total_time_s) and bad.transferred_bytes == 0
    # Same columns and dtypes as a run that ran.
    assert runs.dtypes.to_dict() == sim.run(expand(scenario)[0]).runs.dtypes.to_dict() | {
        "workload.trace": runs.dtypes["workload.trace"]}
    # The failed member is not kept: resume tries it again.
    dirs = member_dirs(tmp_path / "out", expand(scenario))
    assert (dirs[0] / "scenario.yaml").is_file() and not dirs[1].exists()
    assert list(Result.load(tmp_path / "out").runs.status) == ["completed", "failed"]


def test_resume_reruns_only_missing_or_changed_members(tiny, tmp_path):
    scenario, expected = tiny
    sweep(scenario, out_dir=tmp_path, workers=2)
    combined = file_bytes(tmp_path)
    dirs = member_dirs(tmp_path, expand(scenario))
    shutil.rmtree(dirs[1])
    # Another scenario's member under the same name does not count as finished.
    yaml_path = dirs[2] / "scenario.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("seed: 3", "seed: 4"))
    stamps = {d: (d / "runs.parquet").stat() for d in (dirs[0], dirs[3])}
    calls = []
    result = sweep(scenario, out_dir=tmp_path, workers=2, resume=True,
                   progress=lambda *a: calls.append(a))
    assert calls[0] == (2, 4, 0)  # two members reused before anything ran
    for d, before in stamps.items():  # untouched
        after = (d / "runs.parquet").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "seed: 3" in yaml_path.read_text()
    assert (dirs[1] / "scenario.yaml").is_file()
    assert_same(result, expected)
    assert file_bytes(tmp_path) == combined


def test_cli_sweep_prints_the_summary_and_writes_members(tmp_path, capsys):
    path = write(tmp_path, "tiny.yaml", TINY)
    out = tmp_path / "out"
    status = cli.main(["sweep", str(path), "-o", str(out), "--workers", "1", "--no-plots",
                       "--set", "link.bandwidth=2Gbit/s"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "tiny-sweep-writes_per_s=50000-capabilities=xbzrle" in printed
    assert f"wrote {out}/: runs.parquet" in printed
    runs = Result.load(out).runs
    assert len(runs) == 4 and len(list((out / MEMBERS_DIR).iterdir())) == 4
    assert cli.main(["sweep", str(path), "--workers", "0"]) == 2
    assert "--workers 0: expected a positive number" in capsys.readouterr().err


def _migsim(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from sim.cli import main; sys.exit(main())", *args]


def test_ctrl_c_keeps_finished_members_and_resume_completes(tmp_path):
    path = write(tmp_path, "slow.yaml", SLOW)
    out = tmp_path / "out"
    members = member_dirs(out, expand(load_scenario(path)))
    proc = subprocess.Popen(_migsim("sweep", str(path), "-o", str(out), "--workers", "2",
                                    "--no-plots"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not any((d / "scenario.yaml").exists() for d in members):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "sweep interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    finished = [d for d in members if (d / "scenario.yaml").exists()]
    assert 1 <= len(finished) < len(members)
    partial = Result.load(out)
    assert len(partial.runs) == len(finished)
    stamps = {d: (d / "runs.parquet").stat().st_mtime_ns for d in finished}

    # In this process this time: the worker count does not change a byte either.
    resumed = subprocess.run(_migsim("sweep", str(path), "-o", str(out), "--workers", "1",
                                     "--no-plots", "--resume"),
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert all((d / "runs.parquet").stat().st_mtime_ns == t for d, t in stamps.items())
    whole = sim.run(load_scenario(path))
    whole.save(tmp_path / "whole")
    assert file_bytes(out) == file_bytes(tmp_path / "whole")


def test_dask_cluster_gives_the_same_tables(tiny):
    distributed = pytest.importorskip("distributed")
    scenario, expected = tiny
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        result = sweep(scenario, scheduler=cluster.scheduler_address)
    assert_same(result, expected)


def test_unreachable_scheduler_is_one_line(tiny):
    dask = pytest.importorskip("dask")
    scenario, _ = tiny
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ConnectionError, match="cannot reach the dask scheduler"):
        sweep(scenario, scheduler="tcp://127.0.0.1:9")


def test_a_dead_worker_keeps_the_finished_members(tiny, tmp_path, monkeypatch):
    from sim import sweep as sweep_mod

    scenario, _ = tiny
    monkeypatch.setattr(sweep_mod, "run_member", _die_on_third)
    with pytest.raises(sweep_mod.SweepBroken) as caught:
        sweep(scenario, out_dir=tmp_path, workers=2)
    assert caught.value.total == 4 and caught.value.done == len(caught.value.result.runs)
    assert (tmp_path / "runs.parquet").is_file()


def _die_on_third(member, scenario_name):
    """A worker killed mid-run (as by the OOM killer) on the third member."""
    from sim.sweep import run_member as real

    if member.name.endswith("writes_per_s=50000-capabilities=none"):
        os._exit(9)
    return real(member, scenario_name)


def test_a_result_that_cannot_come_back_becomes_a_failed_row(tiny, monkeypatch):
    from sim import sweep as sweep_mod

    scenario, expected = tiny
    monkeypatch.setattr(sweep_mod, "run_member", _unpicklable_on_second)
    result = sweep(scenario, workers=2)
    assert list(result.runs.status) == ["completed", "failed", "completed", "completed"]
    assert "pickle" in result.runs.failure_reason[1].lower()
    kept = [0, 2, 3]
    assert result.runs.iloc[kept].reset_index(drop=True).equals(
        expected.runs.iloc[kept].reset_index(drop=True))


def _unpicklable_on_second(member, scenario_name):
    """A result that cannot be sent back (as when the worker runs another migsim version)."""
    from sim.sweep import run_member as real

    result, error = real(member, scenario_name)
    if member.name.endswith("writes_per_s=1000-capabilities=xbzrle"):
        result.scenario = lambda: None
    return result, error


def test_resume_after_a_dead_worker_gives_byte_identical_files(tiny, tmp_path, monkeypatch):
    """Issue 8: a worker killed part-way keeps the finished rows; --resume finishes the rest and
    the combined files equal, byte for byte, those of a sweep that was never interrupted."""
    from sim import sweep as sweep_mod

    scenario, _ = tiny
    clean = tmp_path / "clean"
    sweep(scenario, out_dir=clean, workers=2)
    broken = tmp_path / "broken"
    with monkeypatch.context() as m:
        m.setattr(sweep_mod, "run_member", _die_on_third)
        with pytest.raises(sweep_mod.SweepBroken):
            sweep(scenario, out_dir=broken, workers=2)
    sweep(scenario, out_dir=broken, workers=2, resume=True)
    for name in ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet",
                 "runs.csv"):
        assert (broken / name).read_bytes() == (clean / name).read_bytes(), name


def test_the_same_scenario_twice_gives_byte_identical_files(tiny, tmp_path):
    scenario, _ = tiny
    for out in ("a", "b"):
        sim.run(scenario).save(tmp_path / out)
    for name in ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# -- signals: Ctrl-C, SIGTERM, SIGKILL of a local sweep ----------------------------------------------

# Six members of ~2-3 s each (40 M guest writes; since the compiled draws 10 M take ~1 s): with
# two workers, two are running whenever the signal comes.
LONG = """\
name: long-sweep
seed: 1
vm: {memory: 2GiB}
workload: {kind: hotspot, writes_per_s: 1000000, hot_set: 256MiB}
link: {bandwidth: 1Gbit/s}
migration: {max_time: 40s}
sweep:
  grid:
    seed: [1, 2, 3, 4, 5, 6]
"""
MARK = "MIGSIM_TEST_SWEEP_MARK"


def _marked(token: str) -> list[tuple[int, str]]:
    """The processes (pid, command line) whose environment carries ``MARK=token``: the sweep's
    process and everything it started (forkserver, workers, resource tracker) inherit it."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                found.append((int(entry), cmdline.decode(errors="replace")[:100]))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _none_left(token: str, within_s: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + within_s
    while (left := _marked(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _start_long_sweep(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, list[Path], str]:
    """``python -m sim.cli sweep`` of LONG with two workers, once its first member is saved."""
    path = write(tmp_path, "long.yaml", LONG)
    out = tmp_path / "out"
    members = member_dirs(out, expand(load_scenario(path)))
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, MARK: token, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "sweep", str(path), "-o", str(out),
                             "--workers", "2", "--no-plots"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((d / "scenario.yaml").exists() for d in members):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)  # the next members are running
    assert len(_marked(token)) >= 4, _marked(token)  # sweep, forkserver, 2 workers (+ tracker)
    return proc, path, members, token


def _stop_and_check(proc: subprocess.Popen[str], members: list[Path], token: str, signum: int,
                    status: int, *, twice: bool = False) -> list[Path]:
    proc.send_signal(signum)
    sent = time.monotonic()
    if twice:
        time.sleep(0.2)
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == status, stderr
    assert elapsed < 3.0, f"{elapsed:.1f} s to exit"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("migsim: sweep "), stderr
    assert lines[0].endswith("--resume"), stderr
    assert not _none_left(token, 2.0)
    finished = [d for d in members if (d / "scenario.yaml").exists()]
    assert 1 <= len(finished) < len(members)
    assert len(Result.load(members[0].parent.parent).runs) == len(finished)
    return finished


@pytest.mark.slow  # ~40 s: a partial sweep, its resume and the whole sweep again
def test_sigint_cancels_running_members_and_resume_is_byte_identical(tmp_path):
    proc, path, members, token = _start_long_sweep(tmp_path)
    finished = _stop_and_check(proc, members, token, signal.SIGINT, 130)
    stamps = {d: (d / "runs.parquet").stat().st_mtime_ns for d in finished}
    out = members[0].parent.parent
    resumed = subprocess.run([sys.executable, "-m", "sim.cli", "sweep", str(path), "-o", str(out),
                              "--workers", "2", "--no-plots", "--resume"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert all((d / "runs.parquet").stat().st_mtime_ns == t for d, t in stamps.items())
    whole = tmp_path / "whole"
    sweep(load_scenario(path), out_dir=whole, workers=2)
    assert file_bytes(out) == file_bytes(whole)


def test_second_sigint_is_quiet(tmp_path):
    proc, _, members, token = _start_long_sweep(tmp_path)
    _stop_and_check(proc, members, token, signal.SIGINT, 130, twice=True)


def test_sigterm_stops_like_ctrl_c(tmp_path):
    proc, _, members, token = _start_long_sweep(tmp_path)
    _stop_and_check(proc, members, token, signal.SIGTERM, 143)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_the_sweep_leaves_no_process(tmp_path):
    """The workers and the forkserver die with the sweep even when it cannot clean up."""
    proc, _, _, token = _start_long_sweep(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert not _none_left(token, 1.0)  # a member in progress would have ~2 s left


def test_die_with_parent_is_armed_in_workers(tmp_path):
    """The worker initializer asks for PR_SET_PDEATHSIG (read back from /proc: no signal number
    there, so through prctl(PR_GET_PDEATHSIG) in the worker)."""
    from concurrent.futures import ProcessPoolExecutor

    from sim import sweep as sweep_mod

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    context = sweep_mod._mp_context()
    with ProcessPoolExecutor(1, mp_context=context, initializer=sweep_mod._init_worker) as pool:
        assert pool.submit(_pdeathsig).result(timeout=60) == signal.SIGKILL
    assert _pdeathsig() == 0  # this process: untouched


def _pdeathsig() -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(-1)
    assert libc.prctl(2, ctypes.byref(value), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
    return value.value


def test_a_sweep_whose_members_all_failed_exits_1(tmp_path, capsys):
    """Every member raised: the tables and summary are still written, but the exit is not 0."""
    path = write(tmp_path, "all-fail.yaml", f"""\
name: all-fail
vm: {{memory: 16MiB, content: exact}}
workload: {{kind: trace, trace: {tmp_path / "a.csv"}}}
sweep:
  grid:
    workload.trace: [{tmp_path / "a.csv"}, {tmp_path / "b.csv"}]
""")
    status = cli.main(["sweep", str(path), "-o", str(tmp_path / "out"), "--workers", "1",
                       "--no-plots"])
    captured = capsys.readouterr()
    assert status == 1, captured.err
    assert "all-fail" in captured.out  # the summary, as for any sweep
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("migsim: every run of the sweep failed (2 of 2); first: "
                                "FileNotFoundError: "), captured.err
    assert list(Result.load(tmp_path / "out").runs.status) == ["failed", "failed"]


def test_stop_frees_the_pool_thread_from_half_a_result() -> None:
    """A worker killed while sending its result leaves half a message in the result pipe; the
    pool's thread must not wait for the rest (the interpreter joins it at exit: a Ctrl-C'd
    sweep hung after its message, seen in CI)."""
    import struct
    from concurrent.futures import ProcessPoolExecutor

    from sim.sweep import _mp_context, _stop

    pool = ProcessPoolExecutor(1, mp_context=_mp_context())
    assert pool.submit(int, "1").result(timeout=60) == 1  # the pool and its thread are up
    thread = pool._executor_manager_thread  # type: ignore[attr-defined]
    writer = pool._result_queue._writer  # type: ignore[attr-defined]
    os.write(writer.fileno(), struct.pack("!i", 1000))  # a header whose body never comes
    time.sleep(0.2)  # the thread is now reading the body
    _stop(pool)
    thread.join(timeout=10)
    assert not thread.is_alive()
