"""``vm.zero_placement``: where a guest's zero pages are (sim/guest.py). ``first`` puts them at
the lowest addresses, as the validation guest has them (below 1 MiB), so the scan meets them
first and a writer above them never turns one into a raw page before it is sent."""

from __future__ import annotations

import numpy as np
import pytest

from sim.guest import Guest
from sim.run import run_one
from sim.spec import MigrationSpec, RegionSpec, VmSpec, WorkloadSpec
from sim.units import KiB, MiB
from tests.builders import closed_form_scenario


@pytest.mark.parametrize("pages, fraction", [(16514, 222 / 16514), (1000, 0.064), (640, 0.1),
                                             (100, 0.0), (100, 1.0)])
def test_first_places_the_lowest_pages(pages: int, fraction: float) -> None:
    guest = Guest(VmSpec(memory=pages * 4 * KiB, zero_fraction=fraction,
                         zero_placement="first"), np.random.default_rng(0))
    n = round(fraction * pages)
    np.testing.assert_array_equal(guest.zero, np.arange(pages) < n)


def _zero_records(placement: str) -> int:
    """Zero pages sent in the first pass by a 16 MiB guest with 1 024 zero pages, whose writer
    sweeps the upper 12 MiB at 2 000 pages a second, migrated at 4 MiB/s (4 s a pass)."""
    sc = closed_form_scenario(
        vm=VmSpec(memory=16 * MiB, zero_fraction=0.25, zero_placement=placement,
                  device_state=0),
        workload=WorkloadSpec(kind="sequential", writes_per_s=2000,
                              region=RegionSpec(offset=4 * MiB, size=12 * MiB)),
        migration=MigrationSpec(max_bandwidth=4 * MiB, max_time=30))
    return int(run_one(sc).passes.zero_pages.iloc[0])


def test_zero_pages_below_the_writer_all_leave_as_zero_pages() -> None:
    """``first``: the 1 024 zero pages are the lowest 4 MiB, below the writer: all sent as zero
    records in the first pass. ``random``: three quarters of them lie in the swept 12 MiB, and
    the writer reaches most of those before the scan does (it sweeps them every 1.5 s; the scan
    takes 4 s), so they leave as raw pages."""
    assert _zero_records("first") == 1024
    assert _zero_records("random") < 0.6 * 1024
