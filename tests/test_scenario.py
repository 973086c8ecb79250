"""Scenario files: loading, every error with its line, overrides, sweeps, and the way back."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import SCENARIO_KEY_PARTS, yaml_trees

from sim import budget, capabilities
from sim.capabilities import (
    CAPABILITIES,
    Capability,
    check_set,
    incompatible,
    register,
    supported_by,
)
from sim.errors import ScenarioError
from sim.scenario import (
    MAX_NODES,
    SCENARIO_KEYS,
    expand,
    from_dict,
    load_scenario,
    loads_scenario,
    scenario_keys,
    to_dict,
)
from sim.spec import (
    BandwidthChange,
    EndpointSpec,
    EndpointsSpec,
    FaultSpec,
    LinkSpec,
    MigrationSpec,
    PhaseSpec,
    RegionSpec,
    Scenario,
    SweepSpec,
    VmSpec,
    WireSpec,
    WorkloadSpec,
)
from sim.units import GiB, KiB, MiB

# The example of DESIGN §4, line for line (the line numbers below count on it).
EXAMPLE = """\
name: hotspot-xbzrle          # optional; defaults to the file's stem
seed: 1
vm:
  memory: 4GiB
  page_size: 4KiB
  content: modelled           # modelled | exact
  zero_fraction: 0.25         # share of pages that are zero at start
  device_state: 1MiB          # non-RAM state sent during downtime
workload:
  kind: hotspot               # idle | uniform | hotspot | zipf | sequential | phased | trace
  writes_per_s: 50000         # page writes per second (before throttling)
  hot_set: 256MiB             # hotspot: size of the hot region
  hot_probability: 0.9
  write_size: 64B             # bytes changed per write
  write_pattern: clustered    # clustered | scattered | counter | full
  region: {offset: 1MiB, size: 16MiB}   # optional: confine all writes to this address range
  stride: 8KiB                # sequential: distance between consecutive writes (default: a page)
  word_size: 8B               # counter pattern: width of each incremented word (e.g. 4B)
link:
  bandwidth: 10Gbit/s
  latency: 0.1ms
migration:
  start: 2s
  downtime_limit: 300ms       # QEMU parameter names, snake_case, with units
  max_bandwidth: 128MiB/s     # 0 = unlimited
  xbzrle_cache_size: 64MiB
  capabilities: [xbzrle]      # what the operator enables on the source
  max_time: 600s              # management-side cancel (like guestperf); optional
  qemu_version: "10.2"        # behaviour profile where QEMU versions differ (e.g. "7.2")
  switchover: qemu            # qemu (drain-driven syncs, REF §1.5) | rounds
wire:                         # optional; defaults are QEMU's record sizes (REF §2.7)
  page_header: 8B             # raw page on the wire = page_header + page_size
  zero_page: 9B               # whole zero-page record
  xbzrle_header: 11B          # XBZRLE record = xbzrle_header + encoded length
  chunk_overhead: 18B         # per RAM section chunk
endpoints:
  source: {supports: [xbzrle, auto-converge, return-path]}
  destination: {supports: [], enabled: []}
negotiation: management       # none | qemu | management | inband
sweep:                        # optional: a run per combination
  grid:
    migration.xbzrle_cache_size: [16MiB, 64MiB, 256MiB]
    workload.writes_per_s: [1000, 10000, 100000]
  repeats: 3                  # seeds seed, seed+1, ...
"""


def error_of(text: str, file: str = "s.yaml", **kwargs: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        loads_scenario(text, file=file, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- loading


def test_design_example_loads_in_si_units() -> None:
    """Every value of the DESIGN §4 example lands in its field, converted to SI units."""
    s = loads_scenario(EXAMPLE)
    assert s.name == "hotspot-xbzrle"
    assert s.seed == 1
    assert s.vm == VmSpec(memory=4 * GiB, page_size=4 * KiB, content="modelled",
                          zero_fraction=0.25, device_state=1 * MiB)
    w = s.workload
    assert (w.kind, w.writes_per_s, w.hot_set, w.hot_probability) == ("hotspot", 50000.0,
                                                                       256 * MiB, 0.9)
    assert (w.write_size, w.write_pattern, w.stride, w.word_size) == (64, "clustered", 8192, 8)
    assert w.region == RegionSpec(offset=1 * MiB, size=16 * MiB)
    assert s.link == LinkSpec(bandwidth=1.25e9, latency=1e-4)
    m = s.migration
    assert (m.start, m.downtime_limit, m.max_bandwidth) == (2.0, 0.3, 128 * MiB)
    assert (m.xbzrle_cache_size, m.capabilities, m.max_time) == (64 * MiB, ("xbzrle",), 600.0)
    assert (m.qemu_version, m.switchover) == ("10.2", "qemu")
    assert s.wire == WireSpec()
    assert s.endpoints.source == EndpointSpec(supports=("xbzrle", "auto-converge", "return-path"))
    assert s.endpoints.destination == EndpointSpec(supports=(), enabled=())
    assert s.negotiation == "management"
    assert s.sweep == SweepSpec(
        grid=(("migration.xbzrle_cache_size", (16 * MiB, 64 * MiB, 256 * MiB)),
              ("workload.writes_per_s", (1000.0, 10000.0, 100000.0))),
        repeats=3,
    )
    assert s.params == ()


def test_empty_mapping_gives_defaults() -> None:
    """A scenario that sets nothing is the default Scenario."""
    assert loads_scenario("{}") == Scenario()
    assert loads_scenario("vm:\nlink:\n") == Scenario()


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    """Without ``name:``, a scenario is called after its file; it remembers the file."""
    path = tmp_path / "quick-start.yaml"
    path.write_text("seed: 3\n")
    s = load_scenario(path)
    assert s.name == "quick-start"
    assert s.source_file == str(path)
    path.write_text("name: other\n")
    assert load_scenario(path).name == "other"


def test_phases_schedule_and_faults() -> None:
    """Lists of sections: phases written flat, bandwidth changes and faults."""
    s = loads_scenario("""\
workload:
  kind: phased
  phases:
    - {duration: 10s, kind: hotspot, writes_per_s: 1000, hot_set: 64MiB}
    - duration: 1min
      kind: uniform
link:
  schedule:
    - {at: 5s, bandwidth: 1Gbit/s}
    - {at: 10s, bandwidth: 10Gbit/s}
  faults:
    - {kind: link_down, at: 3s, duration: 500ms}
    - {kind: destination_crash, at: 20s}
