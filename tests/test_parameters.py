"""The one table of migration parameters (sim/parameters.py): the QAPI schema, the endpoint's
checks and the scenario's bounds agree on every parameter; the engine runs with the scenario's
values as written, while QMP shows QEMU's integers; migrate-set-parameters is all or nothing."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from sim import parameters
from sim.choices import MULTIFD_COMPRESSION, NEGOTIATION_MODES, WRITE_PATTERNS
from sim.engine.content import PATTERNS
from sim.engine.multifd import COMPRESSORS
from sim.engine.profiles import profile, resolve
from sim.errors import QmpError, ScenarioError
from sim.negotiation import MODES
from sim.parameters import INTEGER_TYPES, PARAMETERS, Parameter
from sim.qmp import qapi
from sim.qmp.protocol import QmpSession
from sim.run import Testbed, run_one
from sim.scenario import loads_scenario, scenario_keys
from sim.spec import MigrationSpec, Scenario, VmSpec, WorkloadSpec
from sim.units import MiB
from sim.workloads import WORKLOADS

PAGE = 4096
TINY = Scenario(vm=VmSpec(memory=16 * MiB))

#: REF §7.2: what a fresh QEMU 10.2 answers to query-migrate-parameters
QEMU_DEFAULTS = {
    "announce-initial": 50, "announce-max": 550, "announce-rounds": 5, "announce-step": 100,
    "throttle-trigger-threshold": 50, "cpu-throttle-initial": 20, "cpu-throttle-increment": 10,
    "cpu-throttle-tailslow": False, "tls-creds": "", "tls-hostname": "", "tls-authz": "",
    "max-bandwidth": 134217728, "avail-switchover-bandwidth": 0, "downtime-limit": 300,
    "x-checkpoint-delay": 20000, "multifd-channels": 2, "xbzrle-cache-size": 67108864,
    "max-postcopy-bandwidth": 0, "max-cpu-throttle": 99, "multifd-compression": "none",
    "multifd-zlib-level": 1, "multifd-qatzip-level": 1, "multifd-zstd-level": 1,
    "x-vcpu-dirty-limit-period": 1000, "vcpu-dirty-limit": 1, "mode": "normal",
    "zero-page-detection": "multifd", "direct-io": False, "cpr-exec-command": [],
}


# -- the three checks, each asked the same question ------------------------------------------------


def qapi_says(name: str, value: Any) -> str | None:
    """The QMP layer's schema check: None, or QEMU's text."""
    try:
        qapi.check(qapi.MIGRATE_SET_PARAMETERS, {name: value})
    except qapi.ArgumentError as err:
        return err.desc
    return None


def endpoint_says(name: str, value: Any) -> str | None:
    """A fresh source endpoint's migrate-set-parameters: None, or its refusal."""
    source = Testbed(TINY).source
    try:
        source.migrate_set_parameters({name: value})
    except QmpError as err:
        return err.desc
    return None


def qmp_says(name: str, value: Any) -> str | None:
    """The same request over QMP (schema check, then the endpoint): None, or the error's desc."""
    session = QmpSession(Testbed(TINY).source)
    replies = [json.loads(r) for r in session.feed(json.dumps(
        {"execute": "qmp_capabilities"}).encode() + json.dumps(
        {"execute": "migrate-set-parameters", "arguments": {name: value}}).encode())]
    assert replies[0] == {"return": {}}
    reply = replies[1]
    if "error" in reply:
        assert reply["error"]["class"] == "GenericError"
        return str(reply["error"]["desc"])
    assert reply == {"return": {}}
    return None


def yaml_value(p: Parameter, qmp_value: Any) -> str:
    """A QMP value as a scenario writes the spec field's SI value."""
    if isinstance(qmp_value, str):
        return qmp_value
    si = p.to_spec(qmp_value)
    kind = parameters.spec_metadata(p.name).get("unit")
    unit = {"time": "s", "rate": "B/s", "size": "B"}.get(kind or "")
    return f"{si!r}{unit}" if unit else json.dumps(si)


def spec_says(p: Parameter, qmp_value: Any) -> str | None:
    """The scenario loader on the spec field: None, or its message."""
    assert p.field is not None
    try:
        loads_scenario(f"migration: {{{p.field}: {yaml_value(p, qmp_value)}}}\n")
    except ScenarioError as err:
        return str(err)
    return None


