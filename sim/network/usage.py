"""Link utilisation over time, rebuilt from a network's log of joins, cap changes and leaves.

At every time something changes (a flow joins, leaves or changes its cap, a link's capacity or
cross traffic changes) the max-min solution is solved again and each link whose numbers changed
gets a row. The rows are the fluid rates: a flow's ``min(cap, level)``, the model's average rate,
which is what the engine's chunks move on average (a chunk reads its share when it starts).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .links import LinkTable
from .solve import Flow, solve

#: The columns of the ``links`` table, in order.
LINK_COLUMNS = ["t_s", "link", "tier", "flows", "used_bytes_per_s", "cross_bytes_per_s",
                "capacity_bytes_per_s"]

LogEntry = tuple[float, int, "np.ndarray | None", float]


def replay_links(table: LinkTable, log: Sequence[LogEntry], until: float) -> pd.DataFrame:
    """The ``links`` table from 0 to ``until`` (see :meth:`sim.network.Network.links_table`)."""
    changes = table.changes[:bisect.bisect_right(table.changes, until)]
    times = sorted({0.0, *changes, *(entry[0] for entry in log if entry[0] <= until)})
    flows: dict[object, Flow] = {}  # by flow number
    i = 0
    previous: np.ndarray | None = None
    parts: list[tuple[float, np.ndarray, np.ndarray]] = []
    for t in times:
        while i < len(log) and log[i][0] <= t:
            _, flow, path, cap = log[i]
            if path is None:
                flows.pop(flow, None)
            else:
                flows[flow] = Flow(path, cap)
            i += 1
        sol = solve(table, flows, t)
        now = np.stack([sol.flows.astype(float), sol.used + sol.cross, sol.cross, sol.capacity])
        changed = (np.ones(len(table), dtype=bool) if previous is None
                   else (now != previous).any(axis=0))
        previous = now
        if changed.any():
            idx = np.flatnonzero(changed)
            parts.append((t, idx, now[:, idx]))
    return _frame(table, parts)


def _frame(table: LinkTable, parts: list[tuple[float, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=float if c.endswith("_s") else object)
                             for c in LINK_COLUMNS})
    idx = np.concatenate([p[1] for p in parts])
    values = np.concatenate([p[2] for p in parts], axis=1)
    names, tiers = np.array(table.names, dtype=object), np.array(table.tiers, dtype=object)
    return pd.DataFrame({
        "t_s": np.concatenate([np.full(len(p[1]), p[0]) for p in parts]),
        "link": names[idx], "tier": tiers[idx],
        "flows": values[0].astype(np.int64),
        "used_bytes_per_s": values[1], "cross_bytes_per_s": values[2],
        "capacity_bytes_per_s": values[3],
    })


def bytes_carried(links: pd.DataFrame, until: float) -> pd.DataFrame:
    """Bytes per link from its rows up to ``until``: ``link, tier, flow_bytes, cross_bytes``
    (the flows' and the cross traffic's, each rate held until the link's next row)."""
    if links.empty:
        return pd.DataFrame({"link": [], "tier": [], "flow_bytes": [], "cross_bytes": []})
    end = links.groupby("link", sort=False)["t_s"].shift(-1).fillna(until)
    span = (np.minimum(end, until) - links["t_s"]).clip(lower=0.0)
    cross = links["cross_bytes_per_s"]
    flow = links["used_bytes_per_s"] - cross
    out = pd.DataFrame({"link": links["link"], "tier": links["tier"],
                        "flow_bytes": np.where(span > 0, flow * span, 0.0),
                        "cross_bytes": np.where(span > 0, cross * span, 0.0)})
    return out.groupby(["link", "tier"], sort=False, as_index=False).sum()


__all__ = ["LINK_COLUMNS", "bytes_carried", "replay_links"]
