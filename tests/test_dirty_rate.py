"""calc-dirty-rate / query-dirty-rate: QEMU's page-sampling estimate on the model's memory,
checked against the closed form of a uniform writer: after T seconds at w writes/s over P pages
a share 1 - (1 - 1/P)^(wT) of the pages has changed, so the rate is that share x RAM (MiB) / T."""

from __future__ import annotations

import pytest

from sim.errors import QmpError
from sim.run import Testbed
from sim.spec import Scenario, VmSpec, WorkloadSpec
from sim.units import GiB, MiB


def make_testbed(memory: int, writes_per_s: float, content: str = "modelled") -> Testbed:
    return Testbed(Scenario(name="rate", seed=9, vm=VmSpec(memory=memory, content=content),
                            workload=WorkloadSpec(kind="uniform", writes_per_s=writes_per_s)))


def true_rate(memory: int, writes_per_s: float, seconds: float) -> float:
    pages = memory // 4096
    share = 1 - (1 - 1 / pages) ** (writes_per_s * seconds)
    return share * (memory / MiB) / seconds


@pytest.mark.parametrize(("memory", "rate", "content", "sample_pages", "calc_ms"), [
    (4 * GiB, 300_000.0, "modelled", None, 1000),   # 2048 samples, a third of RAM changes
    (4 * GiB, 1_000_000.0, "modelled", 1024, 500),
    (128 * MiB, 10_000.0, "exact", 4096, 1000),     # 512 samples of real bytes
])
def test_page_sampling_is_within_ten_percent_of_the_true_rate(
        memory: int, rate: float, content: str, sample_pages: int | None, calc_ms: int) -> None:
    tb = make_testbed(memory, rate, content)
    tb.advance(2.0)
    src = tb.source
    assert src.query_dirty_rate()["status"] == "unstarted"
    src.calc_dirty_rate(calc_ms, "millisecond", sample_pages)
    info = src.query_dirty_rate()
    assert info["status"] == "measuring" and "dirty-rate" not in info
    with pytest.raises(QmpError, match="already in progress"):
        src.calc_dirty_rate(1)
    tb.advance(2.0 + calc_ms / 1000 + 0.01)
    info = src.query_dirty_rate("millisecond")
    assert info["status"] == "measured"
    assert info["calc-time"] == calc_ms and info["calc-time-unit"] == "millisecond"
    assert info["start-time"] == 2 and info["mode"] == "page-sampling"
    expected = true_rate(memory, rate, calc_ms / 1000)
    assert info["dirty-rate"] == pytest.approx(expected, rel=0.10)


def test_a_stopped_guest_dirties_nothing() -> None:
    tb = make_testbed(1 * GiB, 100_000.0)
    tb.advance(1.0)
    tb.source.stop()
    tb.source.calc_dirty_rate(1)
    tb.advance(2.5)
    assert tb.source.query_dirty_rate()["dirty-rate"] == 0
    assert tb.source.query_dirty_rate()["calc-time"] == 1


@pytest.mark.parametrize(("args", "problem"), [
    ((0,), "Calc-time is out of range"),
    ((61,), "Calc-time is out of range"),
    ((50, "millisecond"), "Calc-time is out of range"),
    ((1, "second", 64), "sample-pages is out of range"),
    ((1, "second", None, "dirty-ring"), "not modelled"),
])
def test_refusals(args: tuple, problem: str) -> None:
    with pytest.raises(QmpError, match=problem):
        make_testbed(64 * MiB, 100.0).source.calc_dirty_rate(*args)


@pytest.mark.parametrize("xbzrle", [False, True])
def test_a_measurement_during_a_migration_counts_every_write(xbzrle: bool) -> None:
    """A migration without XBZRLE or plug-ins does not count versions (nothing of it reads
    them), but a measurement running during it does: the estimate is the same as at rest."""
    memory, rate = 4 * GiB, 300_000.0
    tb = make_testbed(memory, rate)
    tb.advance(1.0)
    if xbzrle:
        tb.source.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])
    tb.source.migrate_set_parameters({"max-bandwidth": 1 << 20})  # a slow one: still running
    tb.source.migrate()
    tb.advance(2.0)
    assert tb.source.query_migrate()["status"] == "active"
    assert tb.source.pair.migration.guest.counts_versions is xbzrle
    tb.source.calc_dirty_rate(1)
    tb.advance(3.01)
    info = tb.source.query_dirty_rate()
    assert info["status"] == "measured"
    assert info["dirty-rate"] == pytest.approx(true_rate(memory, rate, 1.0), rel=0.10)
    assert tb.source.pair.migration.guest.counts_versions is xbzrle
