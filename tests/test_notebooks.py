"""The analysis notebooks in notebooks/ run top to bottom without errors (at small sizes, injected
after their ``parameters`` cell as papermill does), and are committed without outputs."""

from __future__ import annotations

import ast
import asyncio
import csv
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "migsim-test-python3"
CELL_TIMEOUT_S = 300

# Per notebook: the values that replace its parameters so that it runs in a few seconds.
# OUTDIR, where a notebook writes files, is pointed at the test's tmp_path.
SMALL: dict[str, dict[str, object]] = {
    "01-quickstart": {"MEMORY": "512MiB", "HOT_SET": "32MiB", "BANDWIDTH": "2Gbit/s"},
    "02-xbzrle-cache-sizing": {
        "MEMORY": "256MiB", "HOT_SET": "8MiB", "WRITES_PER_S": 50_000,
        "BANDWIDTH": "200Mbit/s", "MAX_TIME": "15s",
        "CACHE_SIZES": ["2MiB", "4MiB", "8MiB", "16MiB"], "WRITE_SIZES": ["64B", "1KiB"],
    },
    "03-negotiation": {"MEMORY": "128MiB"},
    "04-validation": {
        "MEMORY": "128MiB", "BANDWIDTH": "16MiB/s", "LAMBDAS": [0.25, 0.5],
        "UNIFORM_RATIOS": [0.25], "SEEDS": 1,
    },
    "06-convergence-toolbox": {"MEMORY": "512MiB", "REGION": "256MiB", "MAX_SIM_TIME": "20s"},
    "07-controllers": {"MEMORY": "256MiB", "HOT_SET": "100MiB", "MAX_TIME": "20s",
                       "LIBVIRT_TIMEOUT": "5s"},
    "05-plugin-encoder": {
        "MEMORY": "128MiB", "HOT_SET": "8MiB", "BANDWIDTH": "300Mbit/s", "CACHE": "16MiB",
    },
    "08-real-redis-replayed": {"SWEEP": ["16MiB/s", "64MiB/s"]},
    "09-cluster-rollout": {"CONCURRENCY": [1, 2], "GUESTS": 8},
}


def _parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _parameter_names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _inject(nb, values: dict[str, object]):
    """Insert a cell after the ``parameters`` cell that assigns ``values`` (papermill's way)."""
    at = _parameters_cell(nb)
    unknown = set(values) - _parameter_names(nb.cells[at].source)
    assert not unknown, f"not parameters of this notebook: {sorted(unknown)}"
    source = "# Parameters injected by tests/test_notebooks.py\n" + "".join(
        f"{name} = {value!r}\n" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(at + 1, cell)
    return nb


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec running this interpreter (the venv's), found first through JUPYTER_PATH."""
    data = tmp_path_factory.mktemp("jupyter")
    spec = data / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "migsim tests", "language": "python",
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(data))
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        yield KERNEL


def _client(path: Path, cwd: Path, outdir: Path, kernel_name: str,
            extra: dict[str, object] | None = None):
    nb = nbformat.read(path, as_version=4)
    values = {**SMALL.get(path.stem, {}), **(extra or {})}
    if "OUTDIR" in _parameter_names(nb.cells[_parameters_cell(nb)].source):
        values["OUTDIR"] = str(outdir)
    _inject(nb, values)
    return nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                                   resources={"metadata": {"path": str(cwd)}})


# Where Jupyter would start the kernel: notebooks/ (opening a notebook from the file browser) or
# the repository root (`jupyter lab notebooks/01-quickstart.ipynb`); the notebooks find the
# repository either way. One notebook is run from the root, the rest from notebooks/.
FROM_ROOT = "01-quickstart"
# Its real-QEMU section is run against a made-up `migsim validate` results directory.
VALIDATION_NOTEBOOK = "04-validation"


