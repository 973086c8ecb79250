"""Multifd (REF §5.2): channels divide the per-page work, packets change the record sizes."""

from __future__ import annotations

import dataclasses

import pytest

from sim.capabilities import check_set
from sim.engine.multifd import PACKET_HEADER, PACKET_PAGES
from sim.run import run_one
from sim.spec import LinkSpec, MigrationSpec, Scenario, SourceCpuSpec, VmSpec, WorkloadSpec
from sim.units import MiB

PAGES = 256 * MiB // 4096
CPU = SourceCpuSpec()


def idle(channels: int, compression: str = "zlib", bandwidth: float = 100e9 / 8) -> Scenario:
    return Scenario(
        name="mf", vm=VmSpec(memory=256 * MiB, device_state=0),
        workload=WorkloadSpec(kind="idle"), link=LinkSpec(bandwidth=bandwidth),
        migration=MigrationSpec(max_bandwidth=0, capabilities=("multifd",),
                                multifd_channels=channels, multifd_compression=compression),
        source_cpu=dataclasses.replace(CPU, sync_per_page=0.0))


def live(run) -> float:
    return run.total_time_s - run.setup_time_s


@pytest.mark.parametrize("k", [2, 4, 8])
def test_k_channels_give_about_k_times_one_when_cpu_bound(k):
    """zlib on a 100 Gbit/s link: the channel threads' compression sets the pace; only the
    migration thread's own per-page work does not divide."""
    one = live(run_one(idle(1)).runs.iloc[0])
    many = live(run_one(idle(k)).runs.iloc[0])
    per_page = CPU.per_page, (4096 / CPU.scan_rate + 4096 / CPU.zlib_rate)
    expected = (per_page[0] + per_page[1]) / (per_page[0] + per_page[1] / k)
    assert one / many == pytest.approx(expected, rel=0.02)
    assert one / many > 0.9 * k


def test_the_link_caps_what_channels_can_do():
    """At 1 Gbit/s the link, not the channels, is the bottleneck: more channels do not help."""
    slow = [live(run_one(idle(k, "none", 1e9 / 8)).runs.iloc[0]) for k in (1, 8)]
    assert slow[0] == pytest.approx(slow[1], rel=1e-3)
    per_page = 4096 + 8 + PACKET_HEADER / PACKET_PAGES
    assert slow[0] == pytest.approx(PAGES * per_page / (1e9 / 8), rel=2e-3)


def test_zero_pages_cost_only_their_offset():
    sc = idle(2, "none", 1e9 / 8)
    zero = dataclasses.replace(sc, vm=dataclasses.replace(sc.vm, zero_fraction=1.0))
    run = run_one(zero).runs.iloc[0]
    assert run.zero_pages == PAGES
    # an 8-byte offset each, plus its share of the packet header (whole bytes per page)
    assert run.transferred_bytes == pytest.approx(
        PAGES * round(8 + PACKET_HEADER / PACKET_PAGES), rel=1e-3)


def test_multifd_excludes_xbzrle():
    with pytest.raises(ValueError, match="Multifd is not compatible with xbzrle"):
        check_set(["multifd", "xbzrle"])


@pytest.mark.parametrize("limit_mib", [8, 64, 100])
def test_the_rate_limit_counts_whole_packets(limit_mib):
    """QEMU charges a multifd packet to the rate limit when it is handed to a channel and checks
    the limit before every page: a 100 ms window sends floor(B / P) + 1 whole packets, so an idle
    guest moves at that rate, not at max-bandwidth (one stream: a page over at most)."""
    limit = limit_mib * MiB
    sc = idle(2, "none")
    sc = dataclasses.replace(sc, migration=dataclasses.replace(sc.migration, max_bandwidth=limit))
    packet = PACKET_PAGES * round(4096 + 8 + PACKET_HEADER / PACKET_PAGES)
    rate = (int(limit * 0.1 // packet) + 1) * packet / 0.1
    res = run_one(sc)
    windows = res.samples[res.samples.status == "active"].bandwidth_bytes_per_s.iloc[2:-2]
    assert windows.median() == pytest.approx(rate, rel=2e-3)
    assert rate > limit
    single = dataclasses.replace(sc, migration=dataclasses.replace(sc.migration, capabilities=()))
    res1 = run_one(single)
    windows1 = res1.samples[res1.samples.status == "active"].bandwidth_bytes_per_s.iloc[2:-2]
    assert abs(windows1.median() - limit) <= (4096 + 8 + 18) / 0.1  # at most a page over


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_channels_share_the_hosts_cores(cores):
    """With fewer cores than channels (``source_cpu.cores``) the channels' work divides by the
    cores: 4 channels on 2 cores are as fast as 2 channels, twice one channel's speed."""
    def timed(k: int) -> float:
        sc = idle(k)
        sc = dataclasses.replace(sc, source_cpu=dataclasses.replace(sc.source_cpu, cores=cores))
        return live(run_one(sc).runs.iloc[0])

    one, four = timed(1), timed(4)
    per_page = CPU.per_page, (4096 / CPU.scan_rate + 4096 / CPU.zlib_rate)
    expected = (per_page[0] + per_page[1]) / (per_page[0] + per_page[1] / min(4, cores))
    assert one / four == pytest.approx(expected, rel=0.02)
