"""The ``replay`` workload: rates fitted from synthetic captures whose pages are written at known
Poisson rates (the maximum-likelihood closed form and sampling error), replayed migrations
against the recorded passes, exact content from ``pages.zst``, and bad capture folders."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zstandard

from sim import cli
from sim.errors import ScenarioError
from sim.guest import Guest
from sim.replay import fit, read_versions
from sim.replay_rates import GAP_P, long_gaps, page_rates
from sim.run import run
from sim.scenario import load_scenario
from sim.spec import LinkSpec, MigrationSpec
from sim.workloads import make_workload, sized_row
from tests.builders import FREE_CPU, ZERO_OVERHEAD

PAGE = 4096


def write_capture(folder: Path, passes: list[np.ndarray], starts: list[float], pages: int,
                  content: list[np.ndarray] | None = None, block: str = "pc.ram") -> Path:
    """A capture folder: pass k sends ``passes[k]`` (page numbers), its first record at
    ``starts[k]`` and the rest just after; ``content[k]``: the pages' bytes (uint8[n, 4096]),
    written to pages.zst."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    version = 0
    for k, (sent, t0) in enumerate(zip(passes, starts, strict=True)):
        for j, p in enumerate(sent):
            v = -1
            if content is not None:
                v, version = version, version + 1
            rows.append((t0 + 1e-6 * j, k + 1, block, int(p), "page", PAGE + 8, 0, v))
    frame = pd.DataFrame(rows, columns=["t_s", "pass", "block", "page", "kind", "wire_bytes",
                                        "digest", "version"])
    frame["digest"] = frame["digest"].astype(np.uint64)
    frame.to_parquet(folder / "records.parquet", index=False)
    detail = json.dumps({"machine": "pc-i440fx-7.2", "blocks": {block: pages * PAGE}})
    pd.DataFrame({"run_id": ["capture"], "t_s": [0.0], "endpoint": ["destination"],
                  "event": ["stream-start"], "detail": [detail]}).to_parquet(
        folder / "events.parquet", index=False)
    if content is not None:
        data = np.concatenate(content).tobytes()
        (folder / "pages.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    return folder


def equal_interval_capture(folder: Path, rates: np.ndarray, interval_s: float, intervals: int,
                           seed: int = 1) -> list[np.ndarray]:
    """Pages written at ``rates``; pass 1 sends all, pass k + 1 the pages written in interval k
    (at least one Poisson write in ``interval_s``), ``intervals`` of them, then a final pass
    (which the fit leaves out: in QEMU it follows the stop)."""
    rng = np.random.default_rng(seed)
    pages = rates.size
    passes = [np.arange(pages)]
    for _ in range(intervals + 1):
        passes.append(np.flatnonzero(rng.poisson(rates * interval_s) > 0))
    write_capture(folder, passes, [k * interval_s for k in range(intervals + 2)], pages)
    return passes


def test_fitted_rates_are_the_closed_forms_and_recover_known_rates(tmp_path: Path) -> None:
    """Classes of 2048 pages (four whole 512-page regions each) at known rates: a class's
    regions pool to ``-ln(1 - share) / d`` (equal intervals), every page of it; the per-page
    root (:func:`sim.replay_rates.page_rates`) is ``ln((m + 1/2) / (m - n + 1/2)) / d``."""
    interval, m = 0.5, 40
    classes = np.array([0.1, 1.0, 4.0])
    rates = np.repeat(classes, 2048)
    rates = np.concatenate([rates, np.zeros(512)])  # 6656 pages, the last region never written
    passes = equal_interval_capture(tmp_path / "c", rates, interval, m)
    fitted = fit(tmp_path / "c")
    assert fitted.memory == rates.size * PAGE
    assert fitted.intervals == m
    assert fitted.covered_s == pytest.approx(m * interval)
    dirty = np.zeros(rates.size, np.int64)
    for sent in passes[1:-1]:
        dirty[sent] += 1
    some = dirty > 0
    own = page_rates(np.concatenate(passes[1:-1]), np.full(sum(p.size for p in passes[1:-1]),
                                                            interval), m * interval, m,
                     rates.size)
    closed = np.log((m + 0.5) / (m - dirty[some] + 0.5)) / interval
    np.testing.assert_allclose(own[some], closed, rtol=1e-5)
    assert (fitted.rates[6144:] == 0).all()
    for i, rate in enumerate(classes):
        cls = slice(2048 * i, 2048 * (i + 1))
        p = 1 - math.exp(-rate * interval)
        for region in range(4):
            pages = slice(2048 * i + 512 * region, 2048 * i + 512 * (region + 1))
            share = dirty[pages].mean() / m
            # a region's pool: -ln(1 - share) / d (up to its half interval of pseudo clean
            # time and the few pages the 1% test fits on their own by chance)
            pool = np.median(fitted.rates[pages])
            assert np.mean(fitted.rates[pages] == pool) > 0.97
            assert pool == pytest.approx(-math.log1p(-share) / interval, rel=0.02)
            assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / (512 * m))
        assert fitted.rates[cls].mean() == pytest.approx(rate, rel=0.05)
    assert fitted.write_size is None  # no pages.zst


