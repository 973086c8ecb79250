"""Every example scenario runs, and shows what its comment says it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sim
from sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
EXPECTED_STATUS = {
    "quickstart": "completed",
    "converging-default": "completed",
    "nonconverging": "cancelled",
    "slow-link": "completed",
    "classic-rounds": "completed",
    "xbzrle-wins": "completed",
    "xbzrle-raw": "cancelled",
    "xbzrle-small-cache": "cancelled",
    "xbzrle-full-rewrites": "cancelled",
    "replay-example": "completed",
}


@pytest.fixture(scope="module")
def results():
    return {path.stem: sim.run(load_scenario(path)) for path in sorted(SCENARIOS.glob("*.yaml"))}


def test_every_scenario_file_is_covered(results):
    assert set(results) == set(EXPECTED_STATUS) | {"xbzrle-cache-sweep", "mixed-cluster",
                                                    "zlib-xor-vs-xbzrle", "convergence-toolbox", "cluster-rollout",
                                                    "controllers"}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_scenario_outcome(results, name):
    runs = results[name].runs
    assert list(runs.status) == [EXPECTED_STATUS[name]]
    assert (runs.pages_lost == 0).all()


def test_quickstart_converges_in_a_few_passes(results):
    run = results["quickstart"].runs.iloc[0]
    assert 2 <= run.dirty_sync_count <= 6
    assert run.downtime_s < 0.5


def test_classic_rounds_is_the_geometric_model(results):
    run = results["classic-rounds"].runs.iloc[0]
    assert run.total_time_s == pytest.approx(15.75, rel=1e-9)
    assert run.downtime_s == pytest.approx(0.25, rel=1e-9)


def test_xbzrle_makes_the_hot_set_converge(results):
    wins, raw = results["xbzrle-wins"].runs.iloc[0], results["xbzrle-raw"].runs.iloc[0]
    assert wins.status == "completed" and raw.status == "cancelled"
    assert wins.xbzrle_pages > 0 and wins.xbzrle_encoding_rate > 5
    assert raw.xbzrle_pages == 0


def test_small_cache_misses_more(results):
    small = results["xbzrle-small-cache"].runs.iloc[0]
    wins = results["xbzrle-wins"].runs.iloc[0]
    assert small.xbzrle_cache_miss_rate > 2 * wins.xbzrle_cache_miss_rate


def test_full_rewrites_overflow(results):
    run = results["xbzrle-full-rewrites"].runs.iloc[0]
    assert run.xbzrle_overflow > 0.9 * (run.xbzrle_pages - 0)
    assert run.xbzrle_encoding_rate < 1.1  # ~4096 B of "xbzrle bytes" per hit: no gain


def test_cache_sweep_miss_rate_falls_as_cache_grows(results):
    runs = results["xbzrle-cache-sweep"].runs.sort_values("migration.xbzrle_cache_size")
    miss = runs.xbzrle_cache_miss_rate.to_numpy()
    assert len(runs) == 5
    assert np.all(np.diff(miss) <= 1e-12), miss
    assert miss[0] > 2 * miss[-1]
    assert runs.status.iloc[-1] == "completed"
    assert set(runs.scenario) == {"xbzrle-cache-sweep"}


def test_mixed_cluster_compares_negotiation_modes(results):
    """Per mode (REF §8.2): without negotiation XBZRLE kills the migrations to the destinations
    that cannot decode it (1.1, and the one whose supports lacks it); management and in-band
    negotiation fall back to raw for those, so every migration completes."""
    runs = results["mixed-cluster"].runs
    assert len(runs) == 16 and set(runs.vm) == {"old-dest", "qemu-7.2", "qemu-10.2", "no-xbzrle"}
    failed = runs[runs.status == "failed"].groupby("negotiation").vm.apply(sorted).to_dict()
    assert failed == {"none": ["no-xbzrle", "old-dest"], "qemu": ["no-xbzrle", "old-dest"]}
    assert (runs[runs.status == "completed"].downtime_s > 0).all()
    assert (runs.pages_lost == 0).all()
    by_mode = runs.set_index(["negotiation", "vm"])
    assert by_mode.loc[("management", "old-dest"), "capabilities"] == ""
    assert by_mode.loc[("management", "qemu-7.2"), "capabilities"] == "xbzrle"


def test_the_zlib_xor_plugin_compares_with_xbzrle(results):
    """examples/zlib_xor.py, a delta plug-in, against XBZRLE and raw on small scattered writes:
    both deltas send fewer bytes than raw; the plug-in's records are counted."""
    runs = results["zlib-xor-vs-xbzrle"].runs
    assert set(runs.status) == {"completed"}
    by = {tuple(c): r for c, r in zip(runs["migration.capabilities"], runs.itertuples(),
                                      strict=True)}
    raw, xb, zx = by[()], by[("xbzrle",)], by[("x-zlib-xor",)]
    assert zx.plugin_pages > 0 and xb.xbzrle_pages > 0 and raw.plugin_pages == 0
    assert zx.transferred_bytes < raw.transferred_bytes
    assert xb.transferred_bytes < raw.transferred_bytes


def test_convergence_toolbox_side_by_side(results):
    """On a workload raw pre-copy cannot finish (REF §4, §5): auto-converge finishes by
    throttling, post-copy finishes soonest with a short downtime and remote faults; XBZRLE (the
    rewritten set dwarfs its cache) and multifd (the link is the bottleneck) do not help."""
    runs = results["convergence-toolbox"].runs
    status = dict(zip(runs["migration.capabilities"].map(lambda c: ",".join(c) or "raw")
                      + runs["migration.multifd_compression"].map(lambda c: f"/{c}"),
                      runs.itertuples(), strict=True))
    assert {k: r.status for k, r in status.items()} == {
        "raw/none": "cancelled", "xbzrle/none": "cancelled", "auto-converge/none": "completed",
        "postcopy-ram/none": "completed", "multifd/none": "cancelled", "multifd/zstd": "cancelled"}
    ac, pc = status["auto-converge/none"], status["postcopy-ram/none"]
    assert ac.max_throttle_pct >= 50 and ac.guest_cpu_lost_s > 0
    assert pc.total_time_s < ac.total_time_s and pc.downtime_s < ac.downtime_s
    assert pc.postcopy_faults > 0 and pc.postcopy_stall_s > 0


def test_controllers_sweep_shows_what_its_comment_says(results):
    runs = results["controllers"].runs.set_index("controller.kind")
    assert runs.loc["none", "status"] == "cancelled"  # QEMU's defaults alone
    assert runs.loc["nova", "status"] == "cancelled"  # its next step is 150 s away
    assert runs.loc["libvirt", "status"] == "completed"
    assert runs.loc["libvirt", "total_time_s"] > 30  # suspended at 30 s, then drained
    assert runs.loc["libvirt", "guest_cpu_lost_s"] > 0
    assert runs.loc["kubevirt", "status"] == "completed"
    assert runs.loc["kubevirt", "downtime_s"] <= 1.05 + 0.1  # under its ceiling (+ one window)
    assert (results["controllers"].runs.pages_lost == 0).all()


def test_replay_example_starts_from_the_capture(results):
    """The capture's 300 zero pages go out as zero pages in pass 1, and XBZRLE encodes re-sent
    real pages (the captured bytes plus 32-byte writes) to a small share of a page."""
    run = results["replay-example"].runs.iloc[0]
    first = results["replay-example"].passes.iloc[0]
    assert first.pages_sent == 1024 and first.zero_pages == 300
    assert run.xbzrle_pages > 0 and run.xbzrle_encoding_rate > 10
    assert run.memory_match
