"""A testbed that fails like QEMU (migration/ram.c, migration/migration.c): a page cache that
cannot be had fails the migration or the parameter change, leaving everything as it was; a
cancel during stop-and-copy cancels and the source's guest runs again."""

from __future__ import annotations

import dataclasses

import pytest

from sim.encoders.cache import XbzrleCache
from sim.errors import QmpError
from sim.run import Testbed
from sim.spec import LinkSpec, MigrationSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import GiB, MiB

BASE = Scenario(name="qmp-failures", seed=3, vm=VmSpec(memory=64 * MiB, device_state=256 * MiB),
                workload=WorkloadSpec(kind="hotspot", writes_per_s=5000, hot_set=4 * MiB),
                link=LinkSpec(bandwidth=125e6), migration=MigrationSpec())


def xbzrle_testbed(**migration: object) -> Testbed:
    tb = Testbed(dataclasses.replace(BASE, migration=MigrationSpec(**migration)))
    for side in (tb.source, tb.destination):
        side.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])
    return tb


def test_a_cache_far_larger_than_the_guest_runs_in_guest_sized_memory():
    """2^62 bytes is accepted by QEMU's checks (a power of two of at least a page); migsim needs
    only the guest's pages' worth of slots, and the run matches one with a guest-sized cache."""
    runs = []
    for size in (2**62, 64 * MiB):
        tb = xbzrle_testbed()
        tb.source.migrate_set_parameters({"xbzrle-cache-size": size})
        tb.source.migrate()
        tb.run()
        assert tb.pairs[0].migration.pipeline.cache.slots == 64 * MiB // 4096
        runs.append(tb.result().runs.iloc[0])
        assert tb.source.query_migrate()["xbzrle-cache"]["cache-size"] == size
    big, fit = runs
    assert big.status == fit.status == "completed"
    for column in ("total_time_s", "transferred_bytes", "xbzrle_pages", "xbzrle_cache_miss"):
        assert big[column] == fit[column], column


def test_a_cache_that_cannot_be_allocated_at_setup_fails_the_migration(monkeypatch):
    tb = xbzrle_testbed()
    tb.advance(0.01)
    real = XbzrleCache._alloc

    def refuse(self: XbzrleCache, cache_size: int) -> None:
        if cache_size > self.page_size:
            raise MemoryError
        real(self, cache_size)

    monkeypatch.setattr(XbzrleCache, "_alloc", refuse)
    tb.source.migrate()
    tb.run()
    info = tb.source.query_migrate()
    assert info["status"] == "failed"
    assert "Failed to allocate page cache" in info["error-desc"]
    assert tb.source.running


def test_a_resize_that_cannot_be_allocated_changes_nothing(monkeypatch):
    tb = xbzrle_testbed(xbzrle_cache_size=16 * MiB)
    tb.source.migrate()
    tb.advance(0.3)
    assert tb.source.query_migrate()["status"] == "active"
    before = tb.source.query_migrate_parameters()
    cache = tb.pairs[0].migration.pipeline.cache
    monkeypatch.setattr(XbzrleCache, "_alloc", lambda self, size: (_ for _ in ()).throw(
        MemoryError()))
    with pytest.raises(QmpError, match="Failed to allocate page cache"):
        tb.source.migrate_set_parameters({"xbzrle-cache-size": 1 * GiB,
                                          "downtime-limit": 900})
    assert tb.source.query_migrate_parameters() == before  # all or nothing
    assert tb.pairs[0].migration.pipeline.cache is cache
    monkeypatch.undo()
    tb.run()
    assert tb.source.query_migrate()["status"] == "completed"


def test_a_cancel_during_stop_and_copy_cancels_and_the_source_runs_again():
    tb = Testbed(BASE)  # 256 MiB of device state at 125 MB/s: about 2 s of stop-and-copy
    tb.source.migrate()
    t = 0.0
    while tb.source.query_migrate().get("status") != "device":
        t += 0.05
        assert t < 60, "never reached stop-and-copy"
        tb.advance(t)
    assert not tb.source.running
    tb.source.migrate_cancel()
    assert tb.source.query_migrate()["status"] == "cancelling"
    tb.run()
    assert tb.source.query_migrate()["status"] == "cancelled"
    assert tb.source.running
    assert tb.destination.query_migrate()["status"] == "failed"
    run = tb.result().runs.iloc[0]
    assert run.failure_reason == "migrate_cancel"
    # It takes effect when the pages on the wire have gone (the model does not cut a chunk
    # short), before the 256 MiB of device state (about 2 s) would have been sent.
    whole = Testbed(BASE)
    whole.source.migrate()
    whole.run()
    assert run.total_time_s < whole.result().runs.iloc[0].total_time_s - 1.5
