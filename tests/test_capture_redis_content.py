"""The real Redis capture with page contents in tests/data/captures/redis-content (NOTE.md there):
its records parse and agree with QEMU's own counters, its pages.zst decodes and every kept version
is the page its records' digests name, and the cut (pages sent once share row 0) keeps what a
replay reads. No QEMU needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.capture import read_pages
from sim.replay import fit
from sim.stream import digest

CAPTURE = Path(__file__).parent / "data" / "captures" / "redis-content"
# QEMU 7.2's query-migrate for this migration (NOTE.md): ram.normal and ram.duplicate
QEMU_NORMAL, QEMU_DUPLICATE = 27_348, 8_668
PAGE = 4096


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return pd.read_parquet(CAPTURE / "records.parquet")


@pytest.fixture(scope="module")
def versions() -> np.ndarray:
    return read_pages(CAPTURE)


def test_small_enough_for_the_repository():
    total = sum(f.stat().st_size for f in CAPTURE.iterdir())
    assert total < 6_000_000
    assert (CAPTURE / "pages.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame, no LFS


def test_record_counts_equal_qemus_counters(records):
    kinds = records.kind.value_counts().to_dict()
    assert kinds == {"page": QEMU_NORMAL, "zero": QEMU_DUPLICATE}
    runs = pd.read_parquet(CAPTURE / "runs.parquet")
    assert runs.normal_pages.iloc[0] == QEMU_NORMAL
    assert runs.zero_pages.iloc[0] == QEMU_DUPLICATE
    assert runs.status.iloc[0] == "completed"


def test_passes_follow_the_scan(records):
    """Time never goes back, passes only grow, and within a pass each block's pages rise."""
    assert np.all(np.diff(records.t_s.to_numpy()) >= 0)
    assert np.all(np.diff(records["pass"].to_numpy()) >= 0)
    assert records["pass"].min() == 1
    for _, group in records.groupby(["pass", "block"]):
        assert np.all(np.diff(group.page.to_numpy()) > 0)
    # the first pass sends every page it knows once
    first = records[records["pass"] == 1]
    assert not first.duplicated(["block", "page"]).any()


def test_versions_decode_and_match_the_digests(records, versions):
    assert versions.dtype == np.uint8 and versions.shape[1] == PAGE
    content = records.kind == "page"
    assert (records.version[~content] == -1).all()
    rows = records.version[content].to_numpy()
    assert rows.min() == 0 and rows.max() == versions.shape[0] - 1
    kept = rows > 0
    assert np.array_equal(np.sort(rows[kept]), np.arange(1, versions.shape[0]))  # each row once
    wanted = records.digest[content].to_numpy()[kept].astype(np.uint64)
    got = np.array([digest(versions[r].tobytes()) for r in rows[kept]], np.uint64)
    assert np.array_equal(got, wanted)
    assert versions[0].any()  # the stand-in is a real, non-zero page


def _records_per_page(records: pd.DataFrame) -> pd.Series:
    return records.groupby(["block", "page"], observed=True).version.transform("size")


def test_the_stand_in_holds_only_pages_sent_once(records):
    """Row 0 stands in for the pages with one record in all; a page with more (zero records
    included) keeps every version."""
    times = _records_per_page(records)
    content = records.kind == "page"
    assert (times[content & (records.version == 0)] == 1).all()
    assert (times[content & (records.version > 0)] > 1).all()


def test_pages_sent_once_are_written_only_by_modelled_writes(records):
    """The replay pools rates by 2 MiB region (sim/replay_rates.py), so pages the cut stood in
    for (sent once) may be written: about one in seven of them is. None has a captured version
    after its first, so their writes change ``write_size`` bytes of the stand-in row (modelled
    writes), as they would of the real page; the replayed guest starts them from row 0 (NOTE.md
    states what that changes)."""
    fitted = fit(CAPTURE)
    once = records[(_records_per_page(records) == 1) & (records.version == 0)]
    assert len(once) > 20_000 and fitted.intervals >= 1
    # the replayed guest's pages are the RAMBlocks end to end in the stream's order: pc.ram first
    blocks = pd.read_parquet(CAPTURE / "events.parquet").detail.iloc[0]
    assert blocks.index('"pc.ram"') < blocks.index('"pc.bios"')
    pc_ram = once[once.block == "pc.ram"].page.to_numpy()
    assert np.all(fitted.first_version[pc_ram] == 0)
    assert np.all(fitted.later_start[pc_ram + 1] == fitted.later_start[pc_ram])
    written = np.mean(fitted.rates[pc_ram] > 0)
    assert 0.1 < written < 0.5
    assert fitted.rates.sum() > 0
    assert fitted.write_size is not None and 0 < fitted.write_size <= PAGE
