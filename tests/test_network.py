"""Networks (issue 18): max-min fair shares over paths of links, checked by closed forms and by
the definition of max-min fairness (every flow at its cap or crossing a bottleneck)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import closed_form_scenario, idle_guest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.link import Link
from sim.network import LINK_COLUMNS, Network, PathLink, build_topology, max_min_rates
from sim.run import Testbed
from sim.spec import LinkSpec
from sim.units import MiB

G = 1e9 / 8  # 1 Gbit/s in bytes/s


def tree(core: float = math.inf, uplink: float = 10 * G, nic: float = 10 * G):
    """Hosts a1, a2 in rack A and b1, b2 in rack B."""
    return build_topology({"a1": "A", "a2": "A", "b1": "B", "b2": "B"}, host_nic=nic,
                          tor_uplink=uplink, core=core)


# --- closed forms ---------------------------------------------------------------------------------

def test_two_flows_behind_one_uplink_get_half_each():
    topo = tree(uplink=10 * G, nic=25 * G)
    one, two = object(), object()
    topo.route("a1", "b1").join(one)
    topo.route("a2", "b2").join(two)
    assert topo.route("a1", "b1").share(one, 0.0) == pytest.approx(5 * G, rel=1e-12)
    assert topo.route("a2", "b2").share(two, 0.0) == pytest.approx(5 * G, rel=1e-12)


def test_two_flows_behind_separate_nics_get_their_whole_nic():
    topo = tree(nic=10 * G)
    one, two = object(), object()
    topo.route("a1", "a2").join(one)
    topo.route("b1", "b2").join(two)
    assert topo.network.share(one, 0.0) == pytest.approx(10 * G, rel=1e-12)
    assert topo.network.share(two, 0.0) == pytest.approx(10 * G, rel=1e-12)


def test_a_nic_is_full_duplex():
    """a1 sends to a2 while b1 sends to a1: a1's tx and rx are separate links."""
    topo = tree(nic=10 * G, uplink=100 * G)
    out, into = object(), object()
    topo.route("a1", "a2").join(out)
    topo.route("b1", "a1").join(into)
    assert topo.network.share(out, 0.0) == pytest.approx(10 * G)
    assert topo.network.share(into, 0.0) == pytest.approx(10 * G)


def test_paths_of_the_tree():
    topo = tree(core=40 * G)
    assert topo.path("a1", "a2") == ["a1.tx", "a2.rx"]
    assert topo.path("a1", "b2") == ["a1.tx", "A.up", "core", "B.down", "b2.rx"]
    assert tree().path("a1", "b2") == ["a1.tx", "A.up", "B.down", "b2.rx"]  # no core link
    assert {topo.network.tier(name) for name in topo.path("a1", "b2")} == {"nic", "tor", "core"}
    with pytest.raises(KeyError, match="zz"):
        topo.path("a1", "zz")


def test_a_three_link_path_is_limited_by_its_narrowest_share():
    """Flow f crosses a (10), b (6), c (8); g crosses b, h crosses c. On b, f and g get 3 each
    (6/2); on c, 8/2 = 4 would be the level but f takes only 3, so h gets the other 5."""
    net = Network()
    for name, cap in (("a", 10.0), ("b", 6.0), ("c", 8.0)):
        net.add_link(name, cap)
    f, g, h = object(), object(), object()
    route = PathLink(net, ["a", "b", "c"])
    route.join(f)
    assert route.share(f, 0.0) == 6.0  # alone: the narrowest link
    assert route.rate_at(0.0) == 6.0
    net.join(g, ["b"])
    net.join(h, ["c"])
    assert route.share(f, 0.0) == pytest.approx(3.0)
    assert net.share(g, 0.0) == pytest.approx(3.0)
    assert net.share(h, 0.0) == pytest.approx(5.0)


