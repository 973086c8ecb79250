"""Replay: per-page write behaviour fitted from a ``migsim capture`` folder.

A capture (:mod:`sim.capture`) shows, for each pass of a real pre-copy migration, which pages
QEMU sent. A page sent in pass ``k + 1`` (``k >= 1``) was written between the dirty-bitmap sync
that started pass ``k`` and the one that started pass ``k + 1`` (``migration/ram.c``: each sync
collects the pages written since the previous one). Interval ``j`` (``j = 1 .. K - 1`` for ``K``
passes) runs from the first record of pass ``j`` to the first record of pass ``j + 1``; its
length is ``d_j``. The last pass is left out when there are three or more: it holds the pages
written between the last sync before the stop (QEMU syncs when the pending bytes fall below the
threshold, often inside a round, at a time the stream does not show) and the stop, not those of
a whole interval.

**Model.** Each page is written by an independent Poisson process of constant rate ``rate_i``;
it is sent again in pass ``j + 1`` when it was written at least once in interval ``j``:
probability ``1 - exp(-rate_i d_j)``. The rates are fitted by :mod:`sim.replay_rates`: pooled
by 2 MiB region (one maximum-likelihood rate for a region's pages that held data, seen dirty or
not, so the unseen part of a working set is written too), with the pages a region's rate cannot
explain (hot pages, by a likelihood-ratio test) fitted on their own and those it makes
improbably clean (cold pages) left unwritten. The fitted ``D(d)`` (distinct pages written in an
interval of length ``d``) approximately reproduces the capture's within its interval lengths; beyond, it is
the regions' extrapolation (its limits: :mod:`sim.replay_rates`).

**Limits.** The first pass sends every page and tells nothing about writes. A write absorbed
before its page was sent in the same pass (QEMU clears the KVM log by chunks just before sending,
``clear-bitmap-shift``) is invisible, so rates are low by up to that share. Rates are averages
over the capture (bursts and phases are smoothed) and pages are independent (no correlation of
writes in time). Interval boundaries are the first record of each pass, not the sync
itself (the sync's duration is counted in the interval).

**Bytes per write.** With ``pages.zst``, consecutive captured versions of a page are compared:
the median of changed bytes gives ``write_size`` and the median length of a changed run gives
``write_pattern`` (``clustered`` when runs are 2 bytes or longer on median, else
``scattered``). Only pairs of pages written about once per interval (``rate_i d <= 1``) are used
when there are any, since a diff holds every write of its interval.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .replay_rates import fit_rates

#: the capture's page size (QEMU's TARGET_PAGE_SIZE on x86, what ``migsim capture`` records)
CAPTURE_PAGE_BYTES = 4096
#: version pairs compared for the write size (the first in record order)
MAX_DIFF_PAIRS = 20_000
CONTENT_KINDS = ("page", "xbzrle", "compressed")


class CaptureError(ValueError):
    """The capture folder is missing or damaged; ``str(err)`` is the problem (no location)."""


@dataclass(frozen=True)
class Fit:
    """What a replay needs from one capture."""

    folder: Path
    memory: int  # bytes: the sum of the RAMBlocks' used lengths (QEMU's ``ram.total``)
    rates: np.ndarray  # float64[pages]: writes per second of each page
    first_version: np.ndarray  # int64[pages]: row of pages.zst of each page's first record, -1: zero
    zero: np.ndarray  # bool[pages]: page zero at the start (first record zero, or never sent)
    # each page's captured versions after its first, in time order: rows of pages.zst
    # later_rows[later_start[i]:later_start[i + 1]] (CSR)
    later_start: np.ndarray  # int64[pages + 1]
    later_rows: np.ndarray  # int64
    # bool[pages]: most of the page's re-sends carried the bytes it had before (same-byte stores)
    silent: np.ndarray
    # int64[pages]: median bytes changed between the page's consecutive versions (0: none did)
    step_bytes: np.ndarray
    intervals: int  # sync intervals the rates were fitted on (passes - 1)
    covered_s: float  # their total length
    write_size: int | None  # from pages.zst (None without it)
    write_pattern: str | None

    @property
    def writes_per_s(self) -> float:
        return float(self.rates.sum())


def fit(folder: str | os.PathLike[str]) -> Fit:
    """The fitted behaviour of the capture in ``folder`` (cached while its files are unchanged).

    Raises CaptureError for a missing or damaged folder."""
    path = Path(folder)
    try:
        stamp = tuple((path / f).stat().st_mtime_ns if (path / f).exists() else 0
                      for f in ("records.parquet", "events.parquet", "pages.zst"))
    except OSError as err:
        raise CaptureError(f"cannot read the capture: {err.strerror or err}") from None
    return _fit(str(path.resolve()), stamp)


@functools.lru_cache(maxsize=4)
def _fit(folder: str, stamp: tuple[int, ...]) -> Fit:
    import pandas as pd
    import pyarrow as pa

    path = Path(folder)
    if not path.is_dir():
        raise CaptureError("no such capture folder")
    for name in ("records.parquet", "events.parquet"):
        if not (path / name).is_file():
            raise CaptureError(f"not a capture: {name} is missing")
    try:
        records = pd.read_parquet(path / "records.parquet")
        events = pd.read_parquet(path / "events.parquet")
    except (OSError, ValueError, pa.ArrowException) as err:
        raise CaptureError(f"damaged capture: {' '.join(str(err).split())[:200]}") from None
    missing = [c for c in ("t_s", "pass", "block", "page", "kind", "version")
               if c not in records.columns]
    if missing:
        raise CaptureError(f"records.parquet lacks the columns {', '.join(missing)}")
    offsets, memory = _blocks(events)
    block = records["block"].astype(str)
    unknown = sorted(set(block.unique()) - set(offsets))
    if unknown:
        raise CaptureError(f"records.parquet names RAMBlocks the stream did not announce: "
                           f"{', '.join(unknown[:3])}")
    pages = memory // CAPTURE_PAGE_BYTES
    start = block.map(offsets).to_numpy(np.int64)
    page = start + records["page"].to_numpy(np.int64)
    t = records["t_s"].to_numpy(np.float64)
    number = records["pass"].to_numpy(np.int64)
    kind = records["kind"].astype(str).to_numpy()
    version = records["version"].to_numpy(np.int64)
    if page.size and (page.min() < 0 or page.max() >= pages):
        raise CaptureError("records.parquet has a page beyond its RAMBlock")
    if not np.isfinite(t).all():
        raise CaptureError("records.parquet has a t_s that is not a finite number")

    first_version = np.full(pages, -1, np.int64)
    zero = np.ones(pages, np.bool_)
    later_start = np.zeros(pages + 1, np.int64)
    later_rows = np.empty(0, np.int64)
    if page.size:
        order = np.lexsort((t, page))  # by page, then time
        is_first = np.concatenate([[True], page[order][1:] != page[order][:-1]])
        firsts = order[is_first]
        is_content = np.isin(kind[firsts], CONTENT_KINDS)
        zero[page[firsts]] = ~is_content
        first_version[page[firsts]] = np.where(is_content, version[firsts], -1)
        later = order[~is_first & (version[order] >= 0)]
        later_rows = version[later]
        later_start[1:] = np.cumsum(np.bincount(page[later], minlength=pages))
    dirty_page, d, intervals, covered = _dirty_pairs(page, number, t)
    rates, _ = fit_rates(dirty_page, d, covered, intervals, ~zero)
    size, pattern = None, None
    silent, step = np.zeros(pages, np.bool_), np.zeros(pages, np.int64)
    if (path / "pages.zst").is_file():
        versions = read_versions(path)
        if version.max(initial=-1) >= versions.shape[0]:
            raise CaptureError("records.parquet names a version beyond pages.zst")
        size, pattern = _write_size(page, t, kind, version, versions, rates,
                                    covered / max(intervals, 1))
        silent, step = _page_steps(page, t, kind, version, versions, pages)
    return Fit(path, memory, rates, first_version, zero, later_start, later_rows, silent, step,
               intervals, covered, size, pattern)


def _blocks(events: object) -> tuple[dict[str, int], int]:
    """Each RAMBlock's first byte in the replayed guest (in the stream's MEM_SIZE order) and the
    total, from the ``stream-start`` event."""
    import pandas as pd

    assert isinstance(events, pd.DataFrame)
    rows = events[events.get("event", pd.Series(dtype=str)) == "stream-start"]
    if not len(rows):
        raise CaptureError("events.parquet has no stream-start event (the RAMBlocks)")
    try:
        blocks = json.loads(str(rows["detail"].iloc[0]))["blocks"]
        sizes = {str(k): int(v) for k, v in blocks.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CaptureError("the stream-start event does not list the RAMBlocks") from None
    if not sizes or any(v <= 0 or v % CAPTURE_PAGE_BYTES for v in sizes.values()):
        raise CaptureError("the RAMBlocks must have sizes in whole 4 KiB pages")
    offsets, at = {}, 0
    for name, used in sizes.items():
        offsets[name] = at // CAPTURE_PAGE_BYTES
        at += used
    return offsets, at


def _dirty_pairs(page: np.ndarray, number: np.ndarray,
                 t: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(page, interval length) of every record that shows a page dirty in a sync interval, the
    number of intervals and their total length (module docstring)."""
    none = (np.empty(0, np.int64), np.empty(0, np.float64), 0, 0.0)
    passes = np.unique(number)
    if passes.size < 2:
        return none
    starts = np.array([t[number == p].min() for p in passes])  # a loop per pass, not per page
    starts = np.maximum.accumulate(starts)
    lengths = np.diff(starts)
    if passes.size > 2:  # the last pass: written between an unseen sync and the stop
        lengths = lengths[:-1]
    covered = float(lengths.sum())
    if covered <= 0.0:
        return none
    later = (number != passes[0]) & (np.searchsorted(passes, number) <= lengths.size)
    interval = np.searchsorted(passes, number[later]) - 1  # pass k + 1 -> interval k
    dirty_page = page[later]
    d = lengths[interval]
    keep = d > 0
    return dirty_page[keep], d[keep], int(lengths.size), covered


