"""Plug-in encoders (DESIGN §9): a researcher's encoder, from their own module, is negotiated,
fails and succeeds exactly as XBZRLE does."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest

import sim
from sim.capabilities import CAPABILITIES
from sim.encoders import ENCODERS
from sim.recorder import event_field
from sim.run import Testbed, run_one
from sim.scenario import load_scenario

PLUGIN = textwrap.dedent('''
    import zlib
    import numpy as np
    import sim

    @sim.register_encoder
    class TestLeanPage(sim.Encoder):
        """the page as is, behind a 2-byte header (no previous page needed)"""
        name = "test-lean-page"
        capability = "x-test-lean-page"
        needs_previous = False
        header = 2

        def encode(self, page, previous):
            return page

        def decode(self, payload, previous):
            return payload

    @sim.register_encoder
    class TestXorDelta(sim.Encoder):
        """zlib of the XOR with the page as last sent"""
        name = "test-xor-delta"
        capability = "x-test-xor-delta"
        needs_previous = True
        header = 12

        def encode(self, page, previous):
            if previous is None:
                return None
            d = np.frombuffer(page, np.uint8) ^ np.frombuffer(previous, np.uint8)
            return zlib.compress(d.tobytes(), 1) if d.any() else b""

        def decode(self, payload, previous):
            d = np.frombuffer(zlib.decompress(payload), np.uint8)
            return (d ^ np.frombuffer(previous, np.uint8)).tobytes()
''')

SCENARIO = textwrap.dedent('''
    seed: 2
    plugins: [migsim_test_plugin]
    vm: {{memory: {memory}, content: {content}, zero_fraction: 0.1}}
    workload: {{kind: hotspot, writes_per_s: {writes}, hot_set: {hot}, write_size: 64B}}
    link: {{bandwidth: {bandwidth}, latency: 1ms}}
    migration:
      capabilities: [{cap}]
      xbzrle_cache_size: 16MiB
      downtime_limit: {downtime}
      max_sim_time: 60s
    negotiation: {mode}
    endpoints:
      destination: {{supports: {supports}}}
''')
SIZES = {"modelled": ("64MiB", "8MiB", "200Mbit/s", 20000, "500ms"),
         "exact": ("16MiB", "2MiB", "100Mbit/s", 2000, "100ms")}
CAPS = ("x-test-lean-page", "x-test-xor-delta")


@pytest.fixture(scope="module", autouse=True)
def _clean_registries():
    """Leave the registries (and sys.modules) as this module found them."""
    encoders, caps = dict(ENCODERS), dict(CAPABILITIES)
    modules = set(sys.modules)
    yield
    ENCODERS.clear()
    ENCODERS.update(encoders)
    CAPABILITIES.clear()
    CAPABILITIES.update(caps)
    for name in set(sys.modules) - modules:
        if name in ("migsim_test_plugin", "examples", "examples.zlib_xor"):
            del sys.modules[name]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plugin")
    (d / "migsim_test_plugin.py").write_text(PLUGIN)
    return d


def scenario(plugin_dir: Path, cap: str, mode: str, content: str, supports: str):
    memory, hot, bandwidth, writes, downtime = SIZES[content]
    path = plugin_dir / f"{cap}-{mode}-{content}-{abs(hash(supports))}.yaml"
    path.write_text(SCENARIO.format(memory=memory, hot=hot, bandwidth=bandwidth, writes=writes, downtime=downtime,
                                    cap=cap,
                                    mode=mode, content=content, supports=supports))
    return load_scenario(path)


def test_registration_adds_the_capability(plugin_dir):
    scenario(plugin_dir, CAPS[0], "qemu", "modelled", "null")
    for cap in CAPS:
        assert CAPABILITIES[cap].on_wire and CAPABILITIES[cap].since is None
    assert list(ENCODERS)[-2:] == ["test-lean-page", "test-xor-delta"]


@pytest.mark.parametrize("content", ["modelled", "exact"])
@pytest.mark.parametrize("cap", CAPS)
def test_both_ends_support_it(plugin_dir, cap, content):
    res = run_one(scenario(plugin_dir, cap, "qemu", content, "null"))
    run = res.runs.iloc[0]
    assert run.status == "completed"
    assert run.capabilities == cap
    assert run.plugin_pages > 0 and run.plugin_bytes > 0
    assert run.pages_lost == 0
    if content == "exact":
        assert bool(run.memory_match)
    stats = res.events[res.events.event == "encoder-stats"].detail.iloc[0]
    assert json.loads(stats) == {"encoder": ENCODERS_BY_CAP[cap], "pages": run.plugin_pages,
                                 "bytes": run.plugin_bytes}


ENCODERS_BY_CAP = {"x-test-lean-page": "test-lean-page", "x-test-xor-delta": "test-xor-delta"}


@pytest.mark.parametrize("content", ["modelled", "exact"])
@pytest.mark.parametrize("cap", CAPS)
def test_destination_without_it_fails_at_the_first_record(plugin_dir, cap, content):
    res = run_one(scenario(plugin_dir, cap, "none", content, "[xbzrle, return-path]"))
    run = res.runs.iloc[0]
    assert run.status == "failed"
    assert run.failure_reason == ("load of migration failed: Invalid argument: "
                                  "Unknown combination of migration flags: 0x1000")
    assert run.plugin_pages == 1  # the stream broke at the first record
    assert run.pages_lost == 0
    ends = res.events[res.events.event == "MIGRATION"]
    assert event_field(ends[ends.endpoint == "source"], "status").iloc[-1] == "failed"


@pytest.mark.parametrize("cap", CAPS)
def test_management_leaves_it_out_and_completes(plugin_dir, cap):
    run = run_one(scenario(plugin_dir, cap, "management", "modelled",
                           "[xbzrle, return-path]")).runs.iloc[0]
    assert (run.status, run.capabilities, run.plugin_pages) == ("completed", "", 0)
    both = run_one(scenario(plugin_dir, cap, "management", "modelled", "null")).runs.iloc[0]
    assert (both.status, both.capabilities) == ("completed", cap)


def test_qmp_lists_it_where_supported_and_sets_it(plugin_dir):
    sc = scenario(plugin_dir, CAPS[1], "qemu", "modelled", "[xbzrle]")
    tb = Testbed(sc)
    assert CAPS[1] in [c["capability"] for c in tb.source.query_migrate_capabilities()]
    assert [c["capability"] for c in tb.destination.query_migrate_capabilities()] == ["xbzrle"]
    tb.source.migrate_set_capabilities([{"capability": CAPS[1], "state": True}])
    assert tb.source.is_enabled(CAPS[1])
    old = Testbed(dataclasses.replace(sc, endpoints=dataclasses.replace(
        sc.endpoints, destination=sim.spec.EndpointSpec(version="10.2"))))
    assert CAPS[1] not in [c["capability"] for c in old.destination.query_migrate_capabilities()]


def test_a_bad_plugin_is_refused():
    class NoCapability(sim.Encoder):
        name = "no-capability"

    with pytest.raises(ValueError, match="needs its own 'capability'"):
        sim.register_encoder(NoCapability)

    class Clash(sim.Encoder):
        name = "xbzrle"
        capability = "x-clash"

    with pytest.raises(ValueError, match="already registered"):
        sim.register_encoder(Clash)

    class QemuCap(sim.Encoder):
        name = "steals-a-qemu-capability"
        capability = "auto-converge"

    with pytest.raises(ValueError, match="is QEMU's and not a wire encoding"):
        sim.register_encoder(QemuCap)


def test_migsim_list_shows_a_scenarios_plugins(plugin_dir):
    import subprocess

    path = plugin_dir / "list.yaml"
    path.write_text("plugins: [migsim_test_plugin]\n")
    out = subprocess.run([sys.executable, "-m", "sim.cli", "list", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "test-xor-delta" in out and "[plug-in: migsim_test_plugin]" in out
    assert "x-test-lean-page" in out
    plain = subprocess.run([sys.executable, "-m", "sim.cli", "list"],
                           capture_output=True, text=True, check=True).stdout
    assert "test-xor-delta" not in plain


def test_installed_packages_register_through_entry_points(monkeypatch):
    """An encoder an installed package lists under ``migsim.encoders`` is registered when a
    scenario is loaded, with no ``plugins:`` key."""
    import sim.plugins as plugins
    from sim.scenario import loads_scenario

    class EntryPointEncoder(sim.Encoder):
        """an encoder from an installed package"""
        name = "test-entry-point"
        capability = "x-test-entry-point"

        def encode(self, page, previous):
            return None

        def decode(self, payload, previous):
            return payload

    class FakeEntryPoint:
        name, value = "test-entry-point", "somepkg.enc:EntryPointEncoder"

        def load(self):
            return EntryPointEncoder

    def fake_entry_points(group):
        assert group == "migsim.encoders"
        return [FakeEntryPoint()]

    monkeypatch.setattr(plugins.metadata, "entry_points", fake_entry_points)
    monkeypatch.setitem(plugins._entry_points, "loaded", None)
    sc = loads_scenario("migration: {capabilities: [x-test-entry-point]}\n")
    assert sc.migration.capabilities == ("x-test-entry-point",)
    assert ENCODERS["test-entry-point"] is EntryPointEncoder

    class Broken:
        name, value = "broken", "nowhere:Nothing"

        def load(self):
            raise ModuleNotFoundError("No module named 'nowhere'")

    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [Broken()])
    monkeypatch.setitem(plugins._entry_points, "loaded", None)
    with pytest.raises(sim.ScenarioError, match="entry point 'broken'"):
        loads_scenario("seed: 1\n")
    monkeypatch.setitem(plugins._entry_points, "loaded", None)
