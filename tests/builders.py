"""Builders shared by the tests: small scenarios and tables, as plain functions and constants (they
are used at module level too, where fixtures cannot reach; ``conftest.py`` holds the fixtures).

``closed_form_scenario`` is the papers' model that closed forms assume: pages leave at link rate,
with no record headers on the wire and no source CPU cost. ``idle_guest`` writes nothing, so its
RAM (no zero pages) is sent exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from sim.run import Testbed
from sim.spec import (
    GuestSpec,
    MigrationSpec,
    Scenario,
    SourceCpuSpec,
    VmSpec,
    WireSpec,
    WorkloadSpec,
)
from sim.units import MiB

#: no bytes on the wire besides the pages themselves
ZERO_OVERHEAD = WireSpec(page_header=0, zero_page=0, xbzrle_header=0, chunk_overhead=0)
#: the migration thread costs nothing: pages leave at link rate
FREE_CPU = SourceCpuSpec.free()
#: RAM of an idle test guest
IDLE_MEMORY = 64 * MiB
#: RAM of a tiny scenario: big enough for a few passes, fast to run
TINY_MEMORY = 16 * MiB


def closed_form_scenario(name: str = "closed-form", **fields: Any) -> Scenario:
    """A Scenario with ZERO_OVERHEAD on the wire and FREE_CPU, plus ``fields``."""
    return Scenario(name=name, **{"wire": ZERO_OVERHEAD, "source_cpu": FREE_CPU, **fields})


def idle_guest(name: str = "", *, memory: int = IDLE_MEMORY, device_state: int = 0,
               **migration: Any) -> GuestSpec:
    """A guest that writes nothing, without zero pages, unlimited by ``max_bandwidth``;
    ``migration`` sets further MigrationSpec fields (``start=0.3``)."""
    return GuestSpec(name=name,
                     vm=VmSpec(memory=memory, zero_fraction=0.0, device_state=device_state),
                     workload=WorkloadSpec(kind="idle"),
                     migration=MigrationSpec(max_bandwidth=0, **migration))


def single_guest_scenario(guest: GuestSpec, name: str = "closed-form", **fields: Any) -> Scenario:
    """``guest`` as the top-level guest of a closed-form scenario (no ``vms:``)."""
    return closed_form_scenario(name, vm=guest.vm, workload=guest.workload,
                                migration=guest.migration, **fields)


def tiny_scenario(**fields: Any) -> Scenario:
    """QEMU's defaults on a TINY_MEMORY guest, plus ``fields``."""
    return Scenario(**{"vm": VmSpec(memory=TINY_MEMORY), **fields})


def samples_frame(run_id: str = "r0", n: int = 20, throttle: float = 0.0) -> pd.DataFrame:
    """A samples table of one run: 100 ms windows, pending bytes draining from 200 MiB to 0,
    auto-converge rising by 10 points a window up to ``throttle`` %."""
    return pd.DataFrame({
        "run_id": [run_id] * n,
        "t_s": [0.1 * i for i in range(n)],
        "bandwidth_bytes_per_s": [100.0 * MiB] * n,
        "threshold_bytes": [30.0 * MiB] * n,
        "pending_bytes": [max(0, 200 - 12 * i) * MiB for i in range(n)],
        "expected_downtime_s": [1.0] * n,
        "dirty_pages_rate": [1000.0] * n,
        "transferred_bytes": [i * 10 * MiB for i in range(n)],
        "throttle_pct": [min(throttle, 10.0 * i) for i in range(n)],
        "status": ["active"] * (n - 1) + ["completed"],
    })


def yaml_testbed(folder: Path, base: str, extra: str = "") -> Testbed:
    """A Testbed of the scenario ``base`` plus ``extra`` (YAML, dedented), written in ``folder``."""
    import textwrap

    import sim

    path = folder / "scenario.yaml"
    path.write_text(textwrap.dedent(base) + textwrap.dedent(extra))
    return Testbed(sim.load_scenario(path))


def track_buffer(tb: Testbed) -> Callable[[], int]:
    """The most writes the source's write buffer has held at once, from now on."""
    buffer = tb.pairs[0].migration.writes
    longest = 0
    generate = buffer.generate_until

    def tracked(t_end: float) -> None:
        nonlocal longest
        generate(t_end)
        longest = max(longest, len(buffer.batch))

    buffer.generate_until = tracked  # type: ignore[method-assign]
    return lambda: longest