def _write_size(page: np.ndarray, t: np.ndarray, kind: np.ndarray, version: np.ndarray,
                versions: np.ndarray, rates: np.ndarray, interval_s: float
                ) -> tuple[int | None, str | None]:
    """Median changed bytes and the pattern of consecutive captured versions of a page."""
    owner, old_row, new_row = _content_pairs(page, t, kind, version)
    rare = rates[owner] * interval_s <= 1.0
    idx = np.flatnonzero(rare) if rare.any() else np.arange(owner.size)
    idx = idx[:MAX_DIFF_PAIRS]
    if not idx.size:
        return None, None
    new = versions[new_row[idx]]
    prev_v = old_row[idx]
    old = np.where((prev_v >= 0)[:, None], versions[np.maximum(prev_v, 0)], 0).astype(np.uint8)
    changed = new != old
    count = changed.sum(axis=1)
    runs = (changed[:, 0].astype(np.int64)
            + (changed[:, 1:] & ~changed[:, :-1]).sum(axis=1))
    written = count > 0
    if not written.any():
        return None, None
    size = int(np.clip(np.median(count[written]), 1, CAPTURE_PAGE_BYTES))
    run_length = float(np.median(count[written] / runs[written]))
    return size, "clustered" if run_length >= 2.0 else "scattered"


