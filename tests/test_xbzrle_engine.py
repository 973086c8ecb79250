"""XBZRLE inside the migration: QEMU's per-page rules, exact content, and modelled sizes."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine.content import PATTERNS
from sim.run import run_one
from sim.spec import LinkSpec, MiB, MigrationSpec, Scenario, VmSpec, WorkloadSpec


def hot_scenario(content="modelled", pattern="clustered", seed=1, caps=("xbzrle",),
                 cache=32 * MiB, write_size=32, **migration) -> Scenario:
    return Scenario(
        name=f"x-{content}-{pattern}", seed=seed,
        vm=VmSpec(memory=128 * MiB, content=content, zero_fraction=0.2),
        link=LinkSpec(bandwidth=200e6 / 8),
        workload=WorkloadSpec(kind="hotspot", writes_per_s=30_000, hot_set=16 * MiB,
                              hot_probability=0.95, write_size=write_size, write_pattern=pattern),
        migration=MigrationSpec(max_bandwidth=0, capabilities=caps, xbzrle_cache_size=cache,
                                **{"switchover": "rounds", "max_passes": 8, **migration}))


def test_first_pass_is_never_encoded_and_second_only_misses():
    """REF §2.6: no XBZRLE in the bulk pass; a page is cached the 2nd time and encoded the 3rd."""
    res = run_one(hot_scenario())
    passes = res.passes[res.passes.pages_sent > 0].reset_index()
    assert passes.xbzrle_pages[0] == 0
    assert passes.xbzrle_pages[1] == 0
    assert passes.xbzrle_pages[2:].sum() > 0
    run = res.runs.iloc[0]
    assert run.xbzrle_cache_miss >= passes.normal_pages[1]


def test_xbzrle_pages_mean_cache_hits_in_both_tables():
    """``xbzrle_pages`` is QEMU's hit counter in runs and passes alike; ``xbzrle_records`` the
    records that went out, so a pass's kinds add up to its pages sent (here: no plug-ins)."""
    res = run_one(hot_scenario())
    passes, run = res.passes, res.runs.iloc[0]
    assert passes.xbzrle_pages.sum() == run.xbzrle_pages
    assert passes.xbzrle_records.sum() == run.xbzrle_records
    assert 0 < run.xbzrle_records < run.xbzrle_pages  # some hits were unchanged or overflowed
    kinds = passes.normal_pages + passes.zero_pages + passes.xbzrle_records
    assert (kinds == passes.pages_sent).all()


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("seed", [3, 17])
@pytest.mark.parametrize("caps", [("xbzrle",), ()], ids=["xbzrle", "raw"])
def test_exact_mode_rebuilds_memory_byte_for_byte(pattern, seed, caps):
    """A completed exact-mode migration leaves the destination equal to the source."""
    sc = Scenario(
        name="exact", seed=seed, vm=VmSpec(memory=16 * MiB, content="exact", zero_fraction=0.3),
        link=LinkSpec(bandwidth=100e6 / 8),
        workload=WorkloadSpec(kind="hotspot", writes_per_s=8_000, hot_set=2 * MiB,
                              write_size=48, write_pattern=pattern),
        # The classic policy with a tiny limit forces five live passes, so XBZRLE gets used.
        migration=MigrationSpec(max_bandwidth=0, capabilities=caps, xbzrle_cache_size=1 * MiB,
                                downtime_limit=0.01, switchover="rounds", max_passes=5))
    run = run_one(sc).runs.iloc[0]
    assert run.status == "completed"
    assert bool(run.memory_match)
    assert run.pages_lost == 0
    if caps and pattern in ("clustered", "counter"):
        assert run.xbzrle_pages > 0


def test_cancelled_exact_run_loses_nothing_but_destination_is_incomplete():
    sc = Scenario(
        name="exact-nc", seed=1, vm=VmSpec(memory=16 * MiB, content="exact"),
        link=LinkSpec(bandwidth=10e6 / 8),
        workload=WorkloadSpec(kind="uniform", writes_per_s=50_000, write_pattern="full"),
        migration=MigrationSpec(max_bandwidth=0, capabilities=("xbzrle",), max_time=5))
    run = run_one(sc).runs.iloc[0]
    assert run.status == "cancelled"
    assert run.pages_lost == 0  # the source runs on with every page
    assert not bool(run.memory_match)


@pytest.mark.parametrize("pattern", ["clustered", "scattered", "counter"])
@pytest.mark.parametrize("seed", [1, 2])
def test_modelled_and_exact_agree_within_three_percent(pattern, seed):
    """Modelled sizes come from the real encoder on the workload's pattern (DESIGN §3)."""
    modelled = run_one(hot_scenario("modelled", pattern, seed)).runs.iloc[0]
    exact = run_one(hot_scenario("exact", pattern, seed)).runs.iloc[0]
    assert modelled.status == exact.status == "completed"
    assert exact.xbzrle_bytes == pytest.approx(modelled.xbzrle_bytes, rel=0.03)
    assert exact.transferred_bytes == pytest.approx(modelled.transferred_bytes, rel=0.03)


def test_xbzrle_statistics_follow_qemu_definitions():
    run = run_one(hot_scenario()).runs.iloc[0]
    # encoding-rate = hit pages × 4096 / xbzrle bytes (REF §2.8)
    assert run.xbzrle_encoding_rate == pytest.approx(
        run.xbzrle_pages * 4096 / run.xbzrle_bytes)
    assert 0 < run.xbzrle_cache_miss_rate < 1
    # Raw pages include misses and overflows.
    assert run.normal_pages >= run.xbzrle_cache_miss + run.xbzrle_overflow - run.zero_pages


def test_bigger_cache_fewer_misses():
    rates = [run_one(hot_scenario(cache=c)).runs.xbzrle_cache_miss_rate.iloc[0]
             for c in (1 * MiB, 4 * MiB, 32 * MiB)]
    assert rates[0] > rates[1] > rates[2]


def test_encoding_cost_follows_qemus_encoder_on_ref_cases():
    """The model's CPU time per XBZRLE page (``kernel.xbzrle_cpu`` with the default costs)
    against QEMU's C encoder timed on REF §11.2's page pairs: within 15% for a changed byte,
    64 random ones and 8 clustered runs (charging every encoded byte alike gave 3x on the
    clustered runs)."""
    import sys
    from pathlib import Path

    from sim.encoders.xbzrle import encode, encoded_sizes, literal_bytes
    from sim.engine.kernel import xbzrle_cpu
    from sim.spec import SourceCpuSpec

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_xbzrle import C_MBPS, make_case

    cpu = SourceCpuSpec()
    rng = np.random.default_rng(3)
    old = rng.integers(0, 256, (400, 4096), dtype=np.uint8)
    for name in ("(a)", "(b)", "(c)"):
        label = next(k for k in C_MBPS if k.startswith(name))
        new = make_case(label, old, rng)
        enc = encoded_sizes(old, new)
        changed = (old != new).sum(axis=1)
        # the changed bytes are what the record's nzruns carry
        rec = np.frombuffer(encode(old[0].tobytes(), new[0].tobytes()), np.uint8)
        assert literal_bytes(rec, rec.shape[0]) == changed[0]
        model = np.mean([xbzrle_cpu(int(e), int(c), 4096, 4096 / cpu.xbzrle_rate,
                                    cpu.xbzrle_per_byte) for e, c in zip(enc, changed, strict=True)])
        qemu = 4096 / (C_MBPS[label] * 1e6)
        assert model == pytest.approx(qemu, rel=0.15), label
