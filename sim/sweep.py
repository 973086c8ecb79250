"""Sweeps at scale: ``sweep(scenario, out_dir, workers, scheduler, resume)`` (DESIGN §8).

Each sweep member is one task, a whole run (``run_one``), so tasks never talk to each other and the
result is the same whatever runs them: local worker processes by default, or a dask.distributed
cluster with ``scheduler="tcp://host:port"``. Tables come back as DataFrames and are concatenated in
member order, so worker count, backend and completion order cannot change a byte of the output.

A member that raises becomes a ``failed`` runs row naming the error; it never loses the sweep.
With ``out_dir``, every finished member is saved at once under ``out_dir/members/<run_id>/`` and
the combined tables are written at the end; ``resume=True`` reuses the members already on disk
(when their scenario is unchanged) and runs the rest. Ctrl-C keeps what finished and raises
:class:`SweepInterrupted`.

Local workers never outlive the sweep: on Ctrl-C they are terminated (killed if they linger), and
on Linux each worker, and the forkserver that forks them, asks the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed sweep leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
import multiprocessing.forkserver
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd

from sim import plugins
from sim.recorder import Recorder, runs_row
from sim.result import SCENARIO_FILE, Result, scenario_yaml
from sim.run import run_one
from sim.spec import Scenario

#: progress(done, total, failed): called once resumed members are counted and after each member
SweepProgress = Callable[[int, int, int], None]
#: finished(member index, its Result, its error line or None): the backends report through it
Finished = Callable[[int, Result, "str | None"], None]

MEMBERS_DIR = "members"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: finished members are kept (on disk too, with ``out_dir``)."""

    reason = "sweep interrupted"

    def __init__(self, result: Result, done: int, total: int) -> None:
        super().__init__(f"{self.reason}: {done} of {total} runs finished; the rest run with resume")
        self.result, self.done, self.total = result, done, total


class SweepBroken(RuntimeError):
    """A worker process died (killed, out of memory): finished members are kept, as on Ctrl-C.

    Also what a script that starts a sweep without ``if __name__ == "__main__":`` gets: worker
    processes import the main module, as with any ``multiprocessing`` code.
    """

    reason = "a worker process died (killed or out of memory?)"

    def __init__(self, result: Result, done: int, total: int) -> None:
        super().__init__(f"{self.reason}: {done} of {total} runs finished; the rest run with resume")
        self.result, self.done, self.total = result, done, total


# -- the task ------------------------------------------------------------------------------------


def run_member(member: Scenario, scenario_name: str) -> tuple[Result, str | None]:
    """One task: run ``member``; returns its Result and, if it raised, the error line.

    Module-level so a worker process or a dask worker can unpickle it by name.
    """
    try:
        _load_plugins(member)
        return run_one(member, scenario_name=scenario_name), None
    except Exception as err:
        return _lost(member, scenario_name, err)


def _load_plugins(member: Scenario) -> None:
    # A fresh worker has not loaded the scenario file, so neither the installed packages' encoders
    # nor its plug-in modules' are registered (where the scenario was loaded, both are no-ops).
    plugins.load_entry_points()
    for module in member.plugins:
        plugins.import_plugin(module, member.source_file or "<sweep>")


def failed_result(member: Scenario, scenario_name: str, reason: str) -> Result:
    """The tables of a member that could not run: a ``failed`` runs row per guest, with the swept
    parameters, ``reason`` in ``failure_reason``, numbers NaN (floats) or 0 (counts)."""
    guests: list[tuple[str | None, str]] = [(g.name or f"vm{i}", g.vm.content)
                                            for i, g in enumerate(member.vms)]
    results = []
    for vm, content in guests or [(None, member.vm.content)]:
        rec = Recorder(member.name, scenario_name, vm=vm)
        # memory_match: never checked, so not a match
        columns = runs_row(seed=member.seed, status="failed", failure_reason=reason,
                           negotiation=member.negotiation, capabilities="",
                           **({"memory_match": False} if content == "exact" else {}))
        rec.finish(params=dict(member.params), **columns)
        results.append(Result(**rec.frames(), scenario=member))
    result = Result.concat(results)
    result.scenario = member
    return result


def _lost(member: Scenario, scenario_name: str, err: BaseException) -> tuple[Result, str]:
    """A member that raised, or whose result never came back: a failed row naming the error."""
    reason = " ".join(f"{type(err).__name__}: {err}".split())
    return failed_result(member, scenario_name, reason), reason


