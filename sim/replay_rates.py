"""The per-page write rates of a replay, fitted from a capture's dirty sets (:mod:`sim.replay`).

Input: the sync intervals ``j = 1 .. m`` of a capture (lengths ``d_j``) and, for each, the set of
pages found dirty in it (sent again in the next pass). Each page is written by a Poisson process
of constant rate; it is dirty in interval ``j`` with probability ``1 - exp(-r d_j)``.

**Why not one rate per page alone.** A page's own record (dirty in ``n`` of ``m`` intervals)
says little when ``m`` is small, and a capture at QEMU's defaults has one or two intervals. Worse,
a page never seen dirty gets rate 0, so the fit knows only the pages written within the longest
interval: its number of distinct pages dirtied in an interval of length ``d``,
``D(d) = sum_i (1 - exp(-r_i d))``, stops growing past the recorded intervals. A real guest's
``D(d)`` keeps growing (Redis, 256 MiB guest, QEMU 7.2: 1 414 pages in 1.26 s, 3 106 in 3.3 s,
5 275 in 6.7 s), and ``D(d)`` at the intervals of a slower migration is what decides its
convergence, so a replay at a tighter bandwidth came out far too easy.

**The model.** Pages are pooled by region of :data:`REGION_PAGES` pages (2 MiB, the x86 huge
page; Linux hands out physical memory in such blocks, so an application's working set fills
regions, and the unseen pages of a region its writes hit are likely written too, more slowly):

* *warm pages*: every candidate page of a region (one that held data when first sent, or was
  ever dirty) shares one rate ``u_R``, the region's maximum-likelihood rate:
  ``sum over its dirty (page, interval) pairs of d_j / (exp(u d_j) - 1) = its candidates' clean
  time`` (plus half a mean interval of clean time per region, so that a region dirty everywhere
  has a finite rate). With one interval this reproduces the region's dirty count exactly:
  ``1 - exp(-u d) =`` the share of its candidates that were dirty.
* *hot pages*: a page whose record the region's rate cannot explain, by a likelihood-ratio test
  (twice the log-likelihood of its own maximum-likelihood rate over that of ``u_R`` above
  :data:`HOT_LR`, a 1% test of one degree of freedom), is fitted on its own (the per-page root
  of the same equation, with half a mean interval of clean time: :func:`page_rates`), and the
  regions are refitted without it. With one interval, a dirty page is hot when its region's
  share of dirty candidates is below ``exp(-HOT_LR / 2)`` (3.7%): the few pages a kernel keeps
  hot in a region of other data.
* *cold pages*: a candidate never seen dirty whose region's rate makes that improbable (the
  same test: ``2 u_R T > HOT_LR`` over the capture's ``T`` seconds of intervals, a chance below
  1%) is not written, and the region is refitted without it. With few or short intervals the
  unseen pages of a region stay in its pool; with many, the pool shrinks to the pages seen.
* *long clean stretches*: a region's candidates in address order that run clean for longer
  than a random choice of its dirty pages would leave (:func:`long_gaps`: a chance below
  :data:`GAP_P` over the region) are memory the writes do not reach (the rest of a region
  around a buffer, a slab or a table written whole): they leave the pool and are not written.
  Removing them raises the share of dirty pages among the rest, so the test is repeated until
  nothing more leaves. A working set sampled at random over a region (Redis's heap) has no such
  stretch; memcached's written structures, blocks of 20-150 pages in regions of other data, are
  surrounded by them. Why it matters: pooled, those regions' dirty sets grow with the interval
  when the real ones do not (the memcached guest of the validation, 256 MiB, QEMU 7.2: 523
  pages dirty in 0.78 s, 576 in 5.6 s; pooled over whole regions, 2 111 fitted; now 870).
* Pages zero when first sent and never dirty (never touched) keep rate 0.

**Limits.** The regions' pooling is a guess about pages the capture never saw dirty: right for a
working set spread over whole regions (Redis, stress-ng's VM stressor), wrong for a fixed set of
pages scattered (not in blocks: those the gap test finds) inside regions that hold other,
unwritten data (the pooling then makes the set grow with ``d`` when it does not: the kernel's
hot pages, a few dozen per region). The gap test also cuts a region's pool where a working set
ends inside it, so a working set that grows into the rest of its region (fresh allocations next
to it) grows in the replay only where the capture saw it. Pages freshly allocated during the
capture (zero at their first send, then written) are pooled only where seen: a guest that keeps
allocating new memory dirties more than the replay. Rates are constant: bursts, phases and
periodic sweeps are averaged. Within the recorded interval lengths the fit reproduces ``D(d)``;
beyond them it is an extrapolation.
"""

