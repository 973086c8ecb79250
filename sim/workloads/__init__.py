"""Workloads: how a guest's vCPUs write its memory over simulated time.

A workload turns a spec into page writes. Writes arrive at a steady rate (``writes_per_s`` scaled
by the CPU share auto-converge leaves the guest): write number ``k`` of the run happens when the
cumulative write count crosses ``k``. So the arrival process is deterministic and the closed forms
of the papers (a constant dirty rate) hold exactly; randomness is only in *which* page is written,
drawn from the run's one ``numpy.random.Generator``. The exception is ``replay``, whose writes
are Poisson at rates fitted from a capture (:mod:`sim.replay`).

Everything is vectorised: a call returns arrays for all writes in an interval, never a loop per
write. ``WORKLOADS`` is the registry (name → class); an unknown name lists the valid ones.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ScenarioError
from ..spec import WorkloadSpec
from .draws import KIND_HOTSPOT, KIND_UNIFORM, MAX_RANGE

__all__ = ["WORKLOADS", "Workload", "WriteBatch", "make_workload", "sized_row"]


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Writes in one interval, in time order: ``t_s[i]`` is when page ``page[i]`` was written."""

    t_s: np.ndarray  # float64
    page: np.ndarray  # int64

    @staticmethod
    def empty() -> WriteBatch:
        return WriteBatch(np.empty(0, np.float64), np.empty(0, np.int64))

    def __len__(self) -> int:
        return int(self.t_s.size)


class Workload:
    """Base class: a steady write clock plus a rule that maps write numbers to pages.

    Subclasses implement :meth:`_pages` (which page write number ``k`` touches).
    """

    name: ClassVar[str] = "base"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        self.spec = spec
        self.pages = pages
        self.page_size = page_size
        first, count = _region_pages(spec, pages, page_size)
        self.first_page = first
        self.region_pages = count
        self._count = 0.0  # cumulative writes (fractional) up to self._t
        self._t = 0.0

    @property
    def writes_per_s(self) -> float:
        return self.spec.writes_per_s

    @property
    def peak_writes_per_s(self) -> float:
        """The most writes a second this workload draws, before throttling (bounds how many
        writes an interval holds)."""
        return self.writes_per_s

    def writes(self, t0: float, t1: float, rng: np.random.Generator,
               rate_scale: float = 1.0) -> WriteBatch:
        """All writes in ``[t0, t1)``; calls must tile time without gaps or overlap."""
        if t0 != self._t:
            raise ValueError(f"workload asked for [{t0}, {t1}) but its clock is at {self._t}")
        rate = self.writes_per_s * rate_scale
        c0 = self._count
        c1 = c0 + rate * (t1 - t0)
        self._t, self._count = t1, c1
        k0 = math.ceil(c0)
        k1 = math.ceil(c1)
        if k1 <= k0 or rate <= 0.0:
            return WriteBatch.empty()
        k = np.arange(k0, k1, dtype=np.int64)
        t = t0 + (k - c0) / rate
        return WriteBatch(t, self._pages(k, rng))

    #: uint8[rows, page_size]: page contents a write may set (a replay's captured versions)
    content_versions: np.ndarray = np.zeros((1, 8), np.uint8)

    def prepare(self, guest: Any) -> None:
        """Set the guest's memory before the run (a replay starts from the captured content);
        the synthetic workloads leave it as the VM spec drew it."""

    def content_rows(self, page: np.ndarray) -> np.ndarray | None:
        """For writes to ``page`` (in time order), the row of :attr:`content_versions` each sets
        its page to in exact mode (-1: the write pattern changes it; below -1, the pattern with
        a size of its own, :func:`sized_row`); None: none do."""
        return None

    def resume_at(self, t: float) -> None:
        """Move the clock to ``t`` with no writes in between (a phase that was not running)."""
        self._t = t

    @property
    def clock_count(self) -> float:
        """The cumulative (fractional) write count at the clock's time."""
        return self._count

    def advance_clock(self, t: float, count: float) -> None:
        """The writes up to ``t`` were drawn elsewhere (:mod:`sim.workloads.draws`)."""
        self._t, self._count = t, count

    def steady_params(self) -> np.ndarray | None:
        """What :func:`sim.workloads.draws.steady_writes` needs to draw this workload's writes
        in compiled code (the same values as :meth:`writes`), or None if it cannot."""
        return None

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