""")
    assert s.workload.phases == (
        PhaseSpec(10.0, WorkloadSpec(kind="hotspot", writes_per_s=1000.0, hot_set=64 * MiB)),
        PhaseSpec(60.0, WorkloadSpec(kind="uniform")),
    )
    assert s.link.schedule == (BandwidthChange(5.0, 1.25e8), BandwidthChange(10.0, 1.25e9))
    assert s.link.faults == (FaultSpec("link_down", 3.0, 0.5), FaultSpec("destination_crash", 20.0))


def test_anchors_aliases_and_merge_keys() -> None:
    """YAML anchors, aliases and ``<<`` merges work; explicit keys win over merged ones."""
    s = loads_scenario("""\
endpoints:
  source: &caps {supports: [xbzrle, return-path], enabled: [xbzrle]}
  destination:
    <<: *caps
    enabled: []
""")
    assert s.endpoints.source == EndpointSpec(supports=("xbzrle", "return-path"), enabled=("xbzrle",))
    assert s.endpoints.destination == EndpointSpec(supports=("xbzrle", "return-path"), enabled=())


def test_unquoted_version_keeps_its_text() -> None:
    """``qemu_version: 7.10`` is the string "7.10", not the float 7.1."""
    assert loads_scenario("migration: {qemu_version: 7.10}").migration.qemu_version == "7.10"


# ---------------------------------------------------------------- errors, each with its text

ERRORS = [
    # unknown keys, with a suggestion when one is close
    ("vm:\n  memroy: 4GiB\n", "s.yaml:2: vm.memroy: unknown key; did you mean 'memory'?"),
    ("vm:\n  zzz: 1\n", "s.yaml:2: vm.zzz: unknown key; valid: memory, page_size, content, "
                        "zero_fraction, zero_placement, zero_regions, device_state, vcpus"),
    ("seed: 1\nlinks: {}\n", "s.yaml:2: links: unknown key; did you mean 'link'?"),
    ("workload:\n  kind: phased\n  phases:\n    - {duration: 1s, hot_sett: 1MiB}\n",
     "s.yaml:4: workload.phases[0].hot_sett: unknown key; did you mean 'hot_set'?"),
    # wrong types
    ("vm:\n  memory: [1, 2]\n",
     "s.yaml:2: vm.memory: expected a size such as 4GiB or a number (got [1, 2])"),
    ("seed: '1'\n", "s.yaml:1: seed: expected an integer (got '1')"),
    ("seed: 1.5\n", "s.yaml:1: seed: expected an integer (got 1.5)"),
    ("seed: true\n", "s.yaml:1: seed: expected an integer (got true)"),
    ("workload:\n  writes_per_s: 50k\n", "s.yaml:2: workload.writes_per_s: expected a number (got 50k)"),
    ("workload:\n  writes_per_s: .inf\n",
     "s.yaml:2: workload.writes_per_s: must be a finite number (got .inf)"),
    ("vm: 4GiB\n", "s.yaml:1: vm: expected a mapping of VmSpec keys (got 4GiB)"),
    ("migration:\n  capabilities: xbzrle\n",
     "s.yaml:2: migration.capabilities: expected a list (got xbzrle)"),
    ("vm:\n  memory:\n", "s.yaml:2: vm.memory: expected a size such as 4GiB or a number (got null)"),
    ("vm:\n  content: [exact]\n", "s.yaml:2: vm.content: expected a string (got ['exact'])"),
    ("link:\n  bandwidth: 10Gbit\n",
     "s.yaml:2: link.bandwidth: unknown rate unit 'Gbit'; did you mean 'Gbit/s'? (got 10Gbit)"),
    ("vm:\n  memory: 4 Gib\n",
     "s.yaml:2: vm.memory: unknown size unit 'Gib'; did you mean 'GiB'? (got 4 Gib)"),
    ("vm:\n  page_size: 1.1KiB\n",
     "s.yaml:2: vm.page_size: must be a whole number of bytes (got 1.1KiB)"),
    # sizes, rates and bounds
    ("vm:\n  memory: -4GiB\n", "s.yaml:2: vm.memory: must be > 0 (got -4GiB)"),
    ("vm:\n  memory: 0\n", "s.yaml:2: vm.memory: must be > 0 (got 0)"),
    # bare numbers: refused for sizes, rates and times (0 excepted), QEMU spellings named
    ("vm:\n  memory: 4096\n",
     "s.yaml:2: vm.memory: a bare number has no unit; write 4096GiB or 4096G, 4096MiB or 4096M, "
     "or 4096B (G alone is binary as in QEMU's -m 4G; GB is decimal) (got 4096)"),
    ("migration:\n  downtime_limit: 300\n",
     "s.yaml:2: migration.downtime_limit: a bare number has no unit; write 300ms or 300s (got 300)"),
    ("link:\n  latency: 20\n", "s.yaml:2: link.latency: a bare number has no unit; write 20ms "
                               "or 20s (got 20)"),
    ("link:\n  bandwidth: '125000000'\n",
     "s.yaml:2: link.bandwidth: a bare number has no unit; write 125000000Gbit/s, 125000000MiB/s "
     "or 125000000MB/s (1Gbit/s is 125MB/s) (got 125000000)"),
    ("sweep:\n  grid:\n    link.latency: [0s, 5]\n",
     "s.yaml:3: sweep.grid.link.latency[1]: a bare number has no unit; write 5ms or 5s (got 5)"),
    ("vm:\n  page_size: 0B\n", "s.yaml:2: vm.page_size: must be > 0 (got 0B)"),
    ("link:\n  bandwidth: -5 B/s\n", "s.yaml:2: link.bandwidth: must be > 0 (got -5 B/s)"),
    ("link:\n  bandwidth: 0Gbit/s\n", "s.yaml:2: link.bandwidth: must be > 0 (got 0Gbit/s)"),
    ("link:\n  latency: -1ms\n", "s.yaml:2: link.latency: must be >= 0 (got -1ms)"),
    ("vm:\n  page_size: 3000B\n", "s.yaml:2: vm.page_size: must be a power of two (got 3000B)"),
    ("vm:\n  memory: 6000B\n",
     "s.yaml:2: vm.memory: must be a multiple of vm.page_size, 4KiB (got 6000B)"),
    ("vm:\n  memory: 1KiB\n", "s.yaml:2: vm.memory: must be at least one page of 4KiB (got 1KiB)"),
    ("vm:\n  vcpus: 0\n", "s.yaml:2: vm.vcpus: must be >= 1 (got 0)"),
    ("migration:\n  xbzrle_cache_size: 3MiB\n",
     "s.yaml:2: migration.xbzrle_cache_size: Option xbzrle_cache_size expects a power of two no "
     "less than the target page size, 4KiB (got 3MiB)"),
    ("vm: {page_size: 8KiB}\nmigration:\n  xbzrle_cache_size: 4KiB\n",
     "s.yaml:3: migration.xbzrle_cache_size: Option xbzrle_cache_size expects a power of two no "
     "less than the target page size, 8KiB (got 4KiB)"),
    ("migration:\n  downtime_limit: 3000s\n",
     "s.yaml:2: migration.downtime_limit: must be between 0 and 2000s (got 3000s)"),
    ("migration:\n  clear_bitmap_shift: 40\n",
     "s.yaml:2: migration.clear_bitmap_shift: must be between 6 and 31 (got 40)"),
    ("workload:\n  zipf_exponent: 1\n", "s.yaml:2: workload.zipf_exponent: must be > 1 (got 1)"),
    ("workload:\n  hot_set: 2GiB\n",
     "s.yaml:2: workload.hot_set: must be at most vm.memory, 1GiB (got 2GiB)"),
    ("workload:\n  write_size: 8KiB\n",
     "s.yaml:2: workload.write_size: must be at most vm.page_size, 4KiB (got 8KiB)"),
    ("workload:\n  region: {offset: 1GiB, size: 1MiB}\n",
     "s.yaml:2: workload.region: must lie inside vm.memory, 1GiB (got offset 1GiB, size 1MiB)"),
    ("workload:\n  region: {offset: 1MiB}\n",
     "s.yaml:2: workload.region.size: must be > 0 (got 0B)"),
    ("vm:\n  zero_regions:\n    - {offset: 1GiB, size: 4KiB}\n",
     "s.yaml:3: vm.zero_regions[0]: must lie inside vm.memory, 1GiB (got offset 1GiB, size 4KiB)"),
    ("vm:\n  zero_regions: [{offset: 0, size: 8KiB}, {offset: 1KiB, size: 4KiB}]\n",
     "s.yaml:2: vm.zero_regions[1]: must be whole pages of vm.page_size, 4KiB "
     "(got offset 1KiB, size 4KiB)"),
    ("vm:\n  zero_regions: [{offset: 1MiB}]\n",
     "s.yaml:2: vm.zero_regions[0].size: must be > 0 (got 0B)"),
    # probabilities
    ("workload:\n  hot_probability: 1.5\n",
     "s.yaml:2: workload.hot_probability: must be between 0 and 1 (got 1.5)"),
    ("vm:\n  zero_fraction: -0.1\n", "s.yaml:2: vm.zero_fraction: must be between 0 and 1 (got -0.1)"),
    # enumerations list the valid values
    ("vm:\n  content: exakt\n",
     "s.yaml:2: vm.content: 'exakt' is not one of modelled, exact; did you mean 'exact'?"),
    ("workload:\n  write_pattern: foo\n",
     "s.yaml:2: workload.write_pattern: 'foo' is not one of clustered, scattered, counter, full, "
     "zero"),
    ("migration:\n  switchover: round\n",
     "s.yaml:2: migration.switchover: 'round' is not one of qemu, rounds; did you mean 'rounds'?"),
    ("negotiation: managment\n",
     "s.yaml:1: negotiation: 'managment' is not one of none, qemu, management, inband; did you "
     "mean 'management'?"),
    ("migration:\n  zero_page_detection: new\n",
     "s.yaml:2: migration.zero_page_detection: 'new' is not one of none, legacy, multifd"),
    ("link:\n  faults:\n    - {kind: link_dwn, at: 2s}\n",
     "s.yaml:3: link.faults[0].kind: 'link_dwn' is not one of link_down, bandwidth_drop, "
     "destination_crash, cancel; did "
     "you mean 'link_down'?"),
    # workload kinds
    ("workload:\n  kind: hotsopt\n",
     "s.yaml:2: workload.kind: 'hotsopt' is not a known workload kind; did you mean 'hotspot'?"),
    ("workload:\n  kind: markov\n",
     "s.yaml:2: workload.kind: 'markov' is not a known workload kind; valid: idle, uniform, "
     "hotspot, zipf, sequential, phased, trace, replay"),
    ("workload:\n  kind: phased\n",
     "s.yaml:1: workload.phases: a phased workload needs at least one phase (got [])"),
    ("workload:\n  kind: trace\n",
     "s.yaml:1: workload.trace: a trace workload needs the path of its dirty log (got null)"),
    # capabilities
    ("migration:\n  capabilities: [xbzrl]\n",
     "s.yaml:2: migration.capabilities: 'xbzrl' is not known; did you mean 'xbzrle'?"),
    ("migration:\n  capabilities:\n    - xbzrle\n    - auto-convergence\n",
     "s.yaml:4: migration.capabilities: 'auto-convergence' is not known; did you mean "
     "'auto-converge'?"),
    ("endpoints:\n  destination: {supports: [xbzrle, compress]}\n",
     "s.yaml:2: endpoints.destination.supports: 'compress' is not known; valid: "
     + ", ".join(CAPABILITIES)),
    ("migration:\n  capabilities: [xbzrle, xbzrle]\n",
     "s.yaml:2: migration.capabilities: 'xbzrle' is listed twice"),
    ("migration:\n  capabilities: [xbzrle, multifd]\n",
     "s.yaml:2: migration.capabilities: Multifd is not compatible with xbzrle "
     "(got [xbzrle, multifd])"),
    ("endpoints:\n  source:\n    enabled: [switchover-ack]\n",
     "s.yaml:3: endpoints.source.enabled: Capability 'switchover-ack' requires capability "
     "'return-path' (got [switchover-ack])"),
    ("migration:\n  capabilities: [auto-converge, dirty-limit]\n",
     "s.yaml:2: migration.capabilities: dirty-limit conflicts with auto-converge either of then "
     "available currently (got [auto-converge, dirty-limit])"),
    # sweeps
    ("sweep:\n  grid:\n    migration.xbzrle_cache_sise: [16MiB]\n",
     "s.yaml:3: sweep.grid.migration.xbzrle_cache_sise: 'migration.xbzrle_cache_sise' is not a "
     "scenario key that can vary; did you mean 'migration.xbzrle_cache_size'?"),
    ("sweep:\n  grid:\n    name: [a, b]\n",
     "s.yaml:3: sweep.grid.name: 'name' is not a scenario key that can vary"),
    ("sweep:\n  grid:\n    vm.memory: 4GiB\n",
     "s.yaml:3: sweep.grid.vm.memory: expected a non-empty list of values (got 4GiB)"),
    ("sweep:\n  grid:\n    vm.memory: [4GiB, -1B]\n",
     "s.yaml:3: sweep.grid.vm.memory[1]: must be > 0 (got -1B)"),
    ("sweep:\n  zip:\n    vm.memory: [4GiB, 8GiB]\n    seed: [1]\n",
     "s.yaml:2: sweep.zip: the lists must have the same length (got vm.memory: 2, seed: 1)"),
    ("sweep:\n  grid: {seed: [1, 2]}\n  zip: {seed: [3, 4]}\n",
     "s.yaml:3: sweep.zip.seed: is also in sweep.grid; sweep it in one place"),
    ("sweep:\n  repeats: 0\n", "s.yaml:2: sweep.repeats: must be >= 1 (got 0)"),
    ("vm:\n  memory: 12KiB\nsweep:\n  grid:\n    vm.page_size: [4KiB, 8KiB]\n",
     "s.yaml:2: vm.memory: in sweep member 's-page_size=8KiB': must be a multiple of "
     "vm.page_size, 8KiB (got 12KiB)"),
    ("sweep:\n  grid:\n    vm.memory: [4GiB, 6000B]\n",
     "s.yaml:3: vm.memory: in sweep member 's-memory=6KB': must be a multiple of vm.page_size, "
     "4KiB (got 6KB)"),
    # YAML itself
    ("vm:\n  memory: 4GiB\n   page_size: 4KiB\n",
     "s.yaml:3: invalid YAML: mapping values are not allowed here"),
    ("vm: [1, 2\n", "s.yaml:2: invalid YAML: while parsing a flow sequence expected ',' or ']', "
                    "but got '<stream end>'"),
    ("a: 1\n---\nb: 2\n",
     "s.yaml:2: invalid YAML: expected a single document in the stream but found another "
     "document"),
    ("", "s.yaml: the file is empty; expected a mapping of scenario keys"),
    ("# only a comment\n", "s.yaml: the file is empty; expected a mapping of scenario keys"),
    ("- 1\n- 2\n", "s.yaml:1: the top level must be a mapping of scenario keys (got [1, 2])"),
    ("hello\n", "s.yaml:1: the top level must be a mapping of scenario keys (got 'hello')"),
    ("seed: 1\nvm:\n  memory: 1GiB\nseed: 2\n", "s.yaml:4: seed: duplicate key (first at line 1)"),
    ("vm: {memory: 1GiB, memory: 2GiB}\n", "s.yaml:1: vm.memory: duplicate key (first at line 1)"),
    ("? [a]\n: 1\n", "s.yaml:1: a key must be a name, not a mapping or a list"),
    ("seed: !foo 1\n",
     "s.yaml:1: seed: invalid YAML value: could not determine a constructor for the tag '!foo'"),
    ("seed: !!python/object:os.system 1\n",
     "s.yaml:1: seed: invalid YAML value: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'"),
    ("a: &a [*a]\n", "s.yaml:1: a" + "[0]" * 50 + ": nested more than 50 levels deep"),
    # plug-ins that do not import
    ("plugins: [no_such_module_xyz]\n",
     "s.yaml:1: plugins[0]: cannot import plug-in module 'no_such_module_xyz': "
     "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    # others
    ("link:\n  schedule:\n    - {at: 2s, bandwidth: 1Gbit/s}\n    - {at: 1s, bandwidth: 1Gbit/s}\n",
     "s.yaml:4: link.schedule[1].at: must be later than the previous change (got 1s)"),
    ("link:\n  faults:\n    - {kind: link_down, at: 2s}\n",
     "s.yaml:3: link.faults[0].duration: a link_down fault needs a duration > 0 (got 0s)"),
    ("link:\n  schedule:\n    - {bandwidth: 1Gbit/s}\n",
     "s.yaml:3: link.schedule[0]: missing required key 'at'"),
    ("migration: {qemu_version: ten}\n",
     "s.yaml:1: migration.qemu_version: expected a QEMU version such as '10.2' (got ten)"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_error_messages(text: str, message: str) -> None:
    """Each mistake gives one line: file:line: key.path: problem (got X)."""
    assert error_of(text) == message


def test_error_carries_file_line_and_key() -> None:
    """ScenarioError keeps its parts for callers that want them."""
    with pytest.raises(ScenarioError) as info:
        loads_scenario("seed: 1\nlink:\n  bandwidth: -1\n", file="x.yaml")
    err = info.value
    assert (err.file, err.line, err.key) == ("x.yaml", 3, "link.bandwidth")
    assert isinstance(err, ValueError)


def test_line_numbers_in_the_design_example() -> None:
    """Errors deep in a real file name the right line."""
    lines = EXAMPLE.splitlines()
    for key, line in [("bandwidth:", 20), ("hot_probability:", 13), ("capabilities:", 27),
                      ("zero_page:", 33)]:
        assert lines[line - 1].strip().startswith(key)
    broken = EXAMPLE.replace("bandwidth: 10Gbit/s", "bandwidth: -5 B/s")
    assert error_of(broken, "hotset.yaml") == (
        "hotset.yaml:20: link.bandwidth: must be > 0 (got -5 B/s)")
    broken = EXAMPLE.replace("capabilities: [xbzrle]", "capabilities: [xbzrl]")
    assert error_of(broken, "hotset.yaml") == (
        "hotset.yaml:27: migration.capabilities: 'xbzrl' is not known; did you mean 'xbzrle'?")
    broken = EXAMPLE.replace("hot_probability: 0.9", "hot_probability: 9")
    assert error_of(broken).startswith("s.yaml:13: workload.hot_probability: ")
    broken = EXAMPLE.replace("zero_page: 9B", "zero_page: 9 bytes")
    assert error_of(broken).startswith("s.yaml:33: wire.zero_page: unknown size unit 'bytes'")
    broken = EXAMPLE.replace("    workload.writes_per_s", "    workload.writes_per_sec")
    assert error_of(broken).startswith("s.yaml:43: sweep.grid.workload.writes_per_sec: ")


def test_syntax_error_line_from_the_yaml_mark() -> None:
    """A YAML syntax error is reported at the line PyYAML points to."""
    broken = EXAMPLE.replace("  latency: 0.1ms", "  latency: [0.1ms")
    assert re.match(r"s\.yaml:2[12]: invalid YAML: ", error_of(broken))


def test_file_not_found(tmp_path: Path) -> None:
    """A missing file is a ScenarioError naming it."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such file$"):
        load_scenario(missing)
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_alias_bomb_is_refused() -> None:
    """Aliases that expand to millions of nodes stop at MAX_NODES."""
    text = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for name, previous in zip("bcdefg", "abcdef", strict=True):
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    message = error_of(text)
    assert f"the document expands to more than {MAX_NODES} nodes" in message