def _fake_validation_results(directory: Path) -> Path:
    """A results directory shaped like `migsim validate --real-qemu -o DIR` output, so that the
    validation notebook's real-QEMU section is exercised without QEMU: validation.csv plus one
    case's tables under qemu/ and model/ (here both from a tiny simulated run)."""
    import sim

    scenario = sim.load_scenario(ROOT / "scenarios" / "classic-rounds.yaml", overrides={
        "vm.memory": "8MiB", "workload": {"kind": "uniform", "writes_per_s": 200}})
    result = sim.run(scenario)
    for kind in ("qemu", "model"):
        result.save(directory / kind / "qemu-fake")
    run = result.runs.iloc[0]
    columns = ("case", "quantity", "expected", "model", "rel_error", "tolerance", "ok", "kind",
               "note", "source")
    rows = [
        ("v1-idle", "total_time_s", 1.0, 1.0, 0.0, "±0.01 rel", True, "model", "", "test"),
        ("qemu-fake", "status", "completed", run.status, "", "equal", True, "qemu", "", "test"),
        ("qemu-fake", "total_time_s", run.total_time_s * 1.05, run.total_time_s, 0.048,
         "±0.1 rel", True, "qemu", "", "test"),
        ("qemu-fake", "transferred_bytes", run.transferred_bytes, run.transferred_bytes, 0.0,
         "±0.1 rel", True, "qemu", "", "test"),
        ("qemu-fake", "downtime_s", 0.003, run.downtime_s, 0.5, "(report)", "", "qemu",
         "reported, not judged", "test"),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "validation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return directory


@pytest.fixture(scope="module")
def executed(kernel, tmp_path_factory):
    """Every notebook executed, several at once (most of a notebook's time is its kernel starting
    and importing): stem -> (executed notebook or the exception it raised, its OUTDIR)."""
    clients, outdirs = {}, {}
    validation = _fake_validation_results(tmp_path_factory.mktemp("validation"))
    for path in NOTEBOOKS:
        outdirs[path.stem] = tmp_path_factory.mktemp(path.stem) / "out"
        cwd = ROOT if path.stem == FROM_ROOT else NOTEBOOK_DIR
        extra = {"VALIDATION_DIR": str(validation)} if path.stem == VALIDATION_NOTEBOOK else {}
        clients[path.stem] = _client(path, cwd, outdirs[path.stem], kernel, extra)
    limit = asyncio.Semaphore(max(2, min(4, os.cpu_count() or 1)))

    async def one(client):
        async with limit:
            try:
                await client.async_execute()
            except Exception as e:  # reported by the notebook's own test
                return e
            return client.nb

    async def all_of_them():
        return await asyncio.gather(*(one(c) for c in clients.values()))

    done = asyncio.run(all_of_them())
    return {stem: (nb, outdirs[stem]) for stem, nb in zip(clients, done, strict=True)}


def test_every_notebook_has_small_parameters():
    assert NOTEBOOKS, "no notebooks found"
    missing = [p.name for p in NOTEBOOKS if p.stem not in SMALL]
    assert not missing, f"add small parameters for {missing} to SMALL in this file"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, executed):
    """Every cell runs without an error, figures come out, OUTDIR gets the files."""
    nb, outdir = executed[path.stem]
    if isinstance(nb, Exception):
        raise nb
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    images = [out for cell in nb.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    if any("plt.show()" in cell.source for cell in nb.cells):
        assert images, "the notebook draws figures but none came out"
    for cell in nb.cells:  # a figure shown twice (returned `fig` plus the inline backend's)
        pngs = [out["data"]["image/png"] for out in cell.get("outputs", [])
                if "image/png" in out.get("data", {})]
        assert len(pngs) == len(set(pngs)), f"a cell shows the same figure twice:\n{cell.source}"
    if path.stem == FROM_ROOT:
        assert (outdir / "runs.parquet").is_file()
        assert (outdir / "timeline.png").is_file()
    if path.stem == VALIDATION_NOTEBOOK:
        text = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
        assert "qemu: 1 cases, 3 of 3 judged quantities within tolerance" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    """No outputs, no execution counts, a parameters cell first among code cells, small JSON."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs; clear them before committing"
    assert _parameters_cell(nb) == nb.cells.index(code[0]), "the first code cell holds parameters"
    assert path.stat().st_size < 40_000
    assert "import sim" in "\n".join(c.source for c in code)
