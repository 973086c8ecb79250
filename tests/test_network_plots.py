"""The network figures' numbers (utilisation per tier, bytes per tier) from a small links table
worked out by hand, and that the figures draw."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.network import Network
from sim.network.plots import (
    bytes_by_tier,
    plot_bytes_by_tier,
    plot_link_utilisation,
    utilisation_by_tier,
)


@pytest.fixture
def links() -> pd.DataFrame:
    """nic1 (10) and nic2 (10, idle), up (8, cross traffic 2). f crosses nic1 and up from 1 s to
    4 s, g crosses up from 2 s to 4 s: nic1 carries 6 then 3; up 2, 8, 8, 2."""
    now = [0.0]
    net = Network(clock=lambda: now[0])
    net.add_link("nic1", 10.0, tier="nic")
    net.add_link("nic2", 10.0, tier="nic")
    net.add_link("up", 8.0, tier="tor", cross=2.0)
    f, g = object(), object()
    now[0] = 1.0
    net.join(f, ["nic1", "up"])
    now[0] = 2.0
    net.join(g, ["up"])
    now[0] = 4.0
    net.leave(f)
    net.leave(g)
    return net.links_table(until=5.0)


def test_the_busiest_link_of_each_tier(links):
    table = utilisation_by_tier(links, "max")
    assert list(table.index) == [0.0, 1.0, 2.0, 4.0]
    assert list(table["nic"]) == pytest.approx([0.0, 0.6, 0.3, 0.0])
    assert list(table["tor"]) == pytest.approx([0.25, 1.0, 1.0, 0.25])


def test_a_tier_as_a_whole(links):
    table = utilisation_by_tier(links, "mean")
    assert list(table["nic"]) == pytest.approx([0.0, 0.3, 0.15, 0.0])  # over 20 bytes/s
    assert list(table["tor"]) == pytest.approx([0.25, 1.0, 1.0, 0.25])
    with pytest.raises(ValueError, match="stat"):
        utilisation_by_tier(links, "median")


def test_bytes_by_tier(links):
    table = bytes_by_tier(links, until=5.0).set_index("tier")
    assert table.loc["nic", "flow_bytes"] == pytest.approx(6.0 + 2 * 3.0)
    assert table.loc["tor", "flow_bytes"] == pytest.approx(6.0 + 2 * 6.0)
    assert table.loc["tor", "cross_bytes"] == pytest.approx(10.0)
    assert table.loc["nic", "cross_bytes"] == 0.0


def test_the_figures_draw(links):
    ax = plot_link_utilisation(links)
    assert [line.get_label() for line in ax.get_lines()] == ["nic", "tor"]
    ax = plot_bytes_by_tier(links, until=5.0)
    assert len(ax.patches) == 4  # two tiers, migrations and cross traffic
