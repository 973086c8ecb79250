"""``vm.zero_placement`` and ``vm.zero_regions``: where a guest's zero pages are (sim/guest.py).
``first`` puts them at the lowest addresses, as the validation guest has them (below 1 MiB), so
the scan meets them first and a writer above them never turns one into a raw page before it is
sent; ``zero_regions`` names ranges that are zero besides (QEMU's firmware blocks after RAM)."""

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


def test_zero_regions_add_to_the_placed_pages() -> None:
    """Regions are zero on top of ``zero_fraction``'s pages, whole words or not."""
    pages = 1000
    guest = Guest(VmSpec(memory=pages * 4 * KiB, zero_fraction=0.01, zero_placement="first",
                         zero_regions=(RegionSpec(offset=60 * 4 * KiB, size=10 * 4 * KiB),
                                       RegionSpec(offset=900 * 4 * KiB, size=100 * 4 * KiB))),
                  np.random.default_rng(0))
    expected = np.zeros(pages, bool)
    expected[:10] = expected[60:70] = expected[900:] = True
    np.testing.assert_array_equal(guest.zero, expected)


def test_zero_pages_at_the_end_of_ram_leave_as_zero_pages() -> None:
    """The last 4 MiB zero, beyond the writer: sent as 1 024 zero records in the first pass,
    which cost no rate budget. Without them the first pass ends when fewer than the threshold's
    307 pages (4 MiB/s x 300 ms) are left, after 4 096 - 307 raw pages; with them, after the
    3 072 raw ones: 717 pages, 0.7 s at 1 024 pages a second, sooner (to a 100 ms window)."""
    def first_pass(**vm: object) -> tuple[int, float]:
        sc = closed_form_scenario(
            vm=VmSpec(memory=16 * MiB, device_state=0, **vm),  # type: ignore[arg-type]
            workload=WorkloadSpec(kind="sequential", writes_per_s=2000,
                                  region=RegionSpec(offset=0, size=4 * MiB)),
            migration=MigrationSpec(max_bandwidth=4 * MiB, max_time=30))
        first = run_one(sc).passes.iloc[0]
        return int(first.zero_pages), float(first.t_end_s - first.t_start_s)

    zero, with_zero = first_pass(zero_regions=(RegionSpec(offset=12 * MiB, size=4 * MiB),))
    none, without = first_pass()
    assert (zero, none) == (1024, 0)
    assert without - with_zero == pytest.approx(0.7, abs=0.11)