def expected(p: Parameter, value: int) -> bool:
    """Whether QEMU takes ``value`` for ``p`` (on a fresh QEMU, 4 KiB pages)."""
    limits = p.range
    assert limits is not None
    if p.page_power_of_two:
        return PAGE <= value <= limits[1] and value & (value - 1) == 0
    floor = QEMU_DEFAULTS[p.floor] if p.floor is not None else limits[0]
    return max(limits[0], floor) <= value <= limits[1]


def probes(p: Parameter) -> list[int]:
    """Values at and just beyond the parameter's bounds (and its rules)."""
    limits = p.range
    assert limits is not None
    lo, hi = limits
    values = {lo, hi, hi + 1, p.default}
    if lo > 0:  # below 0, QMP input wraps around (QEMU: negatives are taken modulo 2**64)
        values.add(lo - 1)
    if p.floor is not None:
        floor = QEMU_DEFAULTS[p.floor]
        values |= {floor - 1, floor}
    if p.page_power_of_two:
        values |= {PAGE // 2, PAGE, 3 * MiB, 1 << 40, 1 << 63}
    return sorted(values)


INTEGERS = [p for p in PARAMETERS.values() if p.qapi in INTEGER_TYPES]
ENUMS = [p for p in PARAMETERS.values() if p.choices]


@pytest.mark.parametrize("p", INTEGERS, ids=lambda p: p.name)
def test_integer_parameters_are_checked_alike_everywhere(p: Parameter) -> None:
    """In range, at the bounds and just beyond: the QAPI schema, the endpoint (directly and over
    QMP) and the scenario loader accept or refuse alike, and the endpoint says QEMU's text."""
    type_max = INTEGER_TYPES[p.qapi][1]
    for value in probes(p):
        ok = expected(p, value)
        by_type = qapi_says(p.name, value)
        direct, over_qmp = endpoint_says(p.name, value), qmp_says(p.name, value)
        assert (direct is None) == ok and (over_qmp is None) == ok, (value, direct, over_qmp)
        assert direct == over_qmp
        if value > type_max:
            assert by_type is not None and direct == by_type
        elif not ok:
            assert by_type is None and direct == p.error, (value, direct)
        # beyond 2**64 in SI units the loader refuses any number as too large, by itself
        if p.modelled and value <= type_max and p.to_spec(value) <= 2**64:
            assert (spec_says(p, value) is None) == ok, (value, spec_says(p, value))


@pytest.mark.parametrize("p", ENUMS, ids=lambda p: p.name)
def test_choices_are_the_same_everywhere(p: Parameter) -> None:
    member = next(m for m in qapi.MIGRATE_SET_PARAMETERS.members if m.name == p.name)
    assert isinstance(member.type, qapi.Enum) and member.type.values == p.choices
    if p.modelled:
        assert parameters.spec_metadata(p.name)["choices"] == p.choices
        key = next(k for k in scenario_keys() if k.key == f"migration.{p.field}")
        assert key.choices == p.choices
    for choice in p.choices:
        assert endpoint_says(p.name, choice) is None and qmp_says(p.name, choice) is None
        if p.modelled:
            assert spec_says(p, choice) is None
    refusal = f"Parameter '{p.name}' does not accept value 'lz4'"
    assert endpoint_says(p.name, "lz4") == refusal == qmp_says(p.name, "lz4")
    if p.modelled:
        assert "'lz4' is not one of" in (spec_says(p, "lz4") or "")


def test_the_schema_is_the_table() -> None:
    assert [m.name for m in qapi.MIGRATE_SET_PARAMETERS.members] == list(PARAMETERS)
    assert all(m.optional for m in qapi.MIGRATE_SET_PARAMETERS.members)
    for p in INTEGERS:
        assert p.lo is None or p.hi is None or p.lo <= p.hi
        lo, hi = p.range or (0, 0)
        assert INTEGER_TYPES[p.qapi][0] <= lo <= hi <= INTEGER_TYPES[p.qapi][1]


def test_the_spec_fields_are_the_table_rows_with_qemu_defaults() -> None:
    """Each modelled parameter is one MigrationSpec field whose metadata is the table's, and its
    default is QEMU's (max_bandwidth: the version's, 10.2's being QEMU's)."""
    fields = {f.name: f for f in dataclasses.fields(MigrationSpec) if "qmp" in f.metadata}
    assert {f.metadata["qmp"]: name for name, f in fields.items()} == \
        {p.name: p.field for p in PARAMETERS.values() if p.modelled}
    for name, f in fields.items():
        p = PARAMETERS[f.metadata["qmp"]]
        assert dict(f.metadata) == parameters.spec_metadata(p.name)
        if name == "max_bandwidth":
            assert f.default is None and profile("10.2").default_max_bandwidth == p.default
        else:
            assert f.default == p.to_spec(p.default), name


def test_a_fresh_endpoint_shows_qemus_defaults() -> None:
    assert Testbed(Scenario()).source.query_migrate_parameters() == QEMU_DEFAULTS
    assert parameters.to_qmp(resolve(MigrationSpec())) == QEMU_DEFAULTS


# -- no round trip ---------------------------------------------------------------------------------

EXACT = """
name: exact
vm: {memory: 256MiB}
workload: {kind: uniform, writes_per_s: 100000}
link: {bandwidth: 10Gbit/s}
migration: {downtime_limit: 0.4ms, vcpu_dirty_limit: 1.5MiB/s, max_bandwidth: 1000.7B/s}
"""


def test_the_engine_gets_the_scenarios_values_and_qmp_shows_qemus_integers() -> None:
    scenario = loads_scenario(EXACT)
    testbed = Testbed(scenario)
    spec = testbed.source.migration_spec()
    assert spec == resolve(scenario.migration)
    assert (spec.downtime_limit, spec.vcpu_dirty_limit, spec.max_bandwidth) == \
        (0.0004, 1.5 * MiB, 1000.7)
    shown = testbed.source.query_migrate_parameters()
    assert (shown["downtime-limit"], shown["vcpu-dirty-limit"], shown["max-bandwidth"]) == \
        (0, 2, 1001)
    assert all(isinstance(shown[k], int) for k in ("downtime-limit", "vcpu-dirty-limit"))
    # A client's change converts what it sets and nothing else.
    testbed.source.migrate_set_parameters({"max-bandwidth": 2000})
    spec = testbed.source.migration_spec()
    assert (spec.downtime_limit, spec.vcpu_dirty_limit, spec.max_bandwidth) == \
        (0.0004, 1.5 * MiB, 2000)


def test_a_run_uses_the_downtime_limit_as_written() -> None:
    """0.4 ms is not 0 ms (what the QMP round trip used to make of it): with a threshold QEMU's
    loop keeps syncing until the rest fits; with none it stops at once, with a long downtime."""
    scenario = loads_scenario(EXACT.replace("max_bandwidth: 1000.7B/s", "max_bandwidth: 0"))
    written = run_one(scenario).runs.iloc[0]
    rounded = run_one(dataclasses.replace(scenario, migration=dataclasses.replace(
        scenario.migration, downtime_limit=0.0))).runs.iloc[0]
    assert written.status == rounded.status == "completed"
    assert written.dirty_sync_count > rounded.dirty_sync_count
    assert written.downtime_s < rounded.downtime_s / 10


# -- migrate-set-parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("request_, error", [
    ({"downtime-limit": 100, "multifd-channels": 0},
     "Option multifd_channels expects a value between 1 and 255"),
    ({"downtime-limit": 100, "cpu-throttle-initial": 256},
     "Parameter 'cpu-throttle-initial' expects uint8_t"),
    ({"downtime-limit": 100, "tls-creds": "x", "no-such-parameter": 1},
     "Parameter 'no-such-parameter' is unexpected"),
    ({"max-bandwidth": 1, "xbzrle-cache-size": 3 * MiB},
     "Option xbzrle_cache_size expects a power of two no less than the target page size"),
    ({"cpu-throttle-initial": 50, "max-cpu-throttle": 40},
     "max_Option cpu_throttle expects an integer in the range of cpu_throttle_initial to 99"),
    # QEMU's order of checks, not the request's or the schema's
    ({"announce-initial": 200000, "cpu-throttle-initial": 0},
     "Option cpu_throttle_initial expects an integer in the range of 1 to 99"),
])
def test_set_parameters_is_all_or_nothing(request_: dict[str, Any], error: str) -> None:
    testbed = Testbed(loads_scenario(EXACT))
    source = testbed.source
    before, spec = source.query_migrate_parameters(), source.migration_spec()
    with pytest.raises(QmpError) as err:
        source.migrate_set_parameters(request_)
    assert err.value.desc == error
    assert source.query_migrate_parameters() == before
    assert source.migration_spec() is spec


