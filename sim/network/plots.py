"""Figures of a network's ``links`` table (:meth:`sim.network.Network.links_table`): link
utilisation over time per tier, and bytes carried per tier. Each ``plot_*`` takes the table and
an optional Axes and returns the Axes (a bare ``Figure``'s when none is given, so pyplot's state
is never touched). Not imported by :mod:`sim.network`, so the model does not load matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sim.units import GiB

from .usage import bytes_carried

#: How a tier's utilisation is summed up over its links at each time.
STATS = ("max", "mean")


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    axes: Axes = Figure(figsize=(7, 4), layout="constrained").subplots()
    return axes


def utilisation_by_tier(links: pd.DataFrame, stat: str = "max") -> pd.DataFrame:
    """Utilisation (used over capacity, 0-1) per tier over time: one column per tier, indexed by
    ``t_s``, each value holding until the next index. ``max``: the busiest link of the tier;
    ``mean``: the tier's used bytes/s over its capacity, all its links together."""
    if stat not in STATS:
        raise ValueError(f"stat must be one of {', '.join(STATS)} (got {stat!r})")
    if stat == "mean":
        # Per link, the change at each of its rows; summed per tier and time, then accumulated.
        ordered = links.sort_values(["link", "t_s"], kind="stable")
        grouped = ordered.groupby("link", sort=False)
        delta = pd.DataFrame({
            "t_s": ordered["t_s"], "tier": ordered["tier"],
            "used": grouped["used_bytes_per_s"].diff().fillna(ordered["used_bytes_per_s"]),
            "capacity": grouped["capacity_bytes_per_s"].diff().fillna(
                ordered["capacity_bytes_per_s"]),
        })
        sums = delta.groupby(["t_s", "tier"])[["used", "capacity"]].sum().unstack("tier")
        sums = sums.fillna(0.0).sort_index().cumsum()
        capacity = sums["capacity"].where(sums["capacity"] > 0)
        return pd.DataFrame((sums["used"] / capacity).fillna(0.0).clip(lower=0.0))
    ratio = links["used_bytes_per_s"] / links["capacity_bytes_per_s"].where(
        links["capacity_bytes_per_s"] > 0)
    frame = links.assign(ratio=ratio.fillna(0.0))
    busy = frame.groupby("link")["ratio"].transform("max") > 0  # idle links add nothing to a max
    grid = frame[busy].pivot_table(index="t_s", columns="link", values="ratio", aggfunc="last")
    grid = grid.sort_index().ffill().fillna(0.0)
    tiers = frame[busy].drop_duplicates("link").set_index("link")["tier"]
    out = grid.T.groupby(tiers).max().T
    for tier in sorted(set(links["tier"]) - set(out.columns)):
        out[tier] = 0.0
    if out.empty and len(links):
        out = pd.DataFrame(0.0, index=[links["t_s"].min()], columns=sorted(set(links["tier"])))
    return out


def plot_link_utilisation(links: pd.DataFrame, ax: Axes | None = None, *, stat: str = "max",
                          tiers: Sequence[str] | None = None) -> Axes:
    """Link utilisation (%) over time, one step line per tier (``tiers``: which, in order; all by
    default). ``stat="max"`` draws each tier's busiest link, ``"mean"`` the tier as a whole."""
    ax = _axes(ax)
    table = utilisation_by_tier(links, stat) * 100
    for tier in tiers if tiers is not None else list(table.columns):
        if tier in table.columns:
            ax.step(table.index, table[tier], where="post", label=tier or "(no tier)")
    ax.set_xlabel("time (s)")
    word = "busiest link" if stat == "max" else "all links"
    ax.set_ylabel(f"utilisation, {word} of the tier (%)")
    ax.set_ylim(0, 105)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="tier")
    return ax


def bytes_by_tier(links: pd.DataFrame, until: float | None = None) -> pd.DataFrame:
    """Bytes carried per tier (``tier, flow_bytes, cross_bytes``) up to ``until`` (default: the
    table's last row). A migration's bytes count once on every link it crosses."""
    end = float(links["t_s"].max()) if until is None and len(links) else float(until or 0.0)
    carried = bytes_carried(links, end)
    if carried.empty:
        return pd.DataFrame({"tier": [], "flow_bytes": [], "cross_bytes": []})
    return carried.groupby("tier", as_index=False)[["flow_bytes", "cross_bytes"]].sum()


def plot_bytes_by_tier(links: pd.DataFrame, ax: Axes | None = None, *,
                       until: float | None = None) -> Axes:
    """Bytes carried by the links of each tier (GiB): migrations, with cross traffic stacked on
    top (left out when there is none)."""
    ax = _axes(ax)
    table = bytes_by_tier(links, until)
    x = np.arange(len(table))
    flow = table["flow_bytes"].to_numpy(float) / GiB
    cross = table["cross_bytes"].to_numpy(float) / GiB
    ax.bar(x, flow, label="migrations")
    if cross.any():
        ax.bar(x, cross, bottom=flow, label="cross traffic")
    ax.set_xticks(x, [str(t) or "(no tier)" for t in table["tier"]])
    ax.set_xlabel("link tier")
    ax.set_ylabel("bytes carried (GiB)")
    ax.legend()
    return ax