def test_deep_nesting_is_refused() -> None:
    """Deep nesting is an error, even past Python's recursion limit."""
    assert "nested more than 50 levels deep" in error_of("a: " + "[" * 60 + "]" * 60 + "\n")
    assert "nested too deeply" in error_of("a: " + "[" * 500 + "]" * 500 + "\n")


def test_plugin_registers_a_capability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug-ins are imported before validation, so their capabilities are known."""
    monkeypatch.setattr(capabilities, "CAPABILITIES", dict(CAPABILITIES))
    (tmp_path / "migsim_test_plugin_zlib.py").write_text(
        "from sim.capabilities import Capability, register\n"
        "register(Capability('x-zlib-page', excludes=('multifd',)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "migsim_test_plugin_zlib", raising=False)
    text = "plugins: [migsim_test_plugin_zlib]\nmigration: {capabilities: [x-zlib-page]}\n"
    s = loads_scenario(text)
    assert s.plugins == ("migsim_test_plugin_zlib",)
    assert s.migration.capabilities == ("x-zlib-page",)
    assert error_of(text.replace("[x-zlib-page]", "[multifd, x-zlib-page]")) == (
        "s.yaml:2: migration.capabilities: Capability 'x-zlib-page' is not compatible with "
        "'multifd' (got [multifd, x-zlib-page])")


# ---------------------------------------------------------------- overrides


def test_overrides_parse_yaml_values() -> None:
    """``--set`` values are YAML scalars or flow collections, with units."""
    s = loads_scenario(EXAMPLE, overrides={
        "link.bandwidth": "1Gbit/s",
        "migration.capabilities": "[xbzrle, auto-converge]",
        "seed": "7",
        "migration.qemu_version": "7.10",
        "workload.region": "{offset: 0, size: 4KiB}",
        "sweep.grid.migration.xbzrle_cache_size": "[1MiB]",
    })
    assert s.link.bandwidth == 1.25e8
    assert s.migration.capabilities == ("xbzrle", "auto-converge")
    assert s.seed == 7
    assert s.migration.qemu_version == "7.10"
    assert s.workload.region == RegionSpec(0, 4096)
    assert s.sweep is not None
    assert s.sweep.grid[0] == ("migration.xbzrle_cache_size", (1 * MiB,))


def test_memory_4g_is_4gib_and_4gb_decimal() -> None:
    """``4G`` is QEMU's ``-m 4G``, 4 GiB; ``4GB`` stays decimal."""
    assert loads_scenario("vm: {memory: 4G}").vm.memory == 4 * 1024**3
    assert loads_scenario("vm: {memory: 4GB, page_size: 512B}").vm.memory == 4 * 10**9
    assert loads_scenario("vm: {memory: 64MiB}", overrides={"vm.memory": "512M"}).vm.memory \
        == 512 * MiB
    assert loads_scenario("link: {latency: 0, bandwidth: 1Gbit/s}").link.latency == 0