def test_a_flow_frozen_at_one_bottleneck_leaves_its_share_to_others():
    """The classic example (Bertsekas & Gallager §6.5.2): links L1 = 1, L2 = 2; A crosses
    both, B only L1, C only L2: A and B get 1/2 (L1 is the bottleneck), C gets 2 - 1/2."""
    net = Network()
    net.add_link("L1", 1.0)
    net.add_link("L2", 2.0)
    a, b, c = object(), object(), object()
    net.join(a, ["L1", "L2"])
    net.join(b, ["L1"])
    net.join(c, ["L2"])
    assert [net.share(x, 0.0) for x in (a, b, c)] == pytest.approx([0.5, 0.5, 1.5])


@pytest.mark.parametrize(("demand", "flow", "cross"), [
    (4 * G, 10 * G / 3, 10 * G / 3),  # cross wants more than a third: three equal shares
    (2 * G, 4 * G, 2 * G),            # cross wants less: it gets its demand, flows split the rest
    (20 * G, 10 * G / 3, 10 * G / 3),
])
def test_cross_traffic_takes_its_max_min_share(demand, flow, cross):
    """A 10 Gbit/s link, two flows and cross traffic wanting ``demand``."""
    net = Network()
    net.add_link("up", 10 * G, cross=demand)
    one, two = object(), object()
    net.join(one, ["up"])
    net.join(two, ["up"])
    assert net.share(one, 0.0) == pytest.approx(flow)
    assert net.share(two, 0.0) == pytest.approx(flow)
    assert net.solution(0.0).cross[0] == pytest.approx(cross)
    assert net.cross_at("up", 0.0) == demand


def test_cross_traffic_alone_with_a_flow_and_on_a_schedule():
    net = Network()
    net.add_link("up", 10.0, cross=[(1.0, 4.0), (3.0, 0.0)])
    route = PathLink(net, ["up"])
    f = object()
    route.join(f)
    assert route.share(f, 0.5) == 10.0
    assert route.share(f, 1.0) == 6.0  # cross wants 4 < 5: it gets 4
    assert route.share(f, 3.5) == 10.0
    assert [route.next_change_after(t) for t in (0.0, 1.0, 2.9, 3.0)] == [1.0, 3.0, 3.0, math.inf]


def test_caps_are_respected_and_the_rest_is_shared():
    net = Network()
    net.add_link("l", 10.0)
    a, b, c = object(), object(), object()
    for x in (a, b):
        net.join(x, ["l"])
    net.join(c, ["l"], cap=1.0)
    assert [net.share(x, 0.0) for x in (a, b, c)] == pytest.approx([4.5, 4.5, 1.0])
    net.set_cap(a, 2.0)
    assert [net.share(x, 0.0) for x in (a, b, c)] == pytest.approx([2.0, 7.0, 1.0])
    net.leave(b)
    # Not alone on the link: caps hold (3 of 10 used).
    assert [net.share(x, 0.0) for x in (a, c)] == pytest.approx([2.0, 1.0])


def test_a_capacity_schedule_changes_shares_and_ends_chunks():
    net = Network()
    net.add_link("nic", 10.0, latency_s=0.001, schedule=[(2.0, 4.0)])
    net.add_link("up", 100.0, latency_s=0.002)
    route = PathLink(net, ["nic", "up"])
    assert route.latency_s == pytest.approx(0.003)
    assert [route.rate_at(t) for t in (0.0, 1.99, 2.0)] == [10.0, 10.0, 4.0]
    assert route.next_change_after(0.0) == 2.0
    f, g = object(), object()
    route.join(f)
    net.join(g, ["nic"])
    assert route.share(f, 1.0) == 5.0
    assert route.share(f, 2.5) == 2.0


def one_link_shares(caps: dict[object, float], total: float) -> dict[object, float]:
    """Water-filling on one link, the closed form: caps below an equal split are met, the rest
    split what is left equally; a flow alone gets the whole link (its cap is the engine's own
    byte budget)."""
    if len(caps) == 1:
        return {flow: total for flow in caps}
    left, ordered = total, sorted(caps.values())
    level = math.inf
    for i, cap in enumerate(ordered):
        if cap >= left / (len(ordered) - i):
            level = left / (len(ordered) - i)
            break
        left -= cap
    return {flow: min(cap, level) for flow, cap in caps.items()}