def _content_pairs(page: np.ndarray, t: np.ndarray, kind: np.ndarray, version: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive captured versions of one page: (page, previous row or -1 for a zero record,
    row), in (page, time) order."""
    order = np.lexsort((t, page))
    p, v, k = page[order], version[order], kind[order]
    pair = (p[1:] == p[:-1]) & (v[1:] >= 0) & ((v[:-1] >= 0) | (k[:-1] == "zero"))
    idx = np.flatnonzero(pair)
    return p[idx + 1], v[idx], v[idx + 1]


def _page_steps(page: np.ndarray, t: np.ndarray, kind: np.ndarray, version: np.ndarray,
                versions: np.ndarray, pages: int) -> tuple[np.ndarray, np.ndarray]:
    """Per page, from its consecutive captured versions: (silent, step bytes).

    *Silent*: most re-sends held exactly the bytes of the version before. The dirty log marks a
    page on any store, so a store of the bytes already there (a clock or flag rewritten with its
    value) makes QEMU send an unchanged page, which XBZRLE then skips: 72% of the Redis guest's
    re-sent pages, 28% of memcached's, under 1% of stress-ng's. *Step bytes*: the median count
    of bytes that changed, over the pairs that changed (0 when none did): 7 on median for
    Redis's pages, 4 080 for stress-ng's buffer, whose pages are rewritten whole."""
    owner, old, new = _content_pairs(page, t, kind, version)
    changed = np.empty(owner.size, np.int64)
    block = 4096  # pairs compared at once (2 x 16 MiB of page bytes)
    for lo in range(0, owner.size, block):
        o, n = old[lo:lo + block], versions[new[lo:lo + block]]
        before = np.where((o >= 0)[:, None], versions[np.maximum(o, 0)], 0)
        changed[lo:lo + block] = (n != before).sum(axis=1)
    pairs = np.bincount(owner, minlength=pages)
    silent = 2 * np.bincount(owner, weights=changed == 0, minlength=pages) > pairs
    step = np.zeros(pages, np.int64)
    moved = changed > 0
    if moved.any():  # the median of each page's changed pairs: sort by (page, bytes)
        o, c = owner[moved], changed[moved]
        order = np.lexsort((c, o))
        o, c = o[order], c[order]
        first = np.searchsorted(o, np.unique(o))
        count = np.diff(np.append(first, o.size))
        step[o[first]] = c[first + (count - 1) // 2]
    return silent, step


def read_versions(folder: Path) -> np.ndarray:
    """``pages.zst`` as uint8[versions, 4096] (rows named by ``records.version``)."""
    import zstandard

    try:
        with open(folder / "pages.zst", "rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f).readall()
    except (OSError, zstandard.ZstdError) as err:
        raise CaptureError(f"damaged pages.zst: {err}") from None
    if len(data) % CAPTURE_PAGE_BYTES:
        raise CaptureError("damaged pages.zst: not a whole number of 4 KiB pages")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, CAPTURE_PAGE_BYTES)


def initial_content(fitted: Fit, versions: np.ndarray) -> np.ndarray:
    """uint8[pages, 4096]: each page's first captured version (zero where none); ``versions``
    is ``pages.zst`` (:func:`read_versions`)."""
    memory = np.zeros((fitted.first_version.size, CAPTURE_PAGE_BYTES), np.uint8)
    has = fitted.first_version >= 0
    memory[has] = versions[fitted.first_version[has]]
    return memory


__all__ = ["CAPTURE_PAGE_BYTES", "CaptureError", "Fit", "fit", "initial_content", "read_versions"]