def test_bare_number_in_set_is_refused() -> None:
    """``--set`` text goes through the same check as the file."""
    with pytest.raises(ScenarioError, match=r"^<--set>: migration\.downtime_limit: a bare number "
                                            r"has no unit; write 300ms or 300s"):
        loads_scenario("{}", overrides={"migration.downtime_limit": "300"})


def test_overrides_take_python_values() -> None:
    """The Python API may pass numbers, lists or whole sections."""
    s = loads_scenario("{}", overrides={"vm.memory": 8 * MiB, "migration.capabilities": ["xbzrle"],
                                        "link": LinkSpec(bandwidth=1e6), "workload.region.size": "1MiB"})
    assert s.vm.memory == 8 * MiB
    assert s.migration.capabilities == ("xbzrle",)
    assert s.link == LinkSpec(bandwidth=1e6)
    assert s.workload.region == RegionSpec(0, 1 * MiB)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vm.memroy": "1GiB"}, "<--set>: vm.memroy: unknown key; did you mean 'memory'?"),
        ({"link.bandwidth": "-1B/s"}, "<--set>: link.bandwidth: must be > 0 (got -1B/s)"),
        ({"migration.capabilities": "[multifd, xbzrle]"},
         "<--set>: migration.capabilities: Multifd is not compatible with xbzrle "
         "(got [multifd, xbzrle])"),
        ({"link.bandwidth": "[1"},
         "<--set>: link.bandwidth: not a valid YAML value: expected ',' or ']', but got "
         "'<stream end>' (got '[1')"),
        ({"vm.memory.x": "1"},
         "<--set>: vm.memory.x: cannot set a key below 'vm.memory', which is not a section "
         "(got '4GiB')"),
        ({"": "1"}, "<--set>: not a key path such as link.bandwidth (got '')"),
        ({"seed": "x"}, "<--set>: seed: expected an integer (got x)"),
        ({"vms": "[]"}, "<--set>: vms: needs at least one guest (got [])"),
        ({"link.schedule": [{"at": "1s", "bandwidth": "x"}]},
         "<--set>: link.schedule[0].bandwidth: expected a rate such as 10Gbit/s or a number "
         "(got x)"),
    ],
)
def test_override_errors(overrides: dict[str, object], message: str) -> None:
    """Override errors name ``<--set>`` and the key."""
    assert error_of("vm: {memory: 4GiB}\n", overrides=overrides) == message