from __future__ import annotations

import numpy as np

#: pages per pooling region (2 MiB of 4 KiB pages)
REGION_PAGES = 512
#: likelihood-ratio threshold above which a page is fitted on its own (chi-square, 1 dof, 1%)
HOT_LR = 6.63
#: a clean stretch this improbable under random writes is left out of its region's pool
GAP_P = 0.01
_BISECTIONS = 60


def _bisect(slot: np.ndarray, d: np.ndarray, clean: np.ndarray, lo_rate: float,
            hi_rate: float) -> np.ndarray:
    """For each group ``g``: the root ``r`` of ``sum over its dirty pairs of d / (exp(r d) - 1)
    = clean[g]`` (decreasing in ``r``), bisected on ``log r``. ``slot``: each dirty pair's
    group; groups with no dirty pair get ``lo_rate``."""
    groups = clean.size
    lo = np.full(groups, np.log(lo_rate))
    hi = np.full(groups, np.log(hi_rate))
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        x = np.exp(mid)[slot] * d
        f = np.bincount(slot, weights=d / np.expm1(np.clip(x, 1e-300, 700.0)),
                        minlength=groups) - clean
        lo = np.where(f > 0, mid, lo)
        hi = np.where(f > 0, hi, mid)
    return np.exp((lo + hi) / 2)