def _region_pages(spec: WorkloadSpec, pages: int, page_size: int) -> tuple[int, int]:
    if spec.region is None:
        return 0, pages
    first = spec.region.offset // page_size
    last = -(-(spec.region.offset + spec.region.size) // page_size)
    return min(first, pages - 1), max(1, min(last, pages) - min(first, pages - 1))


class Idle(Workload):
    """Writes nothing: the closed form M/B holds exactly."""

    name = "idle"

    @property
    def writes_per_s(self) -> float:
        return 0.0

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.empty(0, np.int64)


class Uniform(Workload):
    """Each write picks a page uniformly at random in the region."""

    name = "uniform"

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.first_page + rng.integers(0, self.region_pages, size=k.size, dtype=np.int64)

    def steady_params(self) -> np.ndarray | None:
        return _steady(KIND_UNIFORM, self, self.region_pages, 0.0)


class Hotspot(Workload):
    """A share ``hot_probability`` of writes go to the first ``hot_set`` bytes of the region; the
    rest are uniform over the whole region."""

    name = "hotspot"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        super().__init__(spec, pages, page_size)
        hot = spec.hot_set if spec.hot_set is not None else self.region_pages * page_size // 16
        self.hot_pages = int(min(self.region_pages, max(1, hot // page_size)))

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hot = rng.random(k.size) < self.spec.hot_probability
        where = np.where(hot, rng.integers(0, self.hot_pages, size=k.size),
                         rng.integers(0, self.region_pages, size=k.size))
        return self.first_page + where.astype(np.int64)

    def steady_params(self) -> np.ndarray | None:
        return _steady(KIND_HOTSPOT, self, self.hot_pages, self.spec.hot_probability)


def _steady(kind: int, workload: Workload, hot_pages: int, p_hot: float) -> np.ndarray | None:
    """:func:`sim.workloads.draws.steady_writes`'s parameters (None: a range numpy draws with
    64-bit integers, which the compiled draws do not reproduce)."""
    if type(workload) not in (Uniform, Hotspot) or max(workload.region_pages, hot_pages) - 1 > MAX_RANGE:
        return None
    return np.array([kind, workload.first_page, workload.region_pages, hot_pages, p_hot,
                     workload.writes_per_s], np.float64)


class Zipf(Workload):
    """Page popularity follows a bounded Zipf law with exponent ``zipf_exponent``.

    Ranks are spread over the region by a fixed affine permutation (rank·a + b mod n, a coprime to
    n), so popular pages are not all adjacent and no permutation array of guest size is stored.

    Ranks are drawn from numpy's unbounded Zipf law, refusing those beyond the region, while that
    keeps at least half the draws. With an exponent near 1 the law's tail is so heavy that almost
    every draw lies beyond a large region (s = 1.0001 over 16 M pages keeps about one in 600),
    and the draws are made by rejection-inversion instead (Hörmann and Derflinger, "Rejection-
    inversion to generate variates from monotone discrete distributions", ACM TOMACS 6(3), 1996),
    exact for the bounded law and keeping most draws whatever the exponent. Both give the same
    law; the choice only keeps the work per write bounded.
    """

    name = "zipf"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        super().__init__(spec, pages, page_size)
        n = self.region_pages
        a = int(n * 0.6180339887) | 1
        while np.gcd(a, n) != 1:
            a += 2
        self._a = a % n if n > 1 else 1
        self._b = n // 3
        self._inversion = _kept_share(spec.zipf_exponent, n) < 0.5

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = self.region_pages
        draw_ranks = _inverted_ranks if self._inversion else _refused_ranks
        ranks = draw_ranks(self.spec.zipf_exponent, n, k.size, rng)
        return self.first_page + ((ranks - 1) * self._a + self._b) % n


def _refused_ranks(s: float, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """numpy's Zipf draws, those beyond ``n`` refused: a loop per batch, not per write."""
    ranks = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        draw = rng.zipf(s, size=2 * (size - filled) + 16)
        draw = draw[draw <= n][: size - filled]
        ranks[filled: filled + draw.size] = draw
        filled += draw.size
    return ranks


def _kept_share(s: float, n: int) -> float:
    """The share of numpy's unbounded Zipf(s) draws that fall in 1..n: H(n, s) / zeta(s), the sums
    past 1000 terms by Euler-Maclaurin (closer than 1e-6 for s > 1)."""
    head = np.arange(1, 1001, dtype=np.float64) ** -s
    def tail(m: float) -> float:  # sum over k > 1000 up to m of k^-s, by the integral
        return float(((m + 0.5) ** (1 - s) - 1000.5 ** (1 - s)) / (1 - s))
    zeta = float(head.sum()) + 1000.5 ** (1 - s) / (s - 1)
    bounded = float(head[:n].sum()) + (tail(n) if n > 1000 else 0.0)
    return bounded / zeta


def _inverted_ranks(s: float, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Rejection-inversion for the Zipf law on 1..n with weights k^-s (Hörmann and Derflinger,
    1996): invert the integral H of x^-s over [1.5, n + 0.5], round, and keep a rank k when
    the draw lies under the step of height k^-s (most do)."""
    def h_int(x: np.ndarray | float) -> np.ndarray:
        # (x^(1-s) - 1) / (1 - s), computed stably near s = 1
        lx = np.log(x)
        t = (1 - s) * lx
        return np.where(np.abs(t) > 1e-8, np.expm1(t) / np.where(t == 0, 1, t), 1 + t / 2) * lx

    def h_inv(y: np.ndarray) -> np.ndarray:
        t = np.maximum(y * (1 - s), -1 + 1e-16)
        return np.exp(np.where(np.abs(t) > 1e-8, np.log1p(t) / np.where(t == 0, 1, t),
                               1 - t / 2) * y)

    lo = float(h_int(1.5)) - 1.0  # the first rank's step is h(1) = 1 wide
    hi = float(h_int(n + 0.5))
    squeeze = 2 - float(h_inv(h_int(2.5) - 2.0 ** -s))
    ranks = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        want = size - filled
        u = hi + rng.random(want + want // 8 + 16) * (lo - hi)
        x = h_inv(u)
        k = np.clip(np.floor(x + 0.5), 1, n)
        keep = (k - x <= squeeze) | (u >= h_int(k + 0.5) - k ** -s)
        got = k[keep][:want].astype(np.int64)
        ranks[filled: filled + got.size] = got
        filled += got.size
    return ranks


class Sequential(Workload):
    """Write ``k`` touches page ``(position + k · stride) mod region``: distinct pages in
    address order, from ``position`` bytes into the region."""

    name = "sequential"

    def _pages(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        stride = self.spec.stride if self.spec.stride is not None else self.page_size
        offset = (self.spec.position + k * stride) % (self.region_pages * self.page_size)
        return self.first_page + offset // self.page_size


#: A trace file larger than this, or with more rows, is refused (it would not fit in memory).
MAX_TRACE_BYTES = 1 << 30
MAX_TRACE_ROWS = 100_000_000
TRACE_CHUNK_ROWS = 1_000_000


def check_trace_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a trace that is not a regular file (``/dev/zero``, a FIFO, a folder) or is larger
    than MAX_TRACE_BYTES, without reading it. Raises ScenarioError naming the file."""
    trace = Path(path)
    try:
        st = os.stat(trace)
    except FileNotFoundError:
        raise  # as open() would: the runs table names it FileNotFoundError
    except OSError as err:
        raise ScenarioError(f"cannot read the trace: {err.strerror or err}", file=str(trace)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError("the trace is not a regular file (a device, FIFO or folder)",
                            file=str(trace))
    if st.st_size > MAX_TRACE_BYTES:
        raise ScenarioError(f"the trace is {st.st_size} bytes; at most {MAX_TRACE_BYTES} "
                            f"(1 GiB) are read", file=str(trace))
    return trace


def read_trace(path: str | os.PathLike[str], pages: int) -> tuple[np.ndarray, np.ndarray]:
    """The (times, pages) of a dirty-log trace, checked row by row, read in chunks.

    Every ``t_s`` is a finite number >= 0 and not before the previous row's; every ``page`` an
    integer in [0, pages). A bad row raises ScenarioError ``file:row: column: problem`` (the row
    is the CSV file's line, or the Parquet row counted from 1).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    trace = check_trace_file(path)
    name = str(path)
    times: list[np.ndarray] = []
    page_parts: list[np.ndarray] = []
    rows = 0
    last = 0.0
    try:
        if trace.suffix == ".parquet":
            reader = pq.ParquetFile(trace)
            if reader.metadata.num_rows > MAX_TRACE_ROWS:
                raise ScenarioError(f"the trace has {reader.metadata.num_rows} rows; at most "
                                    f"{MAX_TRACE_ROWS} are read", file=name)
            chunks: Any = (b.to_pandas() for b in reader.iter_batches(TRACE_CHUNK_ROWS))
            first_row = 1
        else:
            chunks = pd.read_csv(trace, chunksize=TRACE_CHUNK_ROWS, dtype=str)
            first_row = 2  # line 1 is the header
        for frame in chunks:
            for column in ("t_s", "page"):
                if column not in frame.columns:
                    raise ScenarioError(f"missing column (columns: {', '.join(map(str, frame.columns))})",
                                        file=name, key=column)
            start = first_row + rows
            rows += len(frame)
            if rows > MAX_TRACE_ROWS:
                raise ScenarioError(f"more than {MAX_TRACE_ROWS} rows", file=name)
            t = pd.to_numeric(frame["t_s"], errors="coerce").to_numpy(np.float64)
            p = pd.to_numeric(frame["page"], errors="coerce").to_numpy(np.float64)

            def bad(mask: np.ndarray, column: str, problem: str,
                    frame: Any = frame, start: int = start) -> None:
                if mask.any():
                    i = int(np.argmax(mask))
                    raise ScenarioError(f"{problem} (got {frame[column].iloc[i]!s})",
                                        file=name, line=start + i, key=column)

            bad(~np.isfinite(t), "t_s", "must be a finite number of seconds")
            bad(t < 0, "t_s", "must be >= 0")
            previous = np.concatenate([[last], t[:-1]])
            bad(t < previous, "t_s", "times must not decrease (sort the trace by t_s)")
            bad(~np.isfinite(p), "page", "must be a page number")
            bad(p != np.floor(p), "page", "must be an integer page number")
            bad(p < 0, "page", "must be >= 0")
            bad(p >= pages, "page", f"must be below the guest's {pages} pages")
            if t.size:
                last = float(t[-1])
            times.append(t)
            page_parts.append(p.astype(np.int64))
    except ScenarioError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ScenarioError(f"cannot read the trace: {' '.join(str(err).split())}",
                            file=name) from None
    if not times:
        return np.empty(0, np.float64), np.empty(0, np.int64)
    return np.concatenate(times), np.concatenate(page_parts)


class Trace(Workload):
    """Replays a recorded dirty log (CSV or Parquet with columns ``t_s, page``)."""

    name = "trace"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        super().__init__(spec, pages, page_size)
        self._times, self._trace_pages = read_trace(spec.trace or "", pages)

    @property
    def peak_writes_per_s(self) -> float:
        return 0.0  # the trace is in memory already: its intervals are slices of it

    def writes(self, t0: float, t1: float, rng: np.random.Generator,
               rate_scale: float = 1.0) -> WriteBatch:
        # Throttling stretches a trace in time only approximately: we thin it by rate_scale.
        lo, hi = np.searchsorted(self._times, [t0, t1], side="left")
        t, p = self._times[lo:hi], self._trace_pages[lo:hi]
        self._t = t1
        if rate_scale < 1.0 and t.size:
            keep = rng.random(t.size) < rate_scale
            t, p = t[keep], p[keep]
        return WriteBatch(t, p)


def sized_row(size: np.ndarray) -> np.ndarray:
    """The :meth:`Workload.content_rows` entry of writes that change ``size`` bytes in the
    workload's pattern instead of its ``write_size`` (-1): ``-2 - size``; the kernel decodes it
    (:func:`sim.engine.kernel._apply_write`)."""
    return -2 - np.asarray(size, np.int64)


class Replay(Workload):
    """Writes drawn from per-page Poisson rates fitted from a ``migsim capture`` folder
    (:mod:`sim.replay`): the total is Poisson with the summed rate, each write's page is drawn
    with probability proportional to its rate, and throttling scales every rate."""

    name = "replay"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        super().__init__(spec, pages, page_size)
        from ..replay import CAPTURE_PAGE_BYTES, fit

        self.fit = fit(spec.capture or "")
        if page_size != CAPTURE_PAGE_BYTES or pages != self.fit.rates.size:
            raise ValueError(f"the capture is of {self.fit.memory} bytes of 4 KiB pages; "
                             f"the guest has {pages} pages of {page_size} bytes")
        self._total = self.fit.writes_per_s
        self._cumulative = np.cumsum(self.fit.rates)
        self._written: np.ndarray | None = None  # exact mode: writes so far, per page

    @property
    def writes_per_s(self) -> float:
        return self._total

    def writes(self, t0: float, t1: float, rng: np.random.Generator,
               rate_scale: float = 1.0) -> WriteBatch:
        if t0 != self._t:
            raise ValueError(f"workload asked for [{t0}, {t1}) but its clock is at {self._t}")
        self._t = t1
        mean = self._total * rate_scale * (t1 - t0)
        if mean <= 0.0:
            return WriteBatch.empty()
        n = int(rng.poisson(mean))
        t = np.sort(t0 + rng.random(n) * (t1 - t0))
        page = np.searchsorted(self._cumulative, rng.random(n) * self._total, side="right")
        return WriteBatch(t, np.minimum(page, self.pages - 1).astype(np.int64))

    def prepare(self, guest: Any) -> None:
        from ..replay import initial_content, read_versions

        if not (guest.exact and (self.fit.folder / "pages.zst").is_file()):
            guest.set_initial(self.fit.zero)
            return
        versions = read_versions(self.fit.folder)
        guest.set_initial(self.fit.zero, initial_content(self.fit, versions))
        if self.fit.later_rows.size:
            self.content_versions = versions
            self._written = np.zeros(self.pages, np.int64)

    def content_rows(self, page: np.ndarray) -> np.ndarray | None:
        """The row of the captured version each write sets, -1 for the fitted write pattern.

        The k-th write of a page (k < n, n: the versions captured after its first) sets its k-th
        later version. Past them a *silent* page (:attr:`sim.replay.Fit.silent`: its re-sends
        mostly held the bytes it had) keeps its last version, a store of the same bytes; any
        other page gets the fitted pattern with as many bytes as its own versions changed on
        median (:attr:`sim.replay.Fit.step_bytes`; a page of stress-ng's buffer 4 080, one of
        Redis's 7). Cycling back through the versions instead gave a page the very bytes it was
        last sent with every n writes, which XBZRLE skips: the stress-ng guest's replay skipped
        35% of its re-sent pages where QEMU skipped under 1%, and made its passes too short."""
        if self._written is None or not page.size:
            return None
        starts, rows = self.fit.later_start, self.fit.later_rows
        order = np.argsort(page, kind="stable")
        ordered = page[order]
        first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
        group_start = np.maximum.accumulate(np.where(first, np.arange(page.size), 0))
        nth = np.empty(page.size, np.int64)
        nth[order] = self._written[ordered] + np.arange(page.size) - group_start
        np.add.at(self._written, page, 1)
        count = starts[page + 1] - starts[page]
        out = np.full(page.size, -1, np.int64)
        has = nth < count
        out[has] = rows[starts[page[has]] + nth[has]]
        past = ~has & (count > 0)
        again = past & self.fit.silent[page]
        out[again] = rows[starts[page[again]] + count[again] - 1]
        own = past & ~again & (self.fit.step_bytes[page] > 0)
        out[own] = sized_row(self.fit.step_bytes[page[own]])
        return out


class Phased(Workload):
    """Runs ``phases`` one after another (each a workload for ``duration`` s), then repeats them."""

    name = "phased"

    def __init__(self, spec: WorkloadSpec, pages: int, page_size: int) -> None:
        super().__init__(spec, pages, page_size)
        self._phases = [make_workload(p.workload, pages, page_size) for p in spec.phases]
        self._durations = np.array([p.duration for p in spec.phases], np.float64)
        self._cycle = float(self._durations.sum())
        self._edges = np.concatenate([[0.0], np.cumsum(self._durations)])

    def writes(self, t0: float, t1: float, rng: np.random.Generator,
               rate_scale: float = 1.0) -> WriteBatch:
        self._t = t1
        if not self._phases or self._cycle <= 0.0:
            return WriteBatch.empty()
        times, pages = [], []
        t = t0
        while t < t1:
            n_cycle = np.floor(t / self._cycle)
            into = t - n_cycle * self._cycle
            i = min(int(np.searchsorted(self._edges, into, side="right")) - 1,
                    len(self._phases) - 1)
            end = min(t1, n_cycle * self._cycle + self._edges[i + 1])
            if end <= t:  # float edge: step past it
                end = min(t1, np.nextafter(t, np.inf))
            phase = self._phases[i]
            phase.resume_at(t)  # each phase keeps its own write count on the shared clock
            batch = phase.writes(t, end, rng, rate_scale)
            times.append(batch.t_s)
            pages.append(batch.page)
            t = end
        return WriteBatch(np.concatenate(times), np.concatenate(pages))

    @property
    def peak_writes_per_s(self) -> float:
        return max((p.peak_writes_per_s for p in self._phases), default=0.0)


WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (Idle, Uniform, Hotspot, Zipf, Sequential, Phased, Trace,
                               Replay)
}


def make_workload(spec: WorkloadSpec, pages: int, page_size: int) -> Workload:
    """Build the workload a spec names; an unknown kind lists the valid ones."""
    try:
        cls = WORKLOADS[spec.kind]
    except KeyError:
        raise ValueError(f"workload {spec.kind!r} is not known; choose one of: "
                         f"{', '.join(sorted(WORKLOADS))}") from None
    return cls(spec, pages, page_size)