def test_override_fixing_the_file_wins() -> None:
    """An override replaces the file's value before validation (the file's mistake is gone)."""
    s = loads_scenario("link:\n  bandwidth: -1\n", overrides={"link.bandwidth": "1Gbit/s"})
    assert s.link.bandwidth == 1.25e8


def test_load_scenario_with_overrides(tmp_path: Path) -> None:
    """load_scenario applies overrides as loads_scenario does (DESIGN §5 example)."""
    path = tmp_path / "quickstart.yaml"
    path.write_text(EXAMPLE)
    s = load_scenario(path, overrides={"link.bandwidth": "1Gbit/s"})
    assert s.link.bandwidth == 1.25e8
    assert s.name == "hotspot-xbzrle"


# ---------------------------------------------------------------- sweeps


def test_expand_grid_times_repeats() -> None:
    """The grid is a cartesian product, each combination run with seeds seed, seed+1, ..."""
    members = expand(loads_scenario(EXAMPLE))
    assert len(members) == 3 * 3 * 3
    first = members[0]
    assert first.name == "hotspot-xbzrle-xbzrle_cache_size=16MiB-writes_per_s=1000-r0"
    assert first.params == (("migration.xbzrle_cache_size", 16 * MiB),
                            ("workload.writes_per_s", 1000.0), ("repeat", 0))
    assert first.migration.xbzrle_cache_size == 16 * MiB
    assert first.workload.writes_per_s == 1000.0
    assert [m.seed for m in members[:4]] == [1, 2, 3, 1]
    assert members[3].name == "hotspot-xbzrle-xbzrle_cache_size=16MiB-writes_per_s=10000-r0"
    assert members[-1].name == "hotspot-xbzrle-xbzrle_cache_size=256MiB-writes_per_s=100000-r2"
    assert all(m.sweep is None for m in members)
    assert len({m.name for m in members}) == len(members)