def test_one_link_shares_by_water_filling():
    """Random joins, cap changes and leaves on the scenario's Link (a one-link network): each
    share is the single-link water level, exactly."""
    rng = np.random.default_rng(7)
    link = Link(LinkSpec(bandwidth=100.0))
    caps: dict[object, float] = {}
    flows = [object() for _ in range(6)]
    for _ in range(300):
        flow = flows[rng.integers(len(flows))]
        action = rng.integers(3)
        cap = float(rng.choice([0.0, 5.0, 7.0, 20.0, 40.0, 200.0]))
        if action == 0:
            link.join(flow, cap)
            caps[flow] = cap if cap > 0 else math.inf
        elif action == 1:
            link.set_cap(flow, cap)
            if flow in caps:
                caps[flow] = cap if cap > 0 else math.inf
        else:
            link.leave(flow)
            caps.pop(flow, None)
        assert link.flows == len(caps)
        expected = one_link_shares(caps, 100.0)
        for x in flows:
            assert link.share(x, 0.0) == expected.get(x, 100.0)


def test_shares_are_cached_until_the_flows_or_the_interval_change():
    net = Network()
    net.add_link("l", 10.0, schedule=[(5.0, 20.0)])
    f = object()
    net.join(f, ["l"], cap=3.0)
    first = net.solution(0.0)
    assert net.solution(4.0) is first  # same flows, same interval: no solve
    assert net.solution(5.0) is not first
    net.set_cap(f, 4.0)
    assert net.solution(5.0).rate[f] == 4.0


def test_unknown_links_and_empty_paths_are_refused():
    net = Network()
    net.add_link("l", 1.0)
    with pytest.raises(KeyError, match="nope"):
        net.join(object(), ["l", "nope"])
    with pytest.raises(ValueError):
        net.join(object(), [])
    with pytest.raises(ValueError, match="twice"):
        net.add_link("l", 2.0)
    for bad in ({"capacity": math.inf}, {"capacity": -1.0}, {"capacity": 1.0, "cross": -1.0},
                {"capacity": 1.0, "schedule": [(1.0, math.inf)]},
                {"capacity": 1.0, "cross": [(math.nan, 1.0)]}):
        with pytest.raises(ValueError):
            net.add_link("m", **bad)
    assert net.link_names == ["l"]  # a refused link leaves nothing behind


def test_a_flow_that_left_is_not_kept_alive():
    """A finished migration (and its guest's memory) is not held by the network's log."""
    import gc
    import weakref

    class Flow:
        pass

    net = Network()
    net.add_link("l", 10.0)
    flow, other = Flow(), Flow()
    net.join(flow, ["l"])
    net.join(other, ["l"])
    assert net.share(flow, 0.0) == 5.0
    ref = weakref.ref(flow)
    net.leave(flow)
    del flow
    gc.collect()
    assert ref() is None
    assert net.share(other, 0.0) == 10.0


# --- utilisation ----------------------------------------------------------------------------------

def test_links_table_and_bytes_carried():
    now = [0.0]
    net = Network(clock=lambda: now[0])
    net.add_link("nic", 10.0, tier="nic")
    net.add_link("up", 8.0, tier="tor", cross=2.0)
    f, g = object(), object()
    now[0] = 1.0
    net.join(f, ["nic", "up"])
    now[0] = 2.0
    net.join(g, ["up"])
    now[0] = 4.0
    net.leave(f)
    net.leave(g)
    table = net.links_table(until=5.0)
    assert list(table.columns) == LINK_COLUMNS
    up = table[table.link == "up"]
    assert list(up.t_s) == [0.0, 1.0, 2.0, 4.0]
    assert list(up.flows) == [0, 1, 2, 0]
    # cross alone 2; with f: f 6 (cross wants 2 < 4); with f, g: 3 each, cross 2; then cross 2.
    assert list(up.used_bytes_per_s) == pytest.approx([2.0, 8.0, 8.0, 2.0])
    assert list(up.cross_bytes_per_s) == pytest.approx([2.0, 2.0, 2.0, 2.0])
    nic = table[table.link == "nic"]
    assert list(nic.t_s) == [0.0, 1.0, 2.0, 4.0]
    assert list(nic.used_bytes_per_s) == pytest.approx([0.0, 6.0, 3.0, 0.0])
    carried = net.bytes_carried(until=5.0).set_index("link")
    assert carried.loc["nic", "flow_bytes"] == pytest.approx(6.0 + 2 * 3.0)
    assert carried.loc["up", "flow_bytes"] == pytest.approx(6.0 + 2 * 6.0)
    assert carried.loc["up", "cross_bytes"] == pytest.approx(2.0 * 5.0)
    assert carried.loc["up", "tier"] == "tor"