def known_pages(seed: int = 11) -> np.ndarray:
    """16 regions of 512 pages: 6 regions of a working set written 0.3 times a second, 6 of
    data never written holding 6 hot pages each (10 writes a second), 4 never written."""
    rng = np.random.default_rng(seed)
    rates = np.zeros(16 * 512)
    rates[:6 * 512] = 0.3
    for region in range(6, 12):
        rates[region * 512 + rng.choice(512, 6, replace=False)] = 10.0
    return rates


def distinct(rates: np.ndarray, d: np.ndarray) -> np.ndarray:
    """D(d): the expected number of distinct pages written in an interval of length d."""
    return np.array([np.sum(-np.expm1(-rates * x)) for x in d])


def test_the_fit_reproduces_the_distinct_pages_curve(tmp_path: Path) -> None:
    """A synthetic capture of a known workload (a working set over whole regions, hot pages in
    regions of other data), migrated at a known link rate: the fitted rates' D(d) is the true
    one within 5% from 0.5 s (a quarter of the longest interval) to 5x it (three seeds), where the
    per-page fit alone stops growing at what the capture saw. Below, the hot pages' own rates,
    from three or four intervals, come out low (D(0.3 s) 5%, D(0.1 s) 9% low for one seed)."""
    rates = known_pages()
    bandwidth = rates.size * PAGE / 2.0  # pass 1 takes 2 s
    d = np.geomspace(0.5, 10.0, 8)
    truth = distinct(rates, d)
    for seed in range(3):
        folder = tmp_path / f"c{seed}"
        passes = closed_form_capture(folder, rates, bandwidth, 0.01, seed=seed)
        assert len(passes) >= 4
        fitted = fit(folder)
        np.testing.assert_allclose(distinct(fitted.rates, d), truth, rtol=0.05)
        seen = np.zeros(rates.size, bool)
        for sent in passes[1:-1]:
            seen[sent] = True
        assert distinct(np.where(seen, 1e3, 0.0), d[-1:])[0] < 0.6 * truth[-1]


def one_interval_capture(folder: Path, rates: np.ndarray, interval_s: float,
                         seed: int) -> list[np.ndarray]:
    """A capture like QEMU's defaults: pass 1 sends every page, pass 2 the pages written in its
    ``interval_s`` seconds, pass 3 (after the stop, 20 ms later) those written since."""
    rng = np.random.default_rng(seed)
    passes = [np.arange(rates.size)]
    for length in (interval_s, 0.02):
        passes.append(np.flatnonzero(rng.poisson(rates * length) > 0))
    write_capture(folder, passes, [0.0, interval_s, interval_s + 0.02], rates.size)
    return passes


def test_one_interval_is_reproduced_and_extrapolated(tmp_path: Path) -> None:
    """A capture like QEMU's defaults on a small guest: one sync interval (2 s) and the pass
    after the stop. D at the interval is reproduced within 3%, and at 2 to 5 times the interval
    within 5% (the regions' pooling); below it the hot pages' rates are not identifiable from
    one interval and D comes out low (stated in the docs)."""
    rates = known_pages()
    passes = one_interval_capture(tmp_path / "c", rates, 2.0, seed=4)
    fitted = fit(tmp_path / "c")
    assert fitted.intervals == 1
    assert distinct(fitted.rates, np.array([2.0]))[0] == pytest.approx(passes[1].size, rel=0.03)
    far = np.array([4.0, 6.0, 10.0])
    np.testing.assert_allclose(distinct(fitted.rates, far), distinct(rates, far), rtol=0.05)
    assert distinct(fitted.rates, np.array([0.05]))[0] < 0.8 * distinct(rates, np.array([0.05]))[0]
    # the hot pages (6 in each data region: 1.2% of it) are fitted on their own, the data
    # around them is not written
    assert (fitted.rates[6 * 512:12 * 512][rates[6 * 512:12 * 512] == 0] == 0).all()


