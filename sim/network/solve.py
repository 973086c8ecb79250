"""Max-min fair rates of flows over paths of links: progressive filling, vectorised with numpy.

The problem: links ``l`` with capacities ``c[l]`` (bytes/s), flows ``f`` each crossing a set of
links and each with its own cap ``cap[f]`` (bytes/s, ``inf`` for none). A rate vector is max-min
fair when no flow's rate can grow without lowering the rate of a flow that has no more than it
(Bertsekas & Gallager, *Data Networks*, 2nd ed., §6.5.2). Equivalently, every flow is either at
its cap or crosses a *bottleneck*: a saturated link on which no flow has a larger rate.

Progressive filling finds it: all unfrozen flows rise together; the first link to fill (the
smallest ``remaining / unfrozen flows`` over links) freezes its flows at that level, a flow whose
cap is reached first freezes at its cap; subtract, repeat. Each round freezes every link at the
current smallest level at once (and every flow whose cap is at or below it), so the number of
rounds is the number of distinct bottleneck levels, not the number of flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .links import LinkTable

#: Relative tolerance on levels: links whose level is within this of the smallest freeze together
#: (equal capacities split by equal counts give equal levels up to rounding).
LEVEL_RTOL = 1e-12


def max_min_rates(capacity: np.ndarray, pair_flow: np.ndarray, pair_link: np.ndarray,
                  flow_cap: np.ndarray) -> np.ndarray:
    """The max-min fair rate (bytes/s) of every flow.

    ``capacity``: (L,) link capacities; ``pair_flow``/``pair_link``: (P,) the flow and link of
    each (flow crosses link) pair, each flow at least once; ``flow_cap``: (F,) caps (``inf``:
    none). A flow that crosses only links of infinite capacity and has no cap gets ``inf``.
    """
    n_links, n_flows = len(capacity), len(flow_cap)
    rate = np.zeros(n_flows)
    frozen = np.zeros(n_flows, dtype=bool)
    remaining = np.asarray(capacity, dtype=float).copy()
    active = np.ones(len(pair_flow), dtype=bool)  # pairs whose flow is not frozen yet
    while not frozen.all():
        links_active = pair_link[active]
        count = np.bincount(links_active, minlength=n_links)
        used = count > 0
        level = np.full(n_links, np.inf)
        level[used] = np.maximum(remaining[used], 0.0) / count[used]
        smallest = level.min()
        open_caps = np.where(frozen, np.inf, flow_cap)
        if open_caps.min() <= smallest:
            # Flows held below every link's level by their own cap: each gets its cap.
            newly = open_caps <= smallest
            rate[newly] = flow_cap[newly]
        elif np.isinf(smallest):
            newly = ~frozen  # no cap and no finite link left: unlimited
            rate[newly] = np.inf
        else:
            full = level <= smallest * (1.0 + LEVEL_RTOL)
            on_full = np.zeros(n_flows, dtype=bool)
            on_full[pair_flow[active & full[pair_link]]] = True
            newly = on_full & ~frozen
            rate[newly] = smallest
        frozen |= newly
        leaving = active & newly[pair_flow]
        if leaving.any():
            take = rate[pair_flow[leaving]]
            take = np.where(np.isfinite(take), take, 0.0)
            remaining -= np.bincount(pair_link[leaving], weights=take, minlength=n_links)
        active &= ~leaving
    return rate


@dataclass
class Flow:
    """One flow: the link indices of its path and its cap (bytes/s, ``inf``: none)."""

    path: np.ndarray
    cap: float


@dataclass(frozen=True)
class Solution:
    """The max-min solution at one time, for one set of flows.

    ``share``: each flow's rate as the engine reads it (bytes/s); ``rate``: its fluid rate
    (``min(cap, level)``, also for a flow alone on its path); per link (all links, by index):
    ``flows`` (migration flows crossing it), ``used`` (bytes/s of those flows) and ``cross``
    (bytes/s the cross traffic gets); ``capacity`` (bytes/s).
    """

    share: dict[object, float]
    rate: dict[object, float]
    flows: np.ndarray
    used: np.ndarray
    cross: np.ndarray
    capacity: np.ndarray


def solve(links: LinkTable, flows: dict[object, Flow], t: float) -> Solution:
    """Max-min fair rates of ``flows`` (and each link's cross traffic) at time ``t``.

    Cross traffic is one more flow on its link whose cap is its demand. A flow alone on every
    link of its path (no other flow, no cross traffic) is *shared* the path's narrowest capacity,
    whatever its cap, as :class:`sim.link.Link` does for a lone flow: QEMU's ``max-bandwidth``
    is a byte budget per window that the engine applies itself, and the thread sends its budget
    at line rate. Its fluid ``rate`` (for utilisation) is still ``min(cap, capacity)``.
    """
    capacity, demand = links.vectors(t)
    n_links = len(links)
    keys = list(flows)
    cross = np.minimum(demand, capacity)
    if not keys:
        zeros = np.zeros(n_links)
        return Solution({}, {}, zeros.astype(np.int64), zeros, cross, capacity)
    lengths = np.fromiter((len(flows[k].path) for k in keys), dtype=np.int64, count=len(keys))
    pair_link_global = np.concatenate([flows[k].path for k in keys])
    pair_flow = np.repeat(np.arange(len(keys)), lengths)
    caps = np.fromiter((flows[k].cap for k in keys), dtype=float, count=len(keys))
    involved, pair_link = np.unique(pair_link_global, return_inverse=True)
    # Cross traffic on the links the flows cross: one flow each, capped at its demand.
    with_cross = np.flatnonzero(demand[involved] > 0)
    n_flows = len(keys)
    all_flow = np.concatenate([pair_flow, n_flows + np.arange(len(with_cross))])
    all_link = np.concatenate([pair_link, with_cross])
    all_caps = np.concatenate([caps, demand[involved][with_cross]])
    rate = max_min_rates(capacity[involved], all_flow, all_link, all_caps)
    flow_rate = rate[:n_flows]
    cross[involved[with_cross]] = rate[n_flows:]
    # Lone flows: every link of the path carries only this flow and no cross traffic.
    count = np.bincount(all_link, minlength=len(involved))
    lone_pair = count[pair_link] == 1
    lone = np.bincount(pair_flow, weights=(~lone_pair).astype(float), minlength=n_flows) == 0
    narrowest = np.full(n_flows, np.inf)
    np.minimum.at(narrowest, pair_flow, capacity[involved][pair_link])
    shares = np.where(lone, narrowest, flow_rate)
    used = np.bincount(pair_link_global, weights=np.where(np.isfinite(flow_rate), flow_rate,
                                                          0.0)[pair_flow], minlength=n_links)
    on_link = np.bincount(pair_link_global, minlength=n_links)
    return Solution(dict(zip(keys, shares.tolist(), strict=True)), dict(zip(keys, flow_rate.tolist(), strict=True)),
                    on_link, used, cross, capacity)