# -- member directories --------------------------------------------------------------------------


def member_dirs(out_dir: str | os.PathLike[str], members: Sequence[Scenario]) -> list[Path]:
    """Where each member's tables go: ``out_dir/members/<run_id>`` (made file-name safe, unique)."""
    names: list[str] = []
    for i, member in enumerate(members):
        name = re.sub(r"[^\w.=+,-]+", "_", member.name).strip("._") or "member"
        if len(name) > 150:
            name = f"{name[:120]}-{hashlib.sha1(member.name.encode()).hexdigest()[:12]}"
        names.append(name if name not in names else f"{name}-{i}")
    return [Path(out_dir) / MEMBERS_DIR / name for name in names]


def _load_member(directory: Path, member: Scenario) -> Result | None:
    """A member saved by an earlier sweep, or None when missing, unfinished or of another scenario.

    ``scenario.yaml`` is written last, so its presence means the tables are complete.
    """
    try:
        if (directory / SCENARIO_FILE).read_text() != scenario_yaml(member):
            return None
        result = Result.load(directory, with_scenario=False)
    except (OSError, ValueError):
        return None
    # Parquet gives back lists as arrays; the swept values as the engine wrote them keep the
    # combined tables byte-identical to a sweep that ran every member in one go.
    for key, value in member.params:
        if key in result.runs.columns:
            result.runs[key] = pd.Series([value] * len(result.runs), name=key)
    result.scenario = member
    return result


def _save_member(directory: Path, result: Result) -> None:
    # Invalidate first: a crash mid-save must not leave old tables passing for new ones.
    (directory / SCENARIO_FILE).unlink(missing_ok=True)
    result.save(directory)


# -- the sweep -----------------------------------------------------------------------------------


def sweep(scenario: Scenario, out_dir: str | os.PathLike[str] | None = None,
          workers: int | None = None, scheduler: str | None = None, resume: bool = False,
          progress: SweepProgress | None = None) -> Result:
    """Run every member of ``scenario`` (a non-sweep scenario is one member) and combine them.

    Args:
        out_dir: save each member under ``out_dir/members/`` as it finishes, and the combined
            tables (``Result.save``) at the end.
        workers: local worker processes (default: one per usable CPU); 1 runs in this process.
        scheduler: a dask.distributed scheduler address; the tasks run there instead.
        resume: reuse members already saved in ``out_dir`` with an unchanged scenario.
        progress: ``progress(done, total, failed)``.

    Raises:
        SweepInterrupted: Ctrl-C; finished members are saved and combined first.
        SweepBroken: a worker process died; likewise.
    """
    from sim.scenario import expand

    members = expand(scenario)
    dirs = member_dirs(out_dir, members) if out_dir is not None else []
    results: list[Result | None] = [None] * len(members)
    if resume and out_dir is not None:
        results = [_load_member(d, m) for d, m in zip(dirs, members, strict=True)]
    failed = 0

    def finished(i: int, result: Result, error: str | None) -> None:
        nonlocal failed
        # A member that raised is not saved: resume runs it again (the cause may be fixed).
        if out_dir is not None and error is None:
            _save_member(dirs[i], result)
        results[i] = result  # after saving: what is combined on Ctrl-C is on disk too
        failed += error is not None
        if progress is not None:
            progress(sum(r is not None for r in results), len(members), failed)

    todo = [i for i, r in enumerate(results) if r is None]
    if progress is not None:
        progress(len(members) - len(todo), len(members), 0)
    try:
        if scheduler is not None:
            _run_dask(scheduler, members, todo, scenario.name, finished)
        elif (workers or _cpu_count()) == 1 or len(todo) <= 1:
            for i in todo:
                finished(i, *run_member(members[i], scenario.name))
        else:
            _run_local(min(workers or _cpu_count(), len(todo)), members, todo, scenario.name,
                       finished)
    except KeyboardInterrupt:
        count = sum(r is not None for r in results)
        raise SweepInterrupted(_combine(scenario, results, out_dir), count, len(members)) from None
    except BrokenProcessPool:
        count = sum(r is not None for r in results)
        raise SweepBroken(_combine(scenario, results, out_dir), count, len(members)) from None
    return _combine(scenario, results, out_dir)