def test_long_clean_stretches_leave_the_pool() -> None:
    """The gap test (sim/replay_rates.py, long_gaps): in regions whose dirty pages are a random
    subset of their data, a page is left out about as rarely as GAP_P says (per region); around
    a contiguous block of dirty pages both margins are left out, the shorter one only once the
    longer is (the share of the rest rises)."""
    rng = np.random.default_rng(5)
    regions = 400
    region = np.arange(regions * 512) // 512
    candidate = np.ones(region.size, bool)
    dirty = rng.random(region.size) < 0.3
    out = long_gaps(region, candidate, dirty)
    assert not (out & dirty).any()
    assert np.unique(region[out]).size <= 0.03 * regions  # GAP_P = 0.01 per region
    # one region: 3 zero pages, 61 dirty, 448 clean data; another: 67 clean, 60 dirty, 385 clean
    region = np.arange(1024) // 512
    candidate = np.ones(1024, bool)
    candidate[:3] = False
    dirty = np.zeros(1024, bool)
    dirty[3:64] = True
    dirty[512 + 67:512 + 127] = True
    out = long_gaps(region, candidate, dirty)
    np.testing.assert_array_equal(np.flatnonzero(out),
                                  np.flatnonzero(candidate & ~dirty))
    # a block of 60 among 511 is 12% of its region: the 67 pages before it alone are not
    # improbable (0.88^67 x 61 > 1%); the 385 after it are, and without them they are too
    assert 0.88 ** 67 * 61 > GAP_P


def test_a_fixed_block_is_not_made_to_grow(tmp_path: Path) -> None:
    """memcached's guest: the pages it writes are a few contiguous blocks inside regions of
    other data, all dirty within any interval; from a one-interval capture the fitted D(d) stays
    at those blocks at 2 to 8 times the interval (before the gap test the regions' pooling made
    it 3 to 4 times too large). A random working set in the same capture is still extrapolated."""
    rates = np.zeros(8 * 512)
    rates[:2 * 512] = 0.3  # two regions of a working set
    for region, (start, length) in zip(range(2, 8), [(70, 60), (3, 61), (200, 150), (0, 30),
                                                      (400, 100), (10, 20)], strict=True):
        rates[region * 512 + start:region * 512 + start + length] = 5.0
    one_interval_capture(tmp_path / "c", rates, 0.8, seed=6)
    fitted = fit(tmp_path / "c")
    far = np.array([1.6, 3.2, 6.4])
    blocks = slice(2 * 512, None)
    np.testing.assert_allclose(distinct(fitted.rates[blocks], far),
                               distinct(rates[blocks], far), rtol=0.05)
    working = slice(0, 2 * 512)
    np.testing.assert_allclose(distinct(fitted.rates[working], far),
                               distinct(rates[working], far), rtol=0.08)


def test_naive_estimator_would_be_biased(tmp_path: Path) -> None:
    """A page sent once per interval hides several writes: n/(m d) undercounts a hot page; the
    fit does not (mean fitted rate of hot pages close to the truth)."""
    rates = np.full(3000, 6.0)
    equal_interval_capture(tmp_path / "c", rates, 0.25, 30, seed=3)
    fitted = fit(tmp_path / "c")
    naive = 1 - math.exp(-6.0 * 0.25)  # expected share dirty, as a rate: share / d
    assert naive / 0.25 < 0.8 * 6.0
    assert np.median(fitted.rates) == pytest.approx(6.0, rel=0.15)


def closed_form_capture(folder: Path, rates: np.ndarray, bandwidth: float, limit_s: float,
                        seed: int = 5) -> list[np.ndarray]:
    """A migration at ``bandwidth`` with no headers or CPU cost: each pass takes its pages'
    bytes / bandwidth, the next sends the pages written meanwhile; stop when a pass fits the
    downtime limit (that pass is the last)."""
    rng = np.random.default_rng(seed)
    passes, starts, t = [np.arange(rates.size)], [0.0], 0.0
    while True:
        length = passes[-1].size * PAGE / bandwidth
        if len(passes) > 1 and length <= limit_s or len(passes) > 30:
            break
        t += length
        passes.append(np.flatnonzero(rng.poisson(rates * length) > 0))
        starts.append(t)
    write_capture(folder, passes, starts, rates.size)
    return passes