def test_expand_zip_pairs_lists() -> None:
    """zip lists are paired row by row and combined with every grid point."""
    s = loads_scenario("""\
name: z
sweep:
  grid:
    migration.capabilities: [[], [xbzrle, auto-converge]]
  zip:
    link.bandwidth: [1Gbit/s, 10Gbit/s]
    migration.downtime_limit: [300ms, 1s]
""")
    members = expand(s)
    assert [m.name for m in members] == [
        "z-capabilities=none-bandwidth=1Gbps-downtime_limit=300ms",
        "z-capabilities=none-bandwidth=10Gbps-downtime_limit=1s",
        "z-capabilities=xbzrle+auto-converge-bandwidth=1Gbps-downtime_limit=300ms",
        "z-capabilities=xbzrle+auto-converge-bandwidth=10Gbps-downtime_limit=1s",
    ]
    assert members[1].link.bandwidth == 1.25e9
    assert members[1].migration.downtime_limit == 1.0
    assert members[2].migration.capabilities == ("xbzrle", "auto-converge")
    assert all(m.seed == 0 for m in members)  # repeats: 1 keeps the seed and adds no "repeat"
    assert members[0].params == (("migration.capabilities", ()), ("link.bandwidth", 1.25e8),
                                 ("migration.downtime_limit", 0.3))


def test_expand_labels_keep_clashing_keys_whole() -> None:
    """Two swept keys with the same last part are named in full."""
    s = loads_scenario("""\
name: e
sweep:
  grid:
    endpoints.source.enabled: [[xbzrle]]
    endpoints.destination.enabled: [[], [xbzrle]]
""")
    assert [m.name for m in expand(s)] == [
        "e-endpoints.source.enabled=xbzrle-endpoints.destination.enabled=none",
        "e-endpoints.source.enabled=xbzrle-endpoints.destination.enabled=xbzrle",
    ]


def test_expand_without_sweep_is_the_scenario() -> None:
    """A scenario without a sweep is its own single run."""
    s = loads_scenario("seed: 4\n")
    assert expand(s) == [s]
    repeats = expand(loads_scenario("name: r\nseed: 4\nsweep: {repeats: 2}\n"))
    assert [(m.name, m.seed, m.params) for m in repeats] == [
        ("r-r0", 4, (("repeat", 0),)), ("r-r1", 5, (("repeat", 1),))]


def test_sweep_into_an_unset_optional_section() -> None:
    """Sweeping workload.region.size creates the region from its defaults."""
    s = loads_scenario("name: g\nsweep:\n  grid:\n    workload.region.size: [4KiB, 1MiB]\n")
    assert [m.workload.region for m in expand(s)] == [RegionSpec(0, 4096), RegionSpec(0, MiB)]


def test_members_round_trip_with_params() -> None:
    """A sweep member written out (as Result.save does) loads back equal, params included."""
    for member in expand(loads_scenario(EXAMPLE))[:5]:
        assert loads_scenario(yaml.safe_dump(to_dict(member), sort_keys=False)) == member


# ---------------------------------------------------------------- to_dict and round trips


def test_to_dict_writes_units() -> None:
    """to_dict writes human units that read back exactly."""
    d = to_dict(loads_scenario(EXAMPLE))
    assert d["vm"]["memory"] == "4GiB"
    assert d["link"] == {"bandwidth": "10Gbit/s", "latency": "100us", "schedule": [], "faults": []}
    assert d["migration"]["downtime_limit"] == "300ms"
    assert d["migration"]["max_bandwidth"] == "128MiB/s"
    assert d["sweep"]["grid"]["migration.xbzrle_cache_size"] == ["16MiB", "64MiB", "256MiB"]
    assert "params" not in d and "source_file" not in d


def test_design_example_round_trips() -> None:
    """loads(to_dict(s)) == s for the DESIGN example."""
    s = loads_scenario(EXAMPLE)
    assert loads_scenario(yaml.safe_dump(to_dict(s), sort_keys=False)) == s
    assert from_dict(to_dict(s)) == s


def test_scenario_keys_lists_every_key() -> None:
    """SCENARIO_KEYS covers nested sections and list items; scenario_keys adds details."""
    for key in ("vm.memory", "link.schedule[].at", "workload.phases[].kind", "sweep.grid",
                "endpoints.destination.enabled", "migration.zero_page_detection"):
        assert key in SCENARIO_KEYS
    assert "source_file" not in SCENARIO_KEYS
    info = {k.key: k for k in scenario_keys()}
    assert (info["vm.memory"].kind, info["vm.memory"].default) == ("size", "1GiB")
    assert info["link.bandwidth"].default == "10Gbit/s"
    assert info["vm.content"].choices == ("modelled", "exact")
    assert "xbzrle" in info["migration.capabilities"].choices
    assert info["link.schedule[].at"].default == ""


# -- generated scenarios

_NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)
_TIME = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)
_POSITIVE_TIME = st.floats(min_value=1e-9, max_value=1e5)
_RATE = st.floats(min_value=1e-3, max_value=1e13)
_PROBABILITY = st.floats(min_value=0, max_value=1)
_VALID_CAPABILITY_SETS = st.lists(st.sampled_from(sorted(CAPABILITIES)), max_size=4,
                                  unique=True).filter(
    lambda names: not any(incompatible(a, b) for a in names for b in names)
    and all(set(CAPABILITIES[n].requires) <= set(names) for n in names))


_TRACE_FILE = str(Path(__file__).resolve().parent / "data" / "empty-trace.csv")


