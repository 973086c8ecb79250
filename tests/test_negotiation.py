"""Negotiation modes (DESIGN §3, REF §8): the capability set in force and the outcome, per mode.

The expectations come from REF §6.1 and §8.2, not from running the model: an XBZRLE record sent to
a destination whose version predates XBZRLE (1.1) fails the migration when it arrives; a 7.2
destination decodes XBZRLE whatever its own flag; ``postcopy-ram`` only on the source fails at
ADVISE; management and in-band negotiation drop what the destination cannot take.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from sim.capabilities import CAPABILITIES, supported_by
from sim.errors import QmpError
from sim.recorder import event_field
from sim.run import Testbed, run_one
from sim.spec import (
    EndpointSpec,
    EndpointsSpec,
    LinkSpec,
    MigrationSpec,
    Scenario,
    VmSpec,
    WorkloadSpec,
)
from sim.units import MiB

UNDECODABLE = ("load of migration failed: Invalid argument: "
               "Unknown combination of migration flags: 0x40")
ADVISE = "RAM postcopy is disabled but have 16 byte advise"

# A hot set that XBZRLE encodes from the second pass on; converges with or without XBZRLE.
BASE = Scenario(
    name="neg", seed=3, vm=VmSpec(memory=64 * MiB),
    workload=WorkloadSpec(kind="hotspot", writes_per_s=20000, hot_set=8 * MiB),
    link=LinkSpec(bandwidth=200e6 / 8, latency=1e-3),
    migration=MigrationSpec(capabilities=("xbzrle",), xbzrle_cache_size=16 * MiB,
                            downtime_limit=0.5, max_sim_time=30.0),
)


def scenario(mode: str, caps: tuple[str, ...] = ("xbzrle",), **destination) -> Scenario:
    return dataclasses.replace(
        BASE, negotiation=mode,
        migration=dataclasses.replace(BASE.migration, capabilities=caps),
        endpoints=EndpointsSpec(destination=EndpointSpec(**destination)))


# (case, mode, capabilities asked on the source, destination, capabilities in force, status,
#  failure reason)
TABLE = [
    ("old dest", "none", ("xbzrle",), {"version": "1.1"}, "xbzrle", "failed", UNDECODABLE),
    ("old dest", "qemu", ("xbzrle",), {"version": "1.1"}, "xbzrle", "failed", UNDECODABLE),
    ("old dest", "management", ("xbzrle",), {"version": "1.1"}, "", "completed", ""),
    # 1.1 has no return path either: in-band falls back to the legacy protocol.
    ("old dest", "inband", ("xbzrle",), {"version": "1.1"}, "", "completed", ""),
    # 7.2 decodes XBZRLE with its own flag off (REF §8.2).
    ("7.2 dest", "none", ("xbzrle",), {"version": "7.2"}, "xbzrle", "completed", ""),
    ("7.2 dest", "qemu", ("xbzrle",), {"version": "7.2"}, "xbzrle", "completed", ""),
    ("7.2 dest", "management", ("xbzrle",), {"version": "7.2"}, "xbzrle", "completed", ""),
    ("7.2 dest", "inband", ("xbzrle",), {"version": "7.2"}, "return-path,xbzrle",
     "completed", ""),
    ("no xbzrle, return path", "inband", ("xbzrle",), {"supports": ("return-path",)},
     "return-path", "completed", ""),
    ("no xbzrle, return path", "qemu", ("xbzrle",), {"supports": ("return-path",)},
     "xbzrle", "failed", UNDECODABLE),
    # postcopy-ram is needed on both sides (REF §6.1).
    ("postcopy", "none", ("postcopy-ram",), {}, "postcopy-ram", "failed", ADVISE),
    ("postcopy", "qemu", ("postcopy-ram",), {}, "postcopy-ram", "completed", ""),
    ("postcopy", "management", ("postcopy-ram",), {}, "postcopy-ram", "completed", ""),
    ("postcopy, 2.5 dest", "management", ("postcopy-ram",), {"version": "2.5"}, "",
     "completed", ""),
    ("postcopy", "inband", ("postcopy-ram",), {}, "postcopy-ram,return-path", "completed", ""),
    # Side-effect capabilities: only when asked. The destination has them on; management copies
    # xbzrle (no side effect) to the source but not auto-converge.
    ("dest flags", "management", (), {"enabled": ("xbzrle", "auto-converge")}, "xbzrle",
     "completed", ""),
    ("dest flags", "qemu", (), {"enabled": ("xbzrle", "auto-converge")}, "", "completed", ""),
    ("asked", "management", ("auto-converge",), {"version": "1.1"}, "auto-converge",
     "completed", ""),
    # migrate-set-capabilities refuses the pair (REF §6.1): the migration never starts.
    ("conflict", "none", ("xbzrle", "multifd"), {}, "", "failed",
     "Multifd is not compatible with xbzrle"),
]


@pytest.mark.parametrize(("case", "mode", "caps", "dest", "in_force", "status", "reason"), TABLE,
                         ids=[f"{row[0]}-{row[1]}" for row in TABLE])
def test_mode_table(case, mode, caps, dest, in_force, status, reason):
    run = run_one(scenario(mode, caps, **dest)).runs.iloc[0]
    assert run.capabilities == in_force
    assert run.status == status
    assert run.failure_reason == reason
    assert run.pages_lost == 0


def test_undecodable_record_fails_there_and_the_source_keeps_running():
    sc = scenario("none", version="1.1")
    tb = Testbed(sc)
    from sim.negotiation import operate

    tb.env.process(operate(tb.pairs[0], "none"))
    tb.run()
    mig = tb.pairs[0].migration
    assert mig.state.status == "failed" and mig.guest.running
    # Exactly one XBZRLE record went out: the one the destination choked on.
    res = tb.result()
    run = res.runs.iloc[0]
    assert run.xbzrle_pages >= 1 and run.dirty_sync_count >= 2
    events = res.events
    dest_fail = events[(events.endpoint == "destination") & (events.event == "MIGRATION")
                       & (event_field(events, "status") == "failed")].t_s.iloc[0]
    src_fail = events[(events.endpoint == "source") & (events.event == "MIGRATION")
                      & (event_field(events, "status") == "failed")].t_s.iloc[0]
    # The source learns one latency after the destination failed.
    assert src_fail - dest_fail == pytest.approx(sc.link.latency)
    assert (events.event == "bytes-wasted").sum() == 1
    wasted = events[events.event == "bytes-wasted"]
    assert event_field(wasted, "bytes").iloc[0] == run.transferred_bytes
    info = tb.source.query_migrate()
    assert info["status"] == "failed"
    assert info["error-desc"] == "Unable to write to socket: Connection reset by peer"
    assert tb.destination.query_migrate() == {"status": "failed", "error-desc": UNDECODABLE}
    assert tb.source.running


def test_exact_mode_failure_loses_nothing():
    sc = dataclasses.replace(scenario("none", version="1.1"),
                             vm=VmSpec(memory=16 * MiB, content="exact"),
                             workload=WorkloadSpec(kind="hotspot", writes_per_s=20000,
                                                   hot_set=4 * MiB),
                             link=LinkSpec(bandwidth=50e6 / 8, latency=1e-3))
    run = run_one(sc).runs.iloc[0]
    assert run.status == "failed" and run.pages_lost == 0


def test_switchover_ack_on_the_source_only_never_completes():
    caps = ("return-path", "switchover-ack")
    stuck = run_one(dataclasses.replace(scenario("none", caps), migration=dataclasses.replace(
        BASE.migration, capabilities=caps, max_sim_time=5.0))).runs.iloc[0]
    assert (stuck.status, stuck.failure_reason) == ("cancelled", "not converged")
    done = run_one(scenario("qemu", caps)).runs.iloc[0]
    assert done.status == "completed"


def test_inband_costs_one_round_trip_in_setup():
    plain = run_one(scenario("management", version="7.2")).runs.iloc[0]
    inband = run_one(scenario("inband", version="7.2")).runs.iloc[0]
    assert inband.setup_time_s - plain.setup_time_s == pytest.approx(2 * BASE.link.latency)


def test_management_conversation_is_in_the_events():
    events = run_one(scenario("management", version="1.1")).events
    talk = events[events.event.isin(["query-migrate-capabilities", "migrate-set-capabilities",
                                     "dropped"])]
    assert list(zip(talk.endpoint, talk.event, strict=True)) == [
        ("source", "query-migrate-capabilities"),
        ("destination", "query-migrate-capabilities"),
        ("destination", "migrate-set-capabilities"),
        ("destination", "query-migrate-capabilities"),
        ("management", "dropped"),
        ("source", "migrate-set-capabilities"),
    ]
    assert talk.detail.iloc[4] == '{"message":"xbzrle: not supported by the destination"}'


# --- the registry and the endpoints' QMP-shaped commands ---------------------------------------


def test_versions_know_what_qapi_says():
    assert supported_by("1.1") == ()
    assert supported_by("1.2") == ("xbzrle",)
    assert "return-path" not in supported_by("2.9")
    assert "return-path" in supported_by("2.10")
    assert "mapped-ram" in supported_by("9.0") and "mapped-ram" not in supported_by("8.2")
    assert supported_by("7.2", ["events", "xbzrle"]) == ("xbzrle", "events")


def make_testbed(**destination) -> Testbed:
    return Testbed(dataclasses.replace(
        BASE, endpoints=EndpointsSpec(destination=EndpointSpec(**destination))))


def test_query_capabilities_lists_what_the_version_knows():
    tb = make_testbed(version="2.4")
    names = [c["capability"] for c in tb.destination.query_migrate_capabilities()]
    assert names == ["xbzrle", "rdma-pin-all", "auto-converge", "events"]
    # No version, no list: everything registered (QEMU's 21, plus plug-ins other tests loaded).
    listed = [c["capability"] for c in tb.source.query_migrate_capabilities()]
    assert [c for c in listed if CAPABILITIES[c].since is not None] == list(CAPABILITIES)[:21]


def test_set_capabilities_is_all_or_nothing():
    tb = make_testbed()
    src = tb.source
    src.migrate_set_capabilities([{"capability": "events", "state": True}])
    with pytest.raises(QmpError, match="Multifd is not compatible with xbzrle"):
        src.migrate_set_capabilities([{"capability": "xbzrle", "state": True},
                                      {"capability": "multifd", "state": True}])
    assert src.enabled == {"events"}
    with pytest.raises(QmpError, match="requires capability 'return-path'"):
        src.migrate_set_capabilities([{"capability": "switchover-ack", "state": True}])
    old = make_testbed(version="1.1").destination
    with pytest.raises(QmpError, match="Parameter 'capability' does not accept value 'xbzrle'"):
        old.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])


def test_no_capability_change_while_migrating_but_parameters_change():
    tb = make_testbed()
    tb.source.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])
    tb.source.migrate()
    tb.advance(0.5)
    assert tb.source.query_migrate()["status"] == "active"
    with pytest.raises(QmpError, match="There's a migration process in progress"):
        tb.source.migrate_set_capabilities([{"capability": "events", "state": True}])
    with pytest.raises(QmpError, match="There's a migration process in progress"):
        tb.source.migrate()
    tb.source.migrate_set_parameters({"max-bandwidth": 1 << 20, "downtime-limit": 100})
    assert tb.pairs[0].migration.spec.max_bandwidth == 1 << 20
    assert tb.pairs[0].migration.spec.downtime_limit == pytest.approx(0.1)
    with pytest.raises(QmpError, match="power of two"):
        tb.source.migrate_set_parameters({"xbzrle-cache-size": 3 << 20})
    with pytest.raises(QmpError, match=re.escape("0 to (2000 * 1000) ms")):
        tb.source.migrate_set_parameters({"downtime-limit": 3000000})
    assert tb.source.query_migrate_parameters()["downtime-limit"] == 100


def test_parameters_start_from_the_scenario_and_qemu_defaults():
    params = make_testbed().source.query_migrate_parameters()
    assert params["downtime-limit"] == 500
    assert params["xbzrle-cache-size"] == 16 * MiB
    assert params["max-bandwidth"] == 134217728
    assert params["cpu-throttle-initial"] == 20 and params["multifd-channels"] == 2


def test_query_migrate_shape_and_completion():
    tb = make_testbed()
    assert tb.source.query_migrate() == {}
    tb.source.migrate_set_capabilities([{"capability": "xbzrle", "state": True}])
    tb.destination.migrate_incoming("tcp:0:4444")
    with pytest.raises(QmpError, match="already been started"):
        tb.destination.migrate_incoming("tcp:0:4444")
    tb.source.migrate("tcp:127.0.0.1:4444")
    tb.advance(1.0)
    info = tb.source.query_migrate()
    assert info["status"] == "active" and "expected-downtime" in info
    assert set(info["ram"]) >= {"transferred", "remaining", "total", "duplicate", "normal",
                                "normal-bytes", "dirty-pages-rate", "mbps", "dirty-sync-count",
                                "page-size", "precopy-bytes", "downtime-bytes"}
    assert info["ram"]["total"] == 64 * MiB
    tb.run()
    done = tb.source.query_migrate()
    assert done["status"] == "completed"
    assert done["downtime"] > 0 and "expected-downtime" not in done
    assert done["ram"]["remaining"] == 0
    assert done["xbzrle-cache"]["cache-size"] == 16 * MiB
    assert tb.destination.query_migrate()["status"] == "completed"
    run = tb.result().runs.iloc[0]
    assert done["downtime"] == round(run.downtime_s * 1000)


def test_migrate_cancel_leaves_the_source_running():
    tb = make_testbed()
    tb.source.migrate()
    tb.advance(0.3)
    tb.source.migrate_cancel()
    assert tb.source.query_migrate()["status"] == "cancelling"
    tb.run()
    assert tb.source.query_migrate()["status"] == "cancelled"
    assert tb.source.running
    assert tb.result().runs.iloc[0].failure_reason == "migrate_cancel"


def test_events_reach_subscribers_only_with_the_events_capability():
    tb = make_testbed()
    seen: list[tuple[str, dict]] = []
    tb.source.subscribe(lambda name, data, t: seen.append((name, data)))
    tb.source.migrate()
    tb.advance(0.2)
    assert seen == []
    tb2 = make_testbed()
    tb2.source.subscribe(lambda name, data, t: seen.append((name, data)))
    tb2.source.migrate_set_capabilities([{"capability": "events", "state": True}])
    tb2.source.migrate()
    tb2.run()
    assert seen[0] == ("MIGRATION", {"status": "setup"})
    assert ("MIGRATION_PASS", {"pass": 1}) in seen
    assert seen[-1] == ("MIGRATION", {"status": "completed"})
