"""Version profiles (``migration.qemu_version``): the rules that changed between QEMU releases."""

from __future__ import annotations

import dataclasses

import pytest
from builders import tiny_scenario

from sim.engine.profiles import profile, resolve
from sim.recorder import event_field
from sim.run import Testbed, run_one
from sim.spec import LinkSpec, MigrationSpec
from sim.units import MiB


@pytest.mark.parametrize(("version", "default"), [("5.1", 32 * MiB), ("5.2", 128 * MiB),
                                                  ("7.2", 128 * MiB), ("10.2", 128 * MiB)])
def test_max_bandwidth_default_follows_the_version(version, default):
    spec = MigrationSpec(qemu_version=version)
    assert resolve(spec).max_bandwidth == default
    assert resolve(dataclasses.replace(spec, max_bandwidth=0.0)).max_bandwidth == 0.0
    tb = Testbed(tiny_scenario(migration=spec))
    assert tb.source.query_migrate_parameters()["max-bandwidth"] == default


def test_avail_switchover_bandwidth_exists_from_8_2():
    spec = MigrationSpec(avail_switchover_bandwidth=1e9)
    assert resolve(dataclasses.replace(spec, qemu_version="8.1")).avail_switchover_bandwidth == 0
    assert resolve(dataclasses.replace(spec, qemu_version="8.2")).avail_switchover_bandwidth == 1e9


@pytest.mark.parametrize(("version", "statuses"), [
    ("9.2", ["setup", "active", "completed"]),
    ("10.0", ["setup", "active", "device", "completed"]),
])
def test_device_state_is_passed_through_from_10_0(version, statuses):
    sc = tiny_scenario(link=LinkSpec(bandwidth=1e9), migration=MigrationSpec(qemu_version=version))
    e = run_one(sc).events
    assert list(event_field(e, "status")[(e.event == "MIGRATION") & (e.endpoint == "source")]) \
        == statuses
    assert (e.event == "switchover").sum() == 1


def test_profile_flags():
    assert not profile("9.1").periodic_sync and profile("9.2").periodic_sync
    assert profile("10.2").device_state and not profile("7.2").device_state