def test_the_throttle_floor_follows_either_parameter() -> None:
    source = Testbed(TINY).source
    source.migrate_set_parameters({"max-cpu-throttle": 30})
    with pytest.raises(QmpError, match="cpu_throttle_initial to 99"):
        source.migrate_set_parameters({"cpu-throttle-initial": 31})
    source.migrate_set_parameters({"cpu-throttle-initial": 30, "max-cpu-throttle": 50})
    assert (source.migration_spec().cpu_throttle_initial,
            source.migration_spec().max_cpu_throttle) == (30, 50)
    with pytest.raises(ScenarioError, match="must be at least migration.cpu_throttle_initial"):
        loads_scenario("migration: {cpu_throttle_initial: 30, max_cpu_throttle: 20}\n")


def test_what_qapi_accepted_the_endpoint_accepts() -> None:
    """The two drifts of the old hand-kept lists: cpr-exec and block-bitmap-mapping passed the
    QAPI check and were refused by the endpoint. Now both are taken and shown, and the mapping
    appears once set, as in QEMU."""
    source = Testbed(TINY).source
    assert "block-bitmap-mapping" not in source.query_migrate_parameters()
    mapping = [{"node-name": "drive0", "alias": "d0", "bitmaps": []}]
    source.migrate_set_parameters({"mode": "cpr-exec", "block-bitmap-mapping": mapping,
                                   "cpr-exec-command": ["qemu", "-S"], "tls-creds": None})
    shown = source.query_migrate_parameters()
    assert shown["mode"] == "cpr-exec" and shown["block-bitmap-mapping"] == mapping
    assert shown["cpr-exec-command"] == ["qemu", "-S"] and shown["tls-creds"] == ""
    assert list(shown) == list(PARAMETERS)
    assert source.migration_spec() == Testbed(TINY).source.migration_spec()


