"""Fleet scenarios (``vms:``): merging over the top level, names, errors, overrides, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.errors import ScenarioError
from sim.scenario import SCENARIO_KEYS, expand, from_dict, load_scenario, loads_scenario, to_dict
from sim.spec import EndpointSpec, RegionSpec, Scenario
from sim.units import MiB

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

# the line numbers in the tests below count on this text
FLEET = """\
name: fleet
vm: {memory: 256MiB}
workload:
  kind: hotspot
  writes_per_s: 4000
  hot_set: 16MiB
migration:
  downtime_limit: 300ms
  capabilities: [xbzrle]
endpoints:
  destination: {version: "7.2"}
vms:
  - migration: {start: 5s}
  - name: web
    workload: {writes_per_s: 9000}
    migration: {capabilities: []}
  - workload: {kind: uniform}
    endpoints:
      destination: {supports: [events]}
"""


def error_of(text: str, **kwargs: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        loads_scenario(text, file="mixed.yaml", **kwargs)
    return str(info.value)


def round_trips(s: Scenario) -> bool:
    text = yaml.safe_dump(to_dict(s), sort_keys=False)
    return loads_scenario(text) == s and from_dict(to_dict(s)) == s


# ---------------------------------------------------------------- merging


def test_items_inherit_and_override_the_top_level() -> None:
    """An item's keys win; the rest of each section comes from the top level."""
    s = loads_scenario(FLEET)
    first, web, third = s.vms
    assert first.migration.start == 5.0
    assert first.migration.downtime_limit == 0.3
    assert first.migration.capabilities == ("xbzrle",)
    assert first.vm.memory == 256 * MiB
    assert first.workload == s.workload
    assert first.endpoints.destination == EndpointSpec(version="7.2")
    assert (web.workload.kind, web.workload.writes_per_s) == ("hotspot", 9000.0)
    assert web.workload.hot_set == 16 * MiB
    # the top level stays what the file says
    assert s.migration.start == 0.0
    assert s.workload.writes_per_s == 4000.0


def test_lists_replace() -> None:
    """A list in an item replaces the top-level list rather than extending it."""
    web = loads_scenario(FLEET).vms[1]
    assert web.migration.capabilities == ()
    assert web.migration.downtime_limit == 0.3


def test_nested_sections_merge() -> None:
    """endpoints.destination merges key by key: supports from the item, version inherited."""
    third = loads_scenario(FLEET).vms[2]
    assert third.endpoints.destination == EndpointSpec(version="7.2", supports=("events",))


def test_another_workload_kind_inherits_nothing() -> None:
    """A workload of another kind starts from the defaults, not the top-level hotspot keys."""
    third = loads_scenario(FLEET).vms[2]
    assert third.workload.kind == "uniform"
    assert third.workload.writes_per_s == 0.0
    assert third.workload.hot_set is None


def test_same_kind_given_again_still_merges() -> None:
    s = loads_scenario(FLEET + "  - workload: {kind: hotspot, hot_set: 8MiB}\n")
    assert (s.vms[3].workload.writes_per_s, s.vms[3].workload.hot_set) == (4000.0, 8 * MiB)


def test_empty_item_section_inherits_everything() -> None:
    s = loads_scenario("migration: {start: 2s}\nvms:\n  - migration:\n")
    assert s.vms[0].migration.start == 2.0


def test_null_below_a_section_unsets() -> None:
    """A null for an optional key in an item replaces the top-level value."""
    s = loads_scenario("workload: {region: {offset: 0, size: 4KiB}}\n"
                       "vms:\n  - workload: {region: null}\n  - {}\n")
    assert s.vms[0].workload.region is None
    assert s.vms[1].workload.region == RegionSpec(0, 4096)


# ---------------------------------------------------------------- names


def test_names_default_to_their_index() -> None:
    assert [g.name for g in loads_scenario(FLEET).vms] == ["vm0", "web", "vm2"]


def test_duplicate_names_are_refused() -> None:
    assert error_of(FLEET + "  - name: web\n") == (
        "mixed.yaml:20: vms[3].name: vms[1] has that name already; names must be unique "
        "(got web)")
    # a default name counts too; the error points at the item
    assert error_of("vms:\n  - {}\n  - name: vm0\n") == (
        "mixed.yaml:3: vms[1].name: vms[0] has that name already; names must be unique "
        "(got vm0)")


# ---------------------------------------------------------------- errors


def test_bad_item_value_names_its_line_and_key() -> None:
    text = FLEET.replace("workload: {kind: uniform}", "workload: {kind: uniform}\n"
                         "    migration:\n      downtime_limit: -1s")
    assert error_of(text) == (
        "mixed.yaml:19: vms[2].migration.downtime_limit: must be between 0 and 2000s (got -1s)")


def test_inherited_value_points_at_the_top_level_line() -> None:
    """A top-level value that does not fit one guest names that guest and the top-level line."""
    text = FLEET + "  - vm: {memory: 8MiB}\n"
    assert error_of(text) == (
        "mixed.yaml:6: vms[3].workload.hot_set: must be at most vm.memory, 8MiB (got 16MiB)")


def test_unknown_item_key_suggests() -> None:
    assert error_of(FLEET + "  - migrations: {start: 1s}\n") == (
        "mixed.yaml:20: vms[3].migrations: unknown key; did you mean 'migration'?")
    assert error_of("vms:\n  - link: {}\n").startswith(
        "mixed.yaml:2: vms[0].link: unknown key; valid: name, vm, workload, migration, endpoints")