EXAMPLE = Path(__file__).resolve().parent.parent / "scenarios" / "captures" / "synthetic-hotset"


def make_example(folder: Path) -> None:
    """``scenarios/captures/synthetic-hotset``: a 4 MiB guest (1024 pages; 64 hot pages written
    4 times a second, 256 warm ones 0.5 times, 300 zero and never written) migrated at 4 MiB/s
    with no headers, to a 30 ms downtime limit. Each page holds 128 random bytes; each write
    changes a run of 32 bytes, so pages.zst holds the real versions."""
    rng = np.random.default_rng(2026)
    pages = 1024
    rates = np.zeros(pages)
    rates[:64], rates[64:320] = 4.0, 0.5
    memory = np.zeros((pages, PAGE), np.uint8)
    offsets = rng.integers(0, PAGE - 128, pages)
    for i in range(pages - 300):  # a loop per page: a tiny, one-off data set
        memory[i, offsets[i]:offsets[i] + 128] = rng.integers(1, 256, 128, dtype=np.uint8)
    bandwidth = 4 * 1024 * 1024
    passes, starts, content, t = [np.arange(pages)], [0.0], [memory.copy()], 0.0
    while True:
        length = passes[-1].size * PAGE / bandwidth
        if len(passes) > 1 and length <= 0.03 or len(passes) > 30:
            break
        t += length
        writes = rng.poisson(rates * length)
        for i in np.flatnonzero(writes):
            for _ in range(writes[i]):
                at = rng.integers(0, PAGE - 32)
                memory[i, at:at + 32] = rng.integers(1, 256, 32, dtype=np.uint8)
        passes.append(np.flatnonzero(writes))
        starts.append(t)
        content.append(memory[passes[-1]].copy())
    zero = np.zeros(pages, bool)
    zero[pages - 300:] = True
    write_capture(folder, passes, starts, pages, content=content)
    frame = pd.read_parquet(folder / "records.parquet")  # zero pages: zero records, no version
    first = frame["pass"] == 1
    frame.loc[first & zero[frame["page"]], "kind"] = "zero"
    frame.loc[first & zero[frame["page"]], "wire_bytes"] = 9
    kept = frame["kind"] != "zero"
    frame["version"] = np.where(kept, np.cumsum(kept) - 1, -1)
    frame.to_parquet(folder / "records.parquet", index=False)
    versions = np.concatenate(content)[(np.concatenate(passes) < pages - 300)
                                       | (np.arange(frame.shape[0]) >= pages)]
    (folder / "pages.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(
        versions.tobytes()))


def test_the_shipped_example_is_the_synthetic_capture_above(tmp_path: Path) -> None:
    make_example(tmp_path / "c")
    for name in ("records.parquet", "events.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(EXAMPLE / name),
                                      pd.read_parquet(tmp_path / "c" / name))
    np.testing.assert_array_equal(read_versions(EXAMPLE), read_versions(tmp_path / "c"))
    fitted = fit(EXAMPLE)
    assert fitted.zero.sum() == 300
    assert (fitted.write_size, fitted.write_pattern) == (32, "clustered")
    # the second region (pages 512..1023) is never written; in the first, the pages written
    # (0..319) are one contiguous block, so the runs test keeps the 192 data pages after it
    # (never written) out of the pool: a random subset of 512 would have ~100 runs, not 1
    assert fitted.rates[512:].max() == 0
    assert fitted.rates[320:512].max() == 0
    assert fitted.rates[64:320].min() > 0


def replay_scenario(tmp_path: Path, capture: str, memory: int, extra: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: replay\nvm: {{memory: {memory}B, content: modelled}}\n"
                    f"workload: {{kind: replay, capture: {capture}}}\n{extra}")
    return path