@st.composite
def workloads(draw: st.DrawFn, memory: int, page: int, phases: bool = True) -> WorkloadSpec:
    kinds = ["idle", "uniform", "hotspot", "zipf", "sequential", "trace"] + (["phased"] if phases else [])
    kind = draw(st.sampled_from(kinds))
    region = None
    if draw(st.booleans()):
        size = draw(st.integers(1, memory))
        region = RegionSpec(draw(st.integers(0, memory - size)), size)
    phase_list: tuple[PhaseSpec, ...] = ()
    if kind == "phased":
        phase_list = tuple(draw(st.lists(
            st.builds(PhaseSpec, st.floats(1e-3, 1e5), workloads(memory, page, phases=False)),
            min_size=1, max_size=2)))
    return WorkloadSpec(
        kind=kind,
        writes_per_s=draw(st.floats(0, 1e9)),
        hot_set=draw(st.none() | st.integers(1, memory)),
        hot_probability=draw(_PROBABILITY),
        zipf_exponent=draw(st.floats(1.0001, 5)),
        write_size=draw(st.integers(1, page)),
        write_pattern=draw(st.sampled_from(["clustered", "scattered", "counter", "full", "zero"])),
        region=region,
        stride=draw(st.none() | st.integers(1, 2**40)),
        word_size=draw(st.integers(1, page)),
        phases=phase_list,
        # a trace workload's file is read when the scenario loads (issue 20): a real one
        trace=_TRACE_FILE if kind == "trace" else draw(st.none() | _NAME),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    page = 2 ** draw(st.integers(9, 16))
    content = draw(st.sampled_from(["modelled", "exact"]))
    # exact content holds the guest's bytes twice: stay within any machine's memory budget
    memory = page * draw(st.integers(1, 2**20 if content == "modelled" else 2**24 // page))
    vm = VmSpec(memory=memory, page_size=page, content=content,
                zero_fraction=draw(_PROBABILITY), device_state=draw(st.integers(0, 2**34)),
                vcpus=draw(st.integers(1, 256)))
    times = sorted(set(draw(st.lists(_TIME, max_size=3))))
    link = LinkSpec(
        bandwidth=draw(_RATE), latency=draw(_TIME),
        schedule=tuple(BandwidthChange(t, draw(_RATE)) for t in times),
        faults=tuple(draw(st.lists(st.one_of(
            st.builds(FaultSpec, st.just("link_down"), _TIME, _POSITIVE_TIME),
            st.builds(FaultSpec, st.just("destination_crash"), _TIME, _TIME)), max_size=2))),
    )
    migration = MigrationSpec(
        start=draw(_TIME), downtime_limit=draw(st.floats(0, 2000)),
        max_bandwidth=draw(st.just(0.0) | _RATE), avail_switchover_bandwidth=draw(st.just(0.0) | _RATE),
        xbzrle_cache_size=2 ** draw(st.integers(page.bit_length() - 1, 40)),
        capabilities=tuple(draw(_VALID_CAPABILITY_SETS)),
        max_time=draw(st.none() | _POSITIVE_TIME), max_sim_time=draw(_POSITIVE_TIME),
        qemu_version=draw(st.from_regex(r"\A\d{1,2}\.\d{1,2}(\.\d)?\Z")),
        switchover=draw(st.sampled_from(["qemu", "rounds"])),
        max_passes=draw(st.none() | st.integers(1, 100)),
        zero_page_detection=draw(st.sampled_from(["none", "legacy", "multifd"])),
        clear_bitmap_shift=draw(st.integers(6, 31)),
    )
    sizes = st.integers(0, 2**16)
    wire = WireSpec(draw(sizes), draw(sizes), draw(sizes), draw(sizes))
    @st.composite
    def endpoints(draw_: st.DrawFn) -> EndpointSpec:
        version = draw_(st.none() | st.sampled_from(["1.1", "2.10", "7.2", "10.2"]))
        supports = draw_(st.none() | st.lists(st.sampled_from(sorted(CAPABILITIES)),
                                              unique=True).map(tuple))
        # enabled: a valid set, cut down to what the endpoint supports (if still valid)
        known = supported_by(version, supports)
        enabled = tuple(c for c in draw_(_VALID_CAPABILITY_SETS) if c in known)
        try:
            check_set(enabled)
        except ValueError:
            enabled = ()
        return EndpointSpec(version=version, supports=supports, enabled=enabled)

    endpoint = endpoints()
    sweep = draw(st.none() | st.builds(
        SweepSpec,
        grid=st.just((("workload.writes_per_s", (1.0, 2.5)), ("migration.capabilities", ((), ("xbzrle",))))),
        zip=st.just((("link.latency", (0.0, 1e-3)), ("seed", (1, 2)))) | st.just(()),
        repeats=st.integers(1, 3)))
    return Scenario(
        # room for the sweep's repeats, which the member adds to the seed
        name=draw(_NAME), seed=draw(st.integers(0, 2**63 - 1 - 10_000 - 3)), vm=vm,
        workload=draw(workloads(memory, page)), link=link, migration=migration, wire=wire,
        endpoints=EndpointsSpec(draw(endpoint), draw(endpoint)),
        negotiation=draw(st.sampled_from(["none", "qemu", "management", "inband"])),
        plugins=draw(st.sampled_from([(), ("json",)])), sweep=sweep,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_round_trip_generated(s: Scenario) -> None:
    """Every valid scenario survives to_dict → YAML → loads, and to_dict → from_dict.

    The time budget is lifted: generated rates and deadlines are valid values whose worst case
    would take hours to simulate, and this test only loads them (tests/test_budget.py checks
    the refusal)."""
    with mock.patch.dict(os.environ, {budget.TIME_LIMIT_ENV: "100000000h"}):
        text = yaml.safe_dump(to_dict(s), sort_keys=False, allow_unicode=True)
        assert loads_scenario(text) == s
        assert from_dict(to_dict(s)) == s
        member = expand(s)[-1]
        assert loads_scenario(yaml.safe_dump(to_dict(member), sort_keys=False,
                                             allow_unicode=True)) == member


# -- random input never escapes as anything but ScenarioError

_KEYS = sorted({*SCENARIO_KEY_PARTS, "<<", "vms", "grid", "zip", "migration.capabilities",
                "vm.memory"})
_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
            | st.sampled_from(["4GiB", "10Gbit/s", "300ms", "-1", "xbzrle", "phased", "0", "1e400",
                               "link_down", "hotspot", "7.2", "[", "{a: 1}", "nan"])
            | st.text(max_size=8))
_VALUES = yaml_trees(_SCALARS, _KEYS, list_size=3, key_size=5, max_leaves=20)
_TOP = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6)


def _loads_or_scenario_error(text: str, **kwargs: Any) -> None:
    try:
        s = loads_scenario(text, **kwargs)
    except ScenarioError as e:
        assert str(e)
    else:
        assert isinstance(s, Scenario)
        expand(s)
        to_dict(s)


@settings(max_examples=150, deadline=None)
@given(_TOP)
def test_random_mappings_load_or_raise_scenario_error(data: dict[str, Any]) -> None:
    """Arbitrary YAML-ish mappings either load or raise ScenarioError, nothing else."""
    _loads_or_scenario_error(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(SCENARIO_KEYS), _SCALARS | st.text(max_size=10),
                       max_size=4))
def test_random_overrides_load_or_raise_scenario_error(overrides: dict[str, object]) -> None:
    """Overrides of any shape give a Scenario or a ScenarioError."""
    _loads_or_scenario_error("{}", overrides=overrides)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_random_text_loads_or_raises_scenario_error(text: str) -> None:
    """Any text at all: a Scenario or a ScenarioError."""
    _loads_or_scenario_error(text)


# ---------------------------------------------------------------- the capability registry


def test_registry_holds_qemus_capabilities_in_qapi_order() -> None:
    """All 21 capabilities, in query-migrate-capabilities order."""
    assert list(CAPABILITIES)[:21] == [
        "xbzrle", "rdma-pin-all", "auto-converge", "events", "postcopy-ram", "x-colo",
        "release-ram", "return-path", "pause-before-switchover", "multifd", "dirty-bitmaps",
        "postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid",
        "background-snapshot", "zero-copy-send", "postcopy-preempt", "switchover-ack",
        "dirty-limit", "mapped-ram"]
    assert CAPABILITIES["auto-converge"].side_effect
    assert CAPABILITIES["dirty-limit"].side_effect
    assert not CAPABILITIES["xbzrle"].side_effect
    assert not CAPABILITIES["xbzrle"].needs_both_sides
    assert CAPABILITIES["multifd"].needs_both_sides
    assert CAPABILITIES["switchover-ack"].requires == ("return-path",)
    assert "xbzrle" in CAPABILITIES["multifd"].excludes
    assert "multifd" in CAPABILITIES["xbzrle"].excludes


@pytest.mark.parametrize(
    ("enabled", "message"),
    [
        (["multifd", "xbzrle"], "Multifd is not compatible with xbzrle"),
        (["mapped-ram", "xbzrle"], "Mapped-ram migration is incompatible with xbzrle"),
        (["mapped-ram", "postcopy-ram"], "Mapped-ram migration is incompatible with postcopy"),
        (["rdma-pin-all", "multifd"], "RDMA and multifd can't be used together"),
        (["rdma-pin-all", "xbzrle"], "RDMA and XBZRLE can't be used together"),
        (["rdma-pin-all", "postcopy-ram"], "RDMA and postcopy-ram can't be used together"),
        (["postcopy-preempt"], "Postcopy preempt requires postcopy-ram"),
        (["switchover-ack"], "Capability 'switchover-ack' requires capability 'return-path'"),
        (["dirty-limit", "auto-converge"],
         "dirty-limit conflicts with auto-converge either of then available currently"),
        (["zero-copy-send"],
         "Zero copy only available for non-compressed non-TLS multifd migration"),
        (["zero-copy-send", "multifd", "xbzrle"],
         "Zero copy only available for non-compressed non-TLS multifd migration"),
        (["background-snapshot", "xbzrle"], "Background-snapshot is not compatible with xbzrle"),
        (["background-snapshot", "return-path"],
         "Background-snapshot is not compatible with return-path"),
        (["postcopy-ram", "x-ignore-shared"], "Postcopy is not compatible with ignore-shared"),
        (["bogus"], "capability 'bogus' is not known"),
    ],
)
def test_check_set_uses_qemus_words(enabled: list[str], message: str) -> None:
    """migrate-set-capabilities' constraints, with QEMU's error texts."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check_set(enabled)


def test_check_set_accepts_valid_sets() -> None:
    """Compatible sets pass, including every capability alone that needs nothing."""
    check_set([])
    check_set(["xbzrle", "auto-converge", "return-path", "switchover-ack", "events"])
    check_set(["multifd", "zero-copy-send"])
    check_set(["postcopy-ram", "postcopy-preempt", "multifd"])
    for cap in CAPABILITIES.values():
        check_set([cap.name, *cap.requires])


def test_background_snapshot_excludes_fourteen() -> None:
    """background-snapshot excludes 14 capabilities (REF §6.1)."""
    assert len(CAPABILITIES["background-snapshot"].excludes) == 14


def test_register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug-ins register capabilities; the same again is fine, a different one is an error."""
    monkeypatch.setattr(capabilities, "CAPABILITIES", dict(CAPABILITIES))
    cap = Capability("x-zlib-page", doc="zlib per page")
    assert register(cap) is cap
    register(Capability("x-zlib-page", doc="zlib per page"))
    assert capabilities.CAPABILITIES["x-zlib-page"] == cap
    with pytest.raises(ValueError, match="already registered with other properties"):
        register(dataclasses.replace(cap, side_effect=True))
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(CAPABILITIES["xbzrle"], needs_both_sides=True))
    assert list(capabilities.CAPABILITIES)[-1] == "x-zlib-page"


def test_incompatible_is_symmetric(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conflict declared on one side only counts both ways."""
    monkeypatch.setattr(capabilities, "CAPABILITIES", dict(CAPABILITIES))
    register(Capability("x-fast", excludes=("xbzrle",)))
    assert incompatible("x-fast", "xbzrle") and incompatible("xbzrle", "x-fast")
    assert not incompatible("xbzrle", "auto-converge")
    with pytest.raises(ValueError, match="'x-fast' is not compatible with 'xbzrle'"):
        check_set(["xbzrle", "x-fast"])


def test_from_dict_bare_numbers() -> None:
    """Python data is in SI units by default; ``bare_numbers=False`` (YAML-written data, such as
    the validation cases) refuses a bare number as the loader does."""
    assert from_dict({"link": {"latency": 0.02}}).link.latency == 0.02
    with pytest.raises(ScenarioError, match=r"link\.latency: a bare number has no unit; write "
                                            r"0\.02ms or 0\.02s"):
        from_dict({"link": {"latency": 0.02}}, bare_numbers=False)
    assert from_dict({"link": {"latency": "20ms"}}, bare_numbers=False).link.latency == 0.02
