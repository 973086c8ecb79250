"""A results folder is written whole or not at all, by one writer at a time, never over an input;
it carries its provenance (issue 20, issue 19 item 7)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import sim.result as result_mod
from sim import cli
from sim.result import Result, ResultWriteError, replace_folder
from sim.spec import Scenario, VmSpec
from sim.units import MiB

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("runs.parquet", "passes.parquet", "samples.parquet", "events.parquet")


def tiny_result(name: str = "tiny", memory: int = 16 * MiB) -> Result:
    import sim

    result: Result = sim.run(Scenario(name=name, vm=VmSpec(memory=memory)))
    return result


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_disk_full_after_the_first_table_leaves_the_old_result_byte_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "res"
    tiny_result("old").save(out)
    (out / "members").mkdir()  # a foreign entry (a sweep's members/) must survive too
    (out / "members" / "keep.txt").write_text("kept")
    before = snapshot(out)
    real = result_mod._parquet_bytes
    calls = []

    def full(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(result_mod, "_parquet_bytes", full)
    with pytest.raises(ResultWriteError) as err:
        tiny_result("new", memory=32 * MiB).save(out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert "no space left" in str(err.value).lower()
    assert snapshot(out) == before
    assert (out / "members" / "keep.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no temporary left behind


def test_saving_over_an_old_result_replaces_it_whole_and_keeps_foreign_entries(
        tmp_path: Path) -> None:
    out = tmp_path / "res"
    tiny_result("old").save(out)
    (out / "stale.png").write_bytes(b"old figure")
    (out / "members").mkdir()
    tiny_result("new").save(out)
    assert not (out / "stale.png").exists()  # a figure of the old result goes with it
    assert (out / "members").is_dir()
    assert Result.load(out).runs["scenario"].tolist() == ["new"]


def test_result_files_are_mode_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tiny_result().save(tmp_path / "res")
        from sim.figures import draw_standard_figures
        drawn = draw_standard_figures(Result.load(out), out)
    finally:
        os.umask(old)
    files = [p for p in out.iterdir() if p.is_file()]
    assert {p.name for p in drawn} <= {p.name for p in files}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_read_only_parent_gives_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: ro\nvm: {memory: 16MiB}\n")
    parent = tmp_path / "ro"
    parent.mkdir()
    real_mkdir = os.mkdir

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        if Path(str(path)).parent == parent:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", read_only)
    assert cli.main(["run", str(scenario), "-o", str(parent / "out"), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(parent / "out") in err[0] and "read-only" in err[0]
    assert list(parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_chmod_read_only_parent_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: ro\nvm: {memory: 16MiB}\n")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "-o",
                               str(parent / "out"), "--no-plots"], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    finally:
        parent.chmod(0o755)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(parent / "out") in proc.stderr


def test_output_folder_holding_the_scenario_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "scenario.yaml"
    text = "name: self\nvm: {memory: 16MiB}\n"
    scenario.write_text(text)
    for output in (tmp_path, tmp_path.parent):
        assert cli.main(["run", str(scenario), "-o", str(output), "--no-plots"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds the input" in err[0] and str(output) in err[0]
    assert scenario.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenario.yaml"]


def test_output_folder_holding_a_trace_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("t_s,page\n0.0,1\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: tr\nvm: {{memory: 16MiB}}\nworkload: {{kind: trace, trace: "
                        f"{data / 't.csv'}}}\n")
    assert cli.main(["run", str(scenario), "-o", str(data), "--no-plots"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert (data / "t.csv").read_text() == "t_s,page\n0.0,1\n"


def test_two_writers_are_serialised_and_never_mix(tmp_path: Path) -> None:
    """Threads stand in for processes: flock locks per open file, so they exclude each other."""
    out = tmp_path / "res"
    inside = threading.Event()
    order: list[str] = []

    def slow(tmp: Path) -> None:
        order.append("slow-in")
        (tmp / "runs.csv").write_text("slow\n")
        inside.set()
        threading.Event().wait(0.5)
        order.append("slow-out")

    def fast(tmp: Path) -> None:
        order.append("fast-in")
        (tmp / "runs.csv").write_text("fast\n")
        order.append("fast-out")

    t = threading.Thread(target=replace_folder, args=(out, slow))
    t.start()
    inside.wait(10)
    replace_folder(out, fast)
    t.join()
    assert order == ["slow-in", "slow-out", "fast-in", "fast-out"]
    assert (out / "runs.csv").read_text() == "fast\n"


def test_a_writer_that_cannot_get_the_lock_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "res"
    inside, release = threading.Event(), threading.Event()

    def hold(tmp: Path) -> None:
        inside.set()
        release.wait(10)

    t = threading.Thread(target=replace_folder, args=(out, hold))
    t.start()
    inside.wait(10)
    try:
        with pytest.raises(ResultWriteError, match="another migsim is writing"):
            replace_folder(out, lambda tmp: None, lock_timeout_s=0.2)
    finally:
        release.set()
        t.join()


def test_concurrent_migsim_runs_into_one_folder_never_mix_tables(tmp_path: Path) -> None:
    out = tmp_path / "X"
    procs = []
    for name, memory in (("alpha", "16MiB"), ("beta", "32MiB")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nvm: {{memory: {memory}}}\n")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sim.cli", "run", str(path), "-o", str(out)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    loaded = Result.load(out)
    name = loaded.runs["scenario"].iloc[0]
    assert isinstance(loaded.scenario, Scenario) and loaded.scenario.name == name
    for table in ("passes", "samples", "events"):
        frame = getattr(loaded, table)
        assert set(frame["run_id"]) <= set(loaded.runs["run_id"]), table
    prov = json.loads((out / "provenance.json").read_text())
    assert f"{name}.yaml" in " ".join(prov["command"])
    assert f"migsim report: {name}" in (out / "report.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- provenance -------------------------------------------------------------------------------------


def test_provenance_in_json_parquet_metadata_and_report(tmp_path: Path) -> None:
    from importlib import metadata

    from sim.figures import draw_standard_figures

    out = tiny_result().save(tmp_path / "res", command=["migsim", "run", "x.yaml"])
    draw_standard_figures(Result.load(out), out)
    prov = json.loads((out / "provenance.json").read_text())
    digest = result_mod.hashlib.sha256((out / "scenario.yaml").read_bytes()).hexdigest()
    assert prov == {"migsim_version": metadata.version("migsim"), "scenario_sha256": digest,
                    "command": ["migsim", "run", "x.yaml"]}
    for table in TABLES:
        meta = pq.read_schema(out / table).metadata
        assert meta[b"migsim.version"] == metadata.version("migsim").encode()
        assert meta[b"migsim.scenario_sha256"] == digest.encode()
        assert b"migsim.command" not in meta
    report = (out / "report.html").read_text()
    assert f"scenario sha256 {digest}" in report and "command: migsim run x.yaml" in report


def test_tables_stay_byte_identical_across_command_lines(tmp_path: Path) -> None:
    result = tiny_result()
    a = result.save(tmp_path / "a", command=["migsim", "run", "a"])
    b = result.save(tmp_path / "b", command=["migsim", "run", "b", "--set", "x=y"])
    for name in (*TABLES, "runs.csv", "scenario.yaml"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # provenance.json records the command line, which differs here by design
    assert (a / "provenance.json").read_bytes() != (b / "provenance.json").read_bytes()