def test_links_table_follows_capacity_changes_with_no_flow():
    net = Network()
    net.add_link("l", 10.0, schedule=[(1.0, 5.0)], cross=[(0.5, 7.0)])
    table = net.links_table(until=2.0)
    assert list(table.t_s) == [0.0, 0.5, 1.0]
    assert list(table.cross_bytes_per_s) == [0.0, 7.0, 5.0]
    assert list(table.capacity_bytes_per_s) == [10.0, 10.0, 5.0]


# --- the definition of max-min fairness ------------------------------------------------------------

@st.composite
def problems(draw):
    n_links = draw(st.integers(1, 8))
    capacity = draw(st.lists(st.floats(0.0, 100.0), min_size=n_links, max_size=n_links))
    n_flows = draw(st.integers(1, 12))
    paths = [draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True))
             for _ in range(n_flows)]
    caps = draw(st.lists(st.one_of(st.just(math.inf), st.floats(0.01, 60.0)),
                         min_size=n_flows, max_size=n_flows))
    return np.array(capacity), paths, np.array(caps)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_every_flow_is_at_its_cap_or_crosses_a_bottleneck(problem):
    capacity, paths, caps = problem
    pair_flow = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    pair_link = np.concatenate([np.array(p) for p in paths])
    rate = max_min_rates(capacity, pair_flow, pair_link, caps)
    tol = 1e-9 * max(1.0, capacity.max())
    load = np.bincount(pair_link, weights=rate[pair_flow], minlength=len(capacity))
    assert (rate >= 0).all()
    assert (load <= capacity + tol).all(), "a link carries more than its capacity"
    for f, path in enumerate(paths):
        if rate[f] >= caps[f] - tol:
            continue  # held by its own cap
        bottlenecks = [link for link in path if load[link] >= capacity[link] - tol
                       and all(rate[g] <= rate[f] + tol
                               for g, p in enumerate(paths) if link in p)]
        assert bottlenecks, f"flow {f} ({rate[f]}) could grow without hurting a smaller one"


@settings(max_examples=100, deadline=None)
@given(problems(), st.lists(st.floats(0.0, 80.0), min_size=8, max_size=8))
def test_a_network_with_cross_traffic_is_max_min_fair(problem, demands):
    """The same definition through Network, cross traffic counted as one more flow per link."""
    capacity, paths, caps = problem
    net = Network()
    for i, c in enumerate(capacity):
        net.add_link(f"l{i}", float(c), cross=demands[i])
    flows = [object() for _ in paths]
    for flow, path, cap in zip(flows, paths, caps, strict=True):
        net.join(flow, [f"l{i}" for i in path], cap=float(cap))
    sol = net.solution(0.0)
    rate = np.array([sol.rate[f] for f in flows])
    cross = sol.cross[: len(capacity)]
    tol = 1e-9 * max(1.0, capacity.max())
    load = sol.used[: len(capacity)] + cross
    assert (load <= capacity + tol).all()
    demand = np.array(demands[: len(capacity)])
    for f, path in enumerate(paths):
        if rate[f] >= caps[f] - tol:
            continue
        assert any(load[link] >= capacity[link] - tol
                   and all(rate[g] <= rate[f] + tol for g, p in enumerate(paths) if link in p)
                   and cross[link] <= rate[f] + tol for link in path), f
    for link in range(len(capacity)):
        # Cross traffic gets its demand, or is held at a full link's level.
        if cross[link] < min(demand[link], capacity[link]) - tol:
            assert load[link] >= capacity[link] - tol
    for f, path in enumerate(paths):  # the share: the fluid rate, or the path when alone
        alone = all(demand[i] == 0 and sum(i in p for p in paths) == 1 for i in path)
        expected = min(capacity[i] for i in path) if alone else rate[f]
        assert net.share(flows[f], 0.0) == expected