def test_empty_list_is_refused() -> None:
    assert error_of("vms: []\n") == "mixed.yaml:1: vms: needs at least one guest (got [])"


def test_items_must_be_mappings() -> None:
    assert error_of("vms:\n  - 3\n") == (
        "mixed.yaml:2: vms[0]: expected a mapping of GuestSpec keys (got 3)")


# ---------------------------------------------------------------- overrides


def test_override_one_item() -> None:
    s = loads_scenario(FLEET, overrides={"vms.1.migration.start": "3s"})
    assert [g.migration.start for g in s.vms] == [5.0, 3.0, 0.0]


def test_override_item_out_of_range() -> None:
    assert error_of(FLEET, overrides={"vms.3.migration.start": "3s"}) == (
        "<--set>: vms.3.migration.start: 'vms' has no item 3; it has 3, numbered from 0")


def test_override_item_value_error_names_the_item() -> None:
    assert error_of(FLEET, overrides={"vms.0.migration.start": "-1s"}) == (
        "<--set>: vms[0].migration.start: must be >= 0 (got -1s)")


def test_top_level_override_reaches_inheriting_guests() -> None:
    s = loads_scenario(FLEET, overrides={"migration.downtime_limit": "1s",
                                         "migration.start": "2s"})
    assert [g.migration.downtime_limit for g in s.vms] == [1.0, 1.0, 1.0]
    assert [g.migration.start for g in s.vms] == [5.0, 2.0, 2.0]


# ---------------------------------------------------------------- sweeps


def test_sweep_over_negotiation() -> None:
    s = loads_scenario(FLEET + "sweep: {grid: {negotiation: [none, qemu, management, inband]}}\n")
    members = expand(s)
    assert [m.negotiation for m in members] == ["none", "qemu", "management", "inband"]
    assert all(m.vms == s.vms for m in members)


def test_swept_top_level_key_reaches_inheriting_guests() -> None:
    text = FLEET + "sweep: {grid: {migration.start: [1s, 2s], workload.writes_per_s: [10, 20]}}\n"
    last = expand(loads_scenario(text))[-1]
    assert [g.migration.start for g in last.vms] == [5.0, 2.0, 2.0]  # vm0 keeps its own
    # web sets its own rate; vm2 runs another kind of workload
    assert [g.workload.writes_per_s for g in last.vms] == [20.0, 9000.0, 0.0]


def test_sweep_member_errors_name_the_guest() -> None:
    text = FLEET + "  - workload: {hot_set: 128MiB}\nsweep: {grid: {vm.memory: [256MiB, 64MiB]}}\n"
    assert error_of(text) == (
        "mixed.yaml:20: vms[3].workload.hot_set: in sweep member 'fleet-memory=64MiB': must be "
        "at most vm.memory, 64MiB (got 128MiB)")


def test_vms_cannot_be_swept() -> None:
    assert "'vms' is not a scenario key that can vary" in error_of(
        FLEET + "sweep: {grid: {vms: [[]]}}\n")


# ---------------------------------------------------------------- round trips and keys


def test_fleet_round_trips() -> None:
    s = loads_scenario(FLEET)
    assert round_trips(s)
    for member in expand(loads_scenario(FLEET + "sweep: {grid: {migration.start: [1s]}}\n")):
        assert round_trips(member)


def test_to_dict_writes_items_as_their_differences() -> None:
    d = to_dict(loads_scenario(FLEET))
    assert d["vms"][0] == {"name": "vm0", "migration": {"start": "5s"}}
    assert to_dict(loads_scenario("{}")).get("vms") is None


def test_round_trip_when_a_guest_unsets_what_the_top_level_sets() -> None:
    s = loads_scenario("workload: {hot_set: 16MiB}\nmigration: {max_time: 60s}\n"
                       "endpoints: {source: {supports: [xbzrle]}}\n"
                       "vms:\n  - workload: {hot_set: null}\n"
                       "    migration: {max_time: null}\n"
                       "    endpoints: {source: {supports: null}}\n")
    guest = s.vms[0]
    assert (guest.workload.hot_set, guest.migration.max_time) == (None, None)
    assert guest.endpoints.source.supports is None
    assert round_trips(s)


def test_scenario_keys_know_vms() -> None:
    for key in ("vms[].name", "vms[].migration.start", "vms[].endpoints.destination.version"):
        assert key in SCENARIO_KEYS


# ---------------------------------------------------------------- the example


def test_mixed_cluster_example_loads() -> None:
    s = load_scenario(SCENARIOS / "mixed-cluster.yaml")
    assert len(s.vms) == 4
    assert [g.endpoints.destination.version for g in s.vms] == ["1.1", "7.2", "10.2", None]
    assert s.vms[3].endpoints.destination.supports == ("events", "return-path")
    assert all(g.vm.memory == 256 * MiB for g in s.vms)
    assert all(g.migration.capabilities == ("xbzrle",) for g in s.vms)
    assert [g.migration.start for g in s.vms] == [0.0, 0.5, 1.0, 1.5]
    assert [m.negotiation for m in expand(s)] == ["none", "qemu", "management", "inband"]
    assert round_trips(s)