def run_replay(tmp_path: Path, bandwidth: float, limit_s: float, seed: int = 0) -> pd.DataFrame:
    scenario = load_scenario(replay_scenario(tmp_path, "c", 4096 * PAGE))
    scenario = replace(scenario, wire=ZERO_OVERHEAD, source_cpu=FREE_CPU, seed=seed,
                       vm=replace(scenario.vm, device_state=0),
                       link=LinkSpec(bandwidth=bandwidth),
                       migration=MigrationSpec(max_bandwidth=0, downtime_limit=limit_s))
    result = run(scenario)
    assert result.runs["status"].iloc[0] == "completed"
    return result.passes


def test_replay_under_the_captures_settings_gives_its_pass_sizes(tmp_path: Path) -> None:
    """Pages written at known rates, migrated at a known link rate (a closed-form capture of 9
    passes), fitted and replayed: the passes come close to the recorded ones (the per-page fit
    from a few passes is noisy: passes 2 and 3 come out about 10% low), and a 4x faster link
    gives the smaller second pass the true rates predict."""
    rates = np.concatenate([np.full(1024, 2.0), np.full(1024, 0.2), np.zeros(2048)])
    bandwidth = 4096 * PAGE / 1.0  # pass 1 takes one second
    recorded = closed_form_capture(tmp_path / "c", rates, bandwidth, 0.005)
    assert len(recorded) >= 6
    fitted = fit(tmp_path / "c")
    sizes = [run_replay(tmp_path, bandwidth, 0.005, seed)["pages_sent"].to_numpy()[:3]
             for seed in range(3)]
    mean = np.mean(sizes, axis=0)
    assert mean[0] == 4096
    assert mean[1] == pytest.approx(recorded[1].size, rel=0.15)
    assert mean[2] == pytest.approx(recorded[2].size, rel=0.15)
    # a 4x faster link: pass 1 takes 0.25 s; pass 2 holds the pages written meanwhile
    faster = run_replay(tmp_path, 4 * bandwidth, 0.005)["pages_sent"].iloc[1]
    assert faster < 0.6 * mean[1]
    by_fit = np.sum(1 - np.exp(-fitted.rates * 0.25))  # what the fitted rates give
    assert abs(faster - by_fit) < 4 * math.sqrt(by_fit)
    truth = np.sum(1 - np.exp(-rates * 0.25))  # what the guest itself would give
    assert faster == pytest.approx(truth, rel=0.2)


def test_exact_mode_starts_from_the_captured_content(tmp_path: Path) -> None:
    pages = 256
    rng = np.random.default_rng(9)
    first = rng.integers(1, 256, size=(pages - 6, PAGE), dtype=np.uint8)  # last 6 never sent
    second = first[:10].copy()
    second[:, 100:164] ^= 0xFF  # pass 2: 64 changed bytes in one run on pages 0..9
    write_capture(tmp_path / "c", [np.arange(pages - 6), np.arange(10)], [0.0, 1.0], pages,
                  content=[first, second])
    fitted = fit(tmp_path / "c")
    assert fitted.write_size == 64
    assert fitted.write_pattern == "clustered"
    assert fitted.zero[pages - 6:].all() and not fitted.zero[: pages - 6].any()
    path = replay_scenario(tmp_path, "c", pages * PAGE).read_text().replace("modelled", "exact")
    (tmp_path / "e.yaml").write_text(path)
    scenario = load_scenario(tmp_path / "e.yaml")
    assert scenario.workload.write_size == 64
    guest = Guest(scenario.vm, np.random.default_rng(0))
    make_workload(scenario.workload, guest.pages, PAGE).prepare(guest)
    np.testing.assert_array_equal(guest.memory[: pages - 6], first)
    assert not guest.memory[pages - 6:].any()
    assert guest.zero[pages - 6:].all() and not guest.zero[: pages - 6].any()
    # and the whole run: the destination ends with the source's bytes
    result = run(scenario)
    assert result.runs["status"].iloc[0] == "completed"