# --- end to end: migrations through paths ---------------------------------------------------------

def _testbed(hosts_to, uplink: float, nic: float) -> tuple[Testbed, Network]:
    """Two idle 64 MiB guests: guest ``a`` migrates a1 -> ``hosts_to[0]``, ``b`` a2 ->
    ``hosts_to[1]``; the network's clock is the testbed's."""
    sc = closed_form_scenario("net", link=LinkSpec(bandwidth=1e15),
                              vms=(idle_guest("a"), idle_guest("b")))
    holder: list[Testbed] = []
    net = Network(clock=lambda: holder[0].now)
    topo = build_topology({"a1": "A", "a2": "A", "b1": "B", "b2": "B"}, host_nic=nic,
                          tor_uplink=uplink, network=net)
    routes = {"a": topo.route("a1", hosts_to[0]), "b": topo.route("a2", hosts_to[1])}
    holder.append(Testbed(sc, routes=routes))
    return holder[0], net


def test_two_migrations_behind_one_uplink_each_send_at_half_its_rate():
    tb, net = _testbed(("b1", "b2"), uplink=100e6, nic=1e9)
    runs = _run(tb)
    expected = 64 * MiB / 50e6
    assert list(runs.total_time_s) == pytest.approx([expected, expected], rel=0.005)
    # The uplink carried both guests' RAM (the fluid rates, integrated), and is idle after.
    carried = net.bytes_carried().set_index("link")
    assert carried.loc["A.up", "flow_bytes"] == pytest.approx(2 * 64 * MiB, rel=0.005)
    assert carried.loc["B.up", "flow_bytes"] == 0.0
    up = net.links_table()
    up = up[up.link == "A.up"]
    assert list(up.flows) == [2, 0] and list(up.used_bytes_per_s) == [100e6, 0.0]


def test_two_migrations_on_separate_nics_each_send_at_its_nic_rate():
    runs = _run(_testbed(("a2", "b2"), uplink=1e9, nic=100e6)[0])
    # a: a1 -> a2 (same rack); b: a2 -> b2 crosses a2.tx, which a's flow does not use.
    expected = 64 * MiB / 100e6
    assert list(runs.total_time_s) == pytest.approx([expected, expected], rel=0.005)


def test_a_migration_beside_cross_traffic_gets_the_rest_of_the_link():
    """100 MB/s with cross traffic wanting 30 MB/s (less than half): the guest gets 70 MB/s."""
    sc = closed_form_scenario("net", link=LinkSpec(bandwidth=1e15), vms=(idle_guest("a"),))
    net = Network()
    net.add_link("up", 100e6, cross=30e6)
    runs = _run(Testbed(sc, routes={"a": PathLink(net, ["up"])}))
    assert runs.total_time_s.iloc[0] == pytest.approx(64 * MiB / 70e6, rel=0.005)


def _run(tb: Testbed):
    return _result(tb).runs


def test_a_guest_through_a_one_link_path_runs_as_through_the_link():
    """The same single guest, given the scenario's link or a one-link path of the same rate and
    latency: identical tables."""
    sc = closed_form_scenario("net", link=LinkSpec(bandwidth=200e6, latency=0.002),
                              vms=(idle_guest("a"),))
    net = Network()
    net.add_link("l", 200e6, latency_s=0.002)
    plain, routed = Testbed(sc), Testbed(sc, routes={"a": PathLink(net, ["l"])})
    a, b = _result(plain), _result(routed)
    for table in ("runs", "passes", "samples", "events"):
        assert getattr(a, table).equals(getattr(b, table)), table


def _result(tb: Testbed):
    from sim.negotiation import operate

    for pair in tb.pairs:
        tb.env.process(operate(pair, tb.scenario.negotiation))
    tb.run()
    return tb.result()