def _loglik(rate: np.ndarray, slot: np.ndarray, d: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Each group's Poisson log-likelihood of its dirty pairs and clean time at ``rate``."""
    x = np.clip(rate[slot] * d, 1e-300, 700.0)
    return np.bincount(slot, weights=np.log(-np.expm1(-x)), minlength=clean.size) - rate * clean


def page_rates(dirty_page: np.ndarray, d: np.ndarray, covered: float, intervals: int,
               pages: int) -> np.ndarray:
    """Each page's own rate: the root with half a mean interval of pseudo clean time (finite
    for a page dirty in every interval; ``ln((m + 1/2) / (m - n + 1/2)) / d`` with equal
    intervals). 0 for a page never dirty."""
    rates = np.zeros(pages, np.float64)
    if not dirty_page.size:
        return rates
    seen, slot = np.unique(dirty_page, return_inverse=True)
    dirty_time = np.bincount(slot, weights=d, minlength=seen.size)
    clean = covered - dirty_time + covered / (2 * intervals)
    rates[seen] = _bisect(slot, d, clean, 1e-9 / covered, 1e9 / float(d.min()))
    return rates


def _region_rates(region: np.ndarray, warm: np.ndarray, dirty_page: np.ndarray, d: np.ndarray,
                  covered: float, intervals: int) -> np.ndarray:
    """Each region's pooled rate over its warm pages (``warm``: bool per page)."""
    regions = int(region.max()) + 1
    keep = warm[dirty_page]
    slot = region[dirty_page[keep]]
    members = np.bincount(region, weights=warm, minlength=regions)
    dirty_time = np.bincount(slot, weights=d[keep], minlength=regions)
    clean = members * covered - dirty_time + covered / (2 * intervals)
    rates = _bisect(slot, d[keep], clean, 1e-12 / covered, 1e9 / float(d.min()))
    rates[np.bincount(slot, minlength=regions) == 0] = 0.0
    return rates


def long_gaps(region: np.ndarray, candidate: np.ndarray, dirty: np.ndarray) -> np.ndarray:
    """bool per page: an unseen candidate in a clean stretch too long for its region's writes
    to be a random sample (module docstring).

    A region's candidates in address order, ``n1`` of its ``n`` dirty (share ``q``): had the
    dirty ones been drawn at random, a stretch of ``L`` clean candidates in a row would have
    chance about ``(1 - q)^L`` at each of the ``n1 + 1`` places one can start; a stretch with
    ``(n1 + 1) (1 - q)^L`` below :data:`GAP_P` is taken for memory the writes do not reach
    (the stretches before the first and after the last dirty page included). A stretch left
    out raises the share ``q`` of the candidates that stay, so the test is repeated until no
    more stretch is left out: a block of dirty pages with a margin of clean ones on each side
    keeps neither margin once the longer one is out."""
    regions = int(region.max()) + 1 if region.size else 0
    out = np.zeros(candidate.size, np.bool_)
    idx = np.flatnonzero(candidate | dirty)
    if not idx.size:
        return out
    reg, hit = region[idx], dirty[idx]
    n1 = np.bincount(reg, weights=hit, minlength=regions)
    # stretches: maximal runs of clean candidates within one region
    new = np.ones(idx.size, np.bool_)
    new[1:] = (reg[1:] != reg[:-1]) | hit[:-1]
    stretch = np.cumsum(new) - 1
    length = np.bincount(stretch, weights=~hit)[stretch]
    clean = ~hit & (n1[reg] > 0)
    flagged = np.zeros(idx.size, np.bool_)
    for _ in range(10):  # a stretch left out raises the share of the rest: test again
        n = np.bincount(reg, weights=~flagged, minlength=regions)
        q = n1 / np.maximum(n, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shortest = np.log(GAP_P / (n1 + 1)) / np.log1p(-q)  # suspicious from this long
        now = flagged | (clean & (q[reg] < 1.0) & (length >= shortest[reg]))
        if (now == flagged).all():
            break
        flagged = now
    out[idx[flagged]] = True
    return out


def fit_rates(dirty_page: np.ndarray, d: np.ndarray, covered: float, intervals: int,
              candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rate per page, hot per page) from the dirty pairs (``dirty_page[k]`` dirty in an interval
    of length ``d[k]``) over ``intervals`` intervals of total length ``covered``; ``candidate``:
    bool per page, may be written (module docstring)."""
    pages = candidate.size
    hot = np.zeros(pages, np.bool_)
    if not dirty_page.size or covered <= 0.0:
        return np.zeros(pages, np.float64), hot
    own_root = page_rates(dirty_page, d, covered, intervals, pages)
    region = np.arange(pages, dtype=np.int64) // REGION_PAGES
    candidate = candidate.copy()
    candidate[dirty_page] = True
    seen, slot = np.unique(dirty_page, return_inverse=True)
    clean = covered - np.bincount(slot, weights=d, minlength=seen.size)
    # each seen page's unconstrained maximum likelihood (no pseudo clean time; a page dirty in
    # every interval has likelihood 1 at an infinite rate)
    free = _bisect(slot, d, np.maximum(clean, 0.0), 1e-9 / covered, 1e9 / float(d.min()))
    best = np.where(clean > 0, _loglik(free, slot, d, clean), 0.0)
    unseen = candidate.copy()
    unseen[seen] = False
    # long clean stretches are memory the writes do not reach: out of the pools
    gap = long_gaps(region, candidate, candidate & ~unseen)
    cold = unseen & gap
    for _ in range(5):  # pages leave the pools, the pools are refitted, until nothing changes
        pooled = _region_rates(region, candidate & ~hot & ~cold, dirty_page, d, covered,
                               intervals)
        ratio = 2 * (best - _loglik(pooled[region[seen]], slot, d, clean))
        new_hot = np.zeros(pages, np.bool_)
        new_hot[seen] = (ratio > HOT_LR) & (free > pooled[region[seen]])
        # never dirty: own likelihood 1 at rate 0, the pool's exp(-u covered)
        new_cold = unseen & (gap | (2 * pooled[region] * covered > HOT_LR))
        if (new_hot == hot).all() and (new_cold == cold).all():
            break
        hot, cold = new_hot, cold | new_cold
    rates = np.where(candidate & ~cold, pooled[region], 0.0)
    rates[hot] = own_root[hot]
    return rates, hot


__all__ = ["GAP_P", "HOT_LR", "REGION_PAGES", "fit_rates", "long_gaps", "page_rates"]