def _combine(scenario: Scenario, results: Sequence[Result | None],
             out_dir: str | os.PathLike[str] | None) -> Result:
    """The finished members' tables in member order, as ``sim.run`` gives them; saved to ``out_dir``."""
    combined = Result.concat(r for r in results if r is not None)
    combined.scenario = scenario  # the sweep itself, so scenario.yaml reproduces all members
    if out_dir is not None:
        combined.save(out_dir)
    return combined


def _cpu_count() -> int:
    """The CPUs this process may use (a container's affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver with ``sim`` preloaded: workers start in ~0.5 s where spawn re-imports numpy,
    pandas, pyarrow and the numba kernels in each (5-9 s on a loaded 2-core box), and unlike plain
    fork it never copies a parent's threads (pyarrow's and OpenBLAS's pools) or locks."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sim.sweep"])
    return context


#: set (to the sweep's pid) while the forkserver starts: it then dies with that process
GUARD_ENV = "MIGSIM_SWEEP_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(expected_parent: int | None = None) -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; whether that is armed.

    With ``expected_parent``: if the parent is already another process (it died before the
    request), exit at once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
    return True


def _guard_forkserver() -> None:
    # The forkserver preloads this module: if the sweep process that started it asked, die with it
    # (its workers, the forkserver's children, then die with the forkserver).
    parent = os.environ.get(GUARD_ENV)
    if parent is not None and parent == str(os.getppid()):
        die_with_parent(int(parent))


_guard_forkserver()


def _start_forkserver(context: multiprocessing.context.BaseContext) -> None:
    """Start the forkserver now (from this thread, which it will die with) with the guard armed."""
    if context.get_start_method() != "forkserver" or threading.current_thread() \
            is not threading.main_thread():
        return
    previous = os.environ.get(GUARD_ENV)
    os.environ[GUARD_ENV] = str(os.getpid())
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if previous is None:
            os.environ.pop(GUARD_ENV, None)
        else:
            os.environ[GUARD_ENV] = previous


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def _run_local(workers: int, members: Sequence[Scenario], todo: Sequence[int], name: str,
               finished: Finished) -> None:
    context = _mp_context()
    _start_forkserver(context)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        pending: dict[Future[tuple[Result, str | None]], int] = {
            pool.submit(run_member, members[i], name): i for i in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                i = pending.pop(future)
                try:
                    result, error = future.result()
                except BrokenProcessPool:
                    raise
                except Exception as err:  # the result could not come back (pickling)
                    result, error = _lost(members[i], name, err)
                finished(i, result, error)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now, rather than wait for their runs."""
    # the workers first: shutdown() forgets them (``_processes = None``) and, at exit, the pool's
    # thread would then wait for the runs in progress
    processes = list((getattr(pool, "_processes", None) or {}).values())
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=1)
    for process in processes:  # a worker stuck in C code past SIGTERM
        if process.is_alive():
            process.kill()
            process.join(timeout=1)
    # A worker killed while it was sending a result leaves half a message in the result pipe:
    # the pool's thread would wait for the rest for ever (this process holds the pipe's write
    # end too, so no end of file comes), and the interpreter joins that thread at exit. With
    # the workers gone, closing that end gives the thread its end of file.
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.close()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_dask(scheduler: str, members: Sequence[Scenario], todo: Sequence[int], name: str,
              finished: Finished) -> None:
    """The same tasks on a dask.distributed cluster. A task lost with its worker (dask retries it
    first) becomes a failed row like any other error."""
    from distributed import Client, as_completed
    from distributed.comm.addressing import get_address_host_port

    try:
        get_address_host_port(scheduler)  # a malformed address fails here, before a Client exists
        client = Client(scheduler, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConnectionError(f"{scheduler}: cannot reach the dask scheduler "
                              f"({type(err).__name__}: {' '.join(str(err).split())})") from None
    futures = []
    try:
        futures = [client.submit(run_member, members[i], name, pure=False) for i in todo]
        index = {future.key: i for future, i in zip(futures, todo, strict=True)}
        for future in as_completed(futures, loop=client.loop):
            i = index[future.key]
            try:
                result, error = future.result()
            except Exception as err:  # KilledWorker, or the result could not come back
                result, error = _lost(members[i], name, err)
            finished(i, result, error)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        client.close()