def test_a_running_migration_gets_the_changed_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    testbed = Testbed(loads_scenario(EXACT.replace("max_bandwidth: 1000.7B/s",
                                                   "max_bandwidth: 10MiB/s")))
    seen: list[MigrationSpec] = []
    migration = testbed.pairs[0].migration
    set_parameters = migration.set_parameters
    monkeypatch.setattr(migration, "set_parameters",
                        lambda spec: (seen.append(spec), set_parameters(spec)))
    testbed.source.migrate()
    testbed.advance(0.2)
    testbed.source.migrate_set_parameters({"downtime-limit": 100})
    assert seen == [testbed.source.migration_spec()]
    assert seen[0].downtime_limit == pytest.approx(0.1) and seen[0].max_bandwidth == 10 * MiB


# -- choice lists, defined once --------------------------------------------------------------------


def test_choice_lists_have_one_source() -> None:
    assert tuple(MODES) == tuple(NEGOTIATION_MODES)
    assert {name: doc for name, (_, doc) in MODES.items()} == NEGOTIATION_MODES
    keys = {k.key: k for k in scenario_keys()}
    assert keys["negotiation"].choices == tuple(NEGOTIATION_MODES)
    assert keys["migration.multifd_compression"].choices == MULTIFD_COMPRESSION
    assert set(COMPRESSORS) == set(MULTIFD_COMPRESSION) - {"none"}
    assert keys["workload.write_pattern"].choices == WRITE_PATTERNS == tuple(PATTERNS)
    assert keys["workload.kind"].choices == tuple(WORKLOADS)


def test_every_write_pattern_and_compressor_runs() -> None:
    """The registries' entries are wired: each pattern and compressor gives a multifd record."""
    from sim.engine.multifd import wire_and_cpu
    from sim.spec import SourceCpuSpec

    for pattern in WRITE_PATTERNS:
        for method in MULTIFD_COMPRESSION:
            spec = MigrationSpec(multifd_compression=method)
            normal, zero, costs = wire_and_cpu(spec, SourceCpuSpec(),
                                               WorkloadSpec(write_pattern=pattern), PAGE)
            assert zero < normal and costs.shape == (4,)