def test_exact_writes_step_pages_through_their_captured_versions(tmp_path: Path) -> None:
    """A write sets its page to the page's next captured version; past them a page whose
    re-sends held the bytes it had (a silent writer) keeps its last version, any other page gets
    the write pattern, as does a page without later versions."""
    pages = 64
    rng = np.random.default_rng(4)
    v = [rng.integers(1, 256, size=(pages, PAGE), dtype=np.uint8) for _ in range(3)]
    v[1][5] = v[2][5] = v[0][5]  # page 5 is re-sent three times with its first bytes
    # pass 1: every page; passes 2 to 4: pages 0..7 (rows 64.. of pages.zst), equal intervals
    # (two intervals: pages 0..7 are hot, the region's other pages are not written)
    write_capture(tmp_path / "c", [np.arange(pages)] + [np.arange(8)] * 3,
                  [0.0, 1.0, 2.0, 3.0], pages, content=[v[0], v[1][:8], v[2][:8], v[1][:8]])
    assert fit(tmp_path / "c").silent.tolist() == [p == 5 for p in range(pages)]
    scenario = load_scenario(replay_scenario(tmp_path, "c", pages * PAGE, ""))
    scenario = replace(scenario, vm=replace(scenario.vm, content="exact"))
    guest = Guest(scenario.vm, np.random.default_rng(0))
    workload = make_workload(scenario.workload, pages, PAGE)
    workload.prepare(guest)
    rows = workload.content_rows(np.array([0, 3, 0, 0, 9, 3, 5, 5, 5]))
    np.testing.assert_array_equal(rows, [64, 67, 72, 80, -1, 75, 69, 77, 85])
    rows = workload.content_rows(np.array([0, 5, 5]))
    # past its three versions page 0 gets the write pattern with its own versions' median size
    # of change (a whole random page: about 4 080 bytes), never its old bytes again (XBZRLE
    # would skip a page sent with them); silent page 5 keeps its last version
    step = int(fit(tmp_path / "c").step_bytes[0])
    changed = sorted(int((a[0] != b[0]).sum()) for a, b in [(v[0], v[1]), (v[1], v[2]),
                                                             (v[2], v[1])])
    assert step == changed[1]
    np.testing.assert_array_equal(rows, [sized_row(step), 85, 85])
    assert sized_row(step) < -1
    # through the engine: after a second of writes each page 0..7 written at most three times
    # holds one of its versions, one written more the write pattern (silent page 5: its last)
    from sim.engine.bitmap import MigrationBitmap
    from sim.engine.writes import WriteBuffer

    guest = Guest(scenario.vm, np.random.default_rng(0))
    workload = make_workload(scenario.workload, pages, PAGE)
    workload.prepare(guest)
    buffer = WriteBuffer(guest, MigrationBitmap(pages, 18), workload, scenario.workload,
                         np.random.default_rng(1), np.random.default_rng(2), lambda: 1.0)
    buffer.apply_until(1.0)
    written = np.flatnonzero(guest.version)
    assert written.size and written.max() < 8
    assert (guest.version[written] > 3).any() and (guest.version[written] <= 3).any()
    for p in written:
        held = any((guest.memory[p] == v[i][p]).all() for i in (0, 1, 2))
        assert held == (guest.version[p] <= 3 or p == 5)
    for p in np.setdiff1d(np.arange(pages), written):
        assert (guest.memory[p] == v[0][p]).all()


def test_scattered_writes_are_recognised(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    first = rng.integers(1, 256, size=(64, PAGE), dtype=np.uint8)
    second = first.copy()
    second[:, ::256] ^= 0x55  # 16 single bytes a page
    write_capture(tmp_path / "c", [np.arange(64), np.arange(64)], [0.0, 1.0], 64,
                  content=[first, second])
    fitted = fit(tmp_path / "c")
    assert (fitted.write_size, fitted.write_pattern) == (16, "scattered")


@pytest.mark.parametrize(("damage", "problem"), [
    ("missing", "no such capture folder"),
    ("no-records", "records.parquet is missing"),
    ("garbage", "damaged capture"),
    ("size", "the capture is of 1048576 bytes of RAM"),
    ("block", "RAMBlocks the stream did not announce"),
])
def test_bad_capture_folders_are_one_line(tmp_path: Path, damage: str, problem: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "c"
    if damage != "missing":
        write_capture(folder, [np.arange(256)], [0.0], 256,
                      block="other" if damage == "block" else "pc.ram")
    memory = 2 * 256 * PAGE if damage == "size" else 256 * PAGE
    if damage == "block":  # records name a block, the stream-start event another
        detail = json.dumps({"blocks": {"pc.ram": 256 * PAGE}})
        pd.DataFrame({"event": ["stream-start"], "detail": [detail]}).to_parquet(
            folder / "events.parquet")
    if damage == "no-records":
        (folder / "records.parquet").unlink()
    if damage == "garbage":
        (folder / "records.parquet").write_bytes(b"not parquet at all")
    path = replay_scenario(tmp_path, "c", memory)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    line = str(err.value)
    assert line.startswith(f"{path}:3: workload.capture: ")
    assert problem in line and "\n" not in line
    assert cli.main(["check", str(path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_capture_paths_are_relative_to_the_scenario_or_to_the_working_folder_for_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rates = np.full(64, 1.0)
    equal_interval_capture(tmp_path / "here" / "c", rates, 0.5, 4)
    equal_interval_capture(tmp_path / "there" / "d", rates, 0.5, 4)
    path = replay_scenario(tmp_path / "here", "c", 64 * PAGE)
    assert load_scenario(path).workload.capture == str(tmp_path / "here" / "c")
    # a results folder's scenario.yaml names it absolutely, so it loads from anywhere
    monkeypatch.chdir(tmp_path / "here")
    assert Path(load_scenario(Path("s.yaml")).workload.capture or "").is_absolute()
    monkeypatch.chdir(tmp_path / "there")
    scenario = load_scenario(path, {"workload.capture": "d"})
    assert Path(scenario.workload.capture or "").resolve() == (tmp_path / "there" / "d").resolve()


def test_two_blocks_are_laid_end_to_end(tmp_path: Path) -> None:
    """Pages of the second RAMBlock follow the first's in the replayed guest."""
    folder = write_capture(tmp_path / "c", [np.arange(8), np.arange(2)], [0.0, 1.0], 8)
    frame = pd.read_parquet(folder / "records.parquet")
    frame.loc[[0, 1, 2, 3, 6, 7], "kind"] = "zero"  # never touched: not in the region's pool
    frame["block"] = ["pc.ram"] * 4 + ["vga.vram"] * 4 + ["vga.vram"] * 2
    frame["page"] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    frame.to_parquet(folder / "records.parquet", index=False)
    detail = json.dumps({"blocks": {"pc.ram": 4 * PAGE, "vga.vram": 4 * PAGE}})
    pd.DataFrame({"event": ["stream-start"], "detail": [detail]}).to_parquet(
        folder / "events.parquet")
    fitted = fit(folder)
    assert fitted.memory == 8 * PAGE
    assert (fitted.rates[4:6] > 0).all() and (fitted.rates[[0, 1, 2, 3, 6, 7]] == 0).all()


@pytest.mark.slow
def test_a_real_capture_replayed_at_its_own_settings(tmp_path: Path) -> None:
    """The validation guest migrated from a real QEMU 7.2 into `capture` (64 MiB, 32 MiB/s,
    100 ms; tests/test_capture.py), fitted and replayed at the same settings: the run's totals
    come within the issue's 15% of the real ones (measured over 4 captures: total time 1.00 to
    1.10 s against 1.10 to 1.11 s, normal pages 8892 to 9543 against 9617 to 9657; two replays in
    four stopped a sync earlier). Scan rounds and syncs split the passes differently, so only
    totals are compared. The device state (300 KiB) is set by hand, not from the capture."""
    import asyncio
    import tempfile

    from tests import test_capture

    if not test_capture._real_qemu_available():
        pytest.skip("needs qemu-system-x86_64, GNU as/ld and qemu.qmp")
    from sim.capture import write

    with tempfile.TemporaryDirectory(prefix="migsim-rep-") as tmp:  # short unix socket paths
        cap, final, _, _ = asyncio.run(test_capture._real_capture(Path(tmp), (), forward=False))
    assert cap.error is None and final.get("status") == "completed"
    write(cap, tmp_path / "cap", None)
    memory = fit(tmp_path / "cap").memory
    path = tmp_path / "s.yaml"
    path.write_text(f"name: real\nvm: {{memory: {memory}B, device_state: 300KiB}}\n"
                    "workload: {kind: replay, capture: cap}\n"
                    "migration: {max_bandwidth: 32MiB/s, downtime_limit: 100ms}\n")
    replayed = run(load_scenario(path)).runs.iloc[0]
    ram = final["ram"]
    assert replayed.status == "completed"
    assert replayed.total_time_s == pytest.approx(final["total-time"] / 1000, rel=0.15)
    assert replayed.normal_pages == pytest.approx(ram["normal"], rel=0.15)
    assert replayed.zero_pages == pytest.approx(ram["duplicate"], rel=0.01)
    assert replayed.transferred_bytes == pytest.approx(ram["transferred"], rel=0.15)
