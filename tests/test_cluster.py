"""Clusters (sim.cluster): the cluster: section, placement, the scheduler's limits read back from
the tables of random small clusters, nothing lost, determinism, and the seed's rollout study."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim
from sim.cluster.inventory import Cluster, expand_guests, expand_hosts
from sim.cluster.plans import place
from sim.errors import ScenarioError
from sim.scenario import load_scenario, loads_scenario

ROOT = Path(__file__).resolve().parent.parent
EPS = 1e-9

SMALL = """\
name: small
seed: 3
vms:
  - name: small
    vm: {memory: 16MiB}
    workload: {kind: uniform, writes_per_s: 500}
  - name: big
    vm: {memory: 32MiB}
    workload: {kind: hotspot, writes_per_s: 4000, hot_set: 2MiB}
migration:
  capabilities: [xbzrle]
  max_bandwidth: 0B/s
  downtime_limit: 30ms
cluster:
  hosts:
    - {name: a, rack: r0, qemu_version: "2.12"}
    - {name: b, rack: r0, qemu_version: "1.1", memory: 40MiB}
    - {name: c, rack: r1, qemu_version: "2.12", memory: 64MiB}
  topology: {nic: 1Gbit/s, uplink: 2Gbit/s, core: 10Gbit/s}
  vms:
    - {name: v0, host: a, guest: small}
    - {name: v1, host: a, guest: big}
    - {name: v2, host: b, guest: small}
  plan: {kind: evacuate, hosts: [a]}
"""


def _load(text: str, name: str = "c.yaml") -> sim.Scenario:
    return loads_scenario(text, file=name)


# --- the section ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "message"), [
    ("{name: v2, host: b, guest: small}", "{name: v2, host: zz, guest: small}",
     r"c\.yaml:23: cluster\.vms\[2\]\.host: no host of that name \(got zz\)"),
    ("{name: v2, host: b, guest: small}", "{name: v2, host: b, guest: tiny}",
     r"c\.yaml:23: cluster\.vms\[2\]\.guest: no guest kind of that name in vms: small, big"),
    ("{name: b, rack: r0,", "{name: a, rack: r0,",
     r"c\.yaml:17: cluster\.hosts\[1\]\.name: host names must be unique \(got a\)"),
    ("plan: {kind: evacuate, hosts: [a]}", "plan: {kind: rolling-upgrade}",
     r"c\.yaml:24: cluster\.plan\.to_version: a rolling upgrade needs to_version"),
    ("plan: {kind: evacuate, hosts: [a]}", "plan: {kind: evacuate, hosts: [a, b, c]}",
     r"cluster\.plan\.hosts: evacuating every host leaves nowhere to go"),
    ("topology: {nic: 1Gbit/s,", "topology: {nic: 1000,",
     r"c\.yaml:19: cluster\.topology\.nic: .*unit"),
    ("plan: {kind: evacuate, hosts: [a]}", "plan: {kind: evacuate, hosts: [a]}\n  polcy: none",
     r"c\.yaml:25: cluster\.polcy: unknown key; did you mean 'policy'\?"),
    ("plan: {kind: evacuate, hosts: [a]}",
     "plan: {kind: evacuate, hosts: [a]}\n  cross_traffic: [{link: a.up, bandwidth: 1Gbit/s}]",
     r"c\.yaml:25: cluster\.cross_traffic\[0\]\.link: no such link"),
])
def test_bad_cluster_sections_name_file_line_and_key(old: str, new: str, message: str) -> None:
    """Every mistake in the section is one line naming the file, the line and the key."""
    assert old in SMALL
    with pytest.raises(ScenarioError, match=message):
        _load(SMALL.replace(old, new))


def test_generated_hosts_and_guests_follow_their_naming_scheme_and_seed() -> None:
    """Generated hosts fill racks in contiguous blocks; generated guests draw kinds and hosts
    from their own seed (the same seed, the same cluster)."""
    text = SMALL.replace("  vms:\n", "  generate_hosts:\n    - {count: 4, name: \"g{i}\", racks: 2,"
                         " rack: \"gr{r}\", qemu_version: \"1.1\"}\n"
                         "  generate_vms:\n    - {count: 50, name: \"x{i}\", seed: 5, guests:"
                         " [{guest: small, weight: 3}, {guest: big}]}\n  vms:\n")
    s = _load(text)
    assert s.cluster is not None
    hosts = expand_hosts(s.cluster)
    assert [(h.name, h.rack) for h in hosts[3:]] == [("g0", "gr0"), ("g1", "gr0"),
                                                    ("g2", "gr1"), ("g3", "gr1")]
    assert hosts[3].supports == frozenset()
    guests = expand_guests(s, hosts)
    assert [g.name for g in guests[3:6]] == ["x0", "x1", "x2"]
    again = expand_guests(_load(text), hosts)
    assert [(g.kind.name, g.host) for g in guests] == [(g.kind.name, g.host) for g in again]
    kinds = Counter(g.kind.name for g in guests[3:])
    assert 25 <= kinds["small"] <= 48  # weights 3:1 of 50


def test_placement_prefers_the_source_rack_then_the_least_loaded_host_with_room() -> None:
    """The placement rule: same rack first, least committed memory, room respected."""
    s = _load(SMALL)
    assert s.cluster is not None
    hosts = expand_hosts(s.cluster)
    cluster = Cluster(hosts, expand_guests(s, hosts))
    v0, v1 = cluster.guests["v0"], cluster.guests["v1"]
    assert place(cluster, v0, {"a"}) == "b"  # same rack as a
    assert place(cluster, v1, {"a"}) == "c"  # b has 8 MiB left
    cluster.reserved["c"] = 0
    assert place(cluster, v1, {"a", "b"}) == "c"  # other rack; c has 64 MiB
    assert cluster.free("c") == 32 * 2**20
    assert place(cluster, v1, {"a", "b"}) == "c"  # exactly fills it
    assert place(cluster, v0, {"a", "b"}) is None  # no room left


# --- runs ----------------------------------------------------------------------------------------


def test_an_evacuation_moves_every_guest_off_the_host() -> None:
    r = sim.run(_load(SMALL.replace('qemu_version: "1.1"', 'qemu_version: "2.12"')))
    runs = r.runs
    assert list(runs.vm) == ["v0", "v1"]
    assert (runs.status == "completed").all()
    assert set(runs.source_host) == {"a"}
    assert list(runs.destination_host) == ["b", "c"]  # b has room for v0 only
    assert list(runs.path) == ["a.tx,b.rx", "a.tx,r0.up,core,r1.down,c.rx"]
    assert set(r.extra) == {"queues", "links"}
    assert (r.extra["queues"].groupby("host").last()[["outbound_running",
                                                       "inbound_running"]] == 0).all().all()


def _idle_pair(uplink: str, same_rack: bool) -> pd.DataFrame:
    racks = ("r0", "r0", "r0", "r0") if same_rack else ("r0", "r0", "r1", "r1")
    hosts = "\n".join(f"    - {{name: h{i}, rack: {r}}}" for i, r in enumerate(racks))
    text = f"""\
seed: 1
vm: {{memory: 64MiB}}
migration: {{max_bandwidth: 0B/s}}
cluster:
  hosts:
{hosts}
  topology: {{nic: 8Gbit/s, uplink: {uplink}, core: 100Gbit/s, nic_latency: 0s,
             uplink_latency: 0s, core_latency: 0s}}
  vms: [{{name: v0, host: h0}}, {{name: v1, host: h1}}]
  plan: {{kind: moves, moves: [{{vm: v0, host: h2}}, {{vm: v1, host: h3}}]}}
  scheduler: {{max_concurrent: 2}}
"""
    return sim.run(_load(text)).runs


def test_two_idle_guests_share_one_uplink_fairly_and_separate_nics_do_not() -> None:
    """Closed forms: two idle guests behind one 2 Gbit/s uplink each get 1 Gbit/s; in one rack
    (separate NICs of 8 Gbit/s) each gets its NIC: bytes sent / time sending = the share."""
    ram = 64 * 2**20
    for same_rack, share in ((False, 2e9 / 8 / 2), (True, 8e9 / 8)):
        runs = _idle_pair("2Gbit/s", same_rack)
        assert (runs.status == "completed").all()
        for _, row in runs.iterrows():
            assert row.transferred_bytes >= ram
            rate = row.transferred_bytes / (row.total_time_s - row.setup_time_s)
            assert rate == pytest.approx(share, rel=0.005)


# --- invariants from the tables of random clusters -----------------------------------------------


def _random_cluster(seed: int) -> str:
    rng = np.random.default_rng(seed)
    n_hosts = int(rng.integers(3, 7))
    versions = ["1.1", "2.12"]
    hosts = "\n".join(
        f"    - {{name: h{i}, rack: r{i % 2}, qemu_version: \"{versions[int(rng.integers(2))]}\","
        f" cores: {int(rng.integers(1, 4))}, memory: {['48MiB', '96MiB', '1GiB'][int(rng.integers(3))]}}}"
        for i in range(n_hosts))
    n_vms = int(rng.integers(6, 15))
    vms = ", ".join(f"{{name: v{i}, host: h{int(rng.integers(n_hosts))}, "
                    f"guest: {['calm', 'busy'][int(rng.integers(2))]}}}" for i in range(n_vms))
    kind = ["evacuate", "moves", "rolling-upgrade"][seed % 3]
    if kind == "evacuate":
        plan = f"{{kind: evacuate, hosts: [h0, h{n_hosts - 1}]}}"
    elif kind == "moves":
        moves = ", ".join(f"{{vm: v{i}, host: h{int(rng.integers(n_hosts))}}}"
                          for i in range(n_vms))
        plan = f"{{kind: moves, moves: [{moves}]}}"
    else:
        plan = "{kind: rolling-upgrade, to_version: \"2.12\", upgrade_time: 1s}"

    def limit() -> str:
        return str(int(rng.integers(1, 4))) if rng.random() < 0.7 else "null"

    policy = ["none", "qemu", "management", "inband", "whole-cluster"][int(rng.integers(5))]
    order = ["fifo", "smallest-first", "largest-first", "least-dirty-first"][int(rng.integers(4))]
    return f"""\
name: random{seed}
seed: {seed}
vms:
  - name: calm
    vm: {{memory: 16MiB}}
    workload: {{kind: uniform, writes_per_s: 300}}
  - name: busy
    vm: {{memory: 24MiB}}
    workload: {{kind: hotspot, writes_per_s: 6000, hot_set: 4MiB}}
migration:
  capabilities: [xbzrle]
  max_bandwidth: 0B/s
  downtime_limit: 20ms
  max_sim_time: 30s
cluster:
  hosts:
{hosts}
  topology: {{nic: 1Gbit/s, uplink: 1Gbit/s, core: 2Gbit/s}}
  vms: [{vms}]
  plan: {plan}
  scheduler: {{max_concurrent: {limit()}, max_outbound: {limit()}, max_inbound: {limit()},
              max_per_link: {limit()}, order: {order}, retries: {int(rng.integers(0, 3))},
              retry_backoff: 2s}}
  policy: {policy}
"""


def _peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at once."""
    points = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals],
                    key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("seed", range(20))
def test_random_clusters_keep_every_limit_and_lose_nothing(seed: int) -> None:
    """From the tables alone: no limit is ever exceeded (concurrency rebuilt from start and end
    times), every guest ends on exactly one host (each migration leaves from where the guest
    is), a failed migration leaves the guest on its source and is retried or reported, and the
    same seed gives identical tables."""
    text = _random_cluster(seed)
    s = _load(text, f"random{seed}.yaml")
    r = sim.run(s)
    runs = r.runs.sort_values("migration_id")
    cluster = s.cluster
    assert cluster is not None
    limits = cluster.scheduler
    hosts = {h.name: h for h in expand_hosts(cluster)}
    started = runs[runs.attempt > 0]
    spans = list(zip(started.start_s, started.end_s, strict=True))
    if limits.max_concurrent is not None:
        assert _peak(spans) <= limits.max_concurrent
    for host, h in hosts.items():
        out = started[started.source_host == host]
        cap = min(limits.max_outbound or h.cores, h.cores)
        assert _peak(list(zip(out.start_s, out.end_s, strict=True))) <= cap
        if limits.max_inbound is not None:
            into = started[started.destination_host == host]
            assert _peak(list(zip(into.start_s, into.end_s, strict=True))) <= limits.max_inbound
    if limits.max_per_link is not None:
        for link in {n for p in started.path for n in p.split(",")}:
            on = started[started.path.str.split(",").apply(lambda p, k=link: k in p)]
            assert _peak(list(zip(on.start_s, on.end_s, strict=True))) <= limits.max_per_link
    # every guest on exactly one host: follow each guest from its first host
    where = {g.name: g.host for g in expand_guests(s, list(hosts.values()))}
    for _, row in runs.iterrows():
        assert row.pages_lost == 0
        if row.attempt == 0:  # no host had room: reported, guest stays
            assert row.status == "failed" and row.failure_reason.startswith("placement")
            continue
        assert row.source_host == where[row.vm]  # it leaves from where it runs
        if row.status == "completed":
            where[row.vm] = row.destination_host
    # a guest never migrates twice at once
    for _, group in started.groupby("vm"):
        assert _peak(list(zip(group.start_s, group.end_s, strict=True))) <= 1
    # failed attempts are retried (same move) until the retries run out, else reported
    for _, row in started[started.status != "completed"].iterrows():
        later = started[(started.vm == row.vm) & (started.step == row.step)
                        & (started.attempt == row.attempt + 1)]
        if row.attempt <= limits.retries:
            assert len(later) == 1
            assert later.iloc[0].start_s >= row.end_s + limits.retry_backoff - EPS
            assert later.iloc[0].destination_host == row.destination_host
        else:
            assert later.empty
    again = sim.run(_load(text, f"random{seed}.yaml"))
    for name, frame in r.tables().items():
        pd.testing.assert_frame_equal(frame, again.tables()[name], obj=name)
    for name, frame in r.extra.items():
        pd.testing.assert_frame_equal(frame, again.extra[name], obj=name)


def test_smallest_first_starts_guests_in_memory_order() -> None:
    """With one migration at a time, smallest-first starts them by memory, ties in plan order."""
    text = SMALL.replace("  plan: {kind: evacuate, hosts: [a]}",
                         "  plan: {kind: evacuate, hosts: [a, b]}\n"
                         "  scheduler: {max_concurrent: 1, order: largest-first}")
    text = text.replace("memory: 64MiB}", "memory: 1GiB}")
    runs = sim.run(_load(text)).runs.sort_values("start_s")
    assert list(runs.vm) == ["v1", "v0", "v2"]
    assert (runs.end_s.to_numpy()[:-1] <= runs.start_s.to_numpy()[1:] + EPS).all()


# --- the seed's study ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rollout() -> pd.DataFrame:
    s = load_scenario(ROOT / "scenarios" / "cluster-rollout.yaml",
                      overrides={"cluster.scheduler.max_concurrent": 2})
    assert s.sweep is not None
    return sim.run(s).runs


def _xbzrle(caps: pd.Series) -> pd.Series:
    return caps.str.split(",").apply(lambda c: "xbzrle" in c)


def test_rollout_none_fails_exactly_where_the_destination_cannot_decode_xbzrle(rollout) -> None:
    runs = rollout[rollout["cluster.policy"] == "none"]
    cannot = _xbzrle(runs.source_supports) & ~_xbzrle(runs.destination_supports)
    assert cannot.any() and (~cannot).any()
    assert list(runs.status != "completed") == list(cannot)
    assert runs[cannot].failure_reason.str.contains("load of migration failed").all()
    assert (runs.pages_lost == 0).all()


@pytest.mark.parametrize("policy", ["management", "inband"])
def test_rollout_negotiation_completes_all_with_xbzrle_where_both_support_it(rollout,
                                                                              policy) -> None:
    runs = rollout[rollout["cluster.policy"] == policy]
    assert (runs.status == "completed").all()
    both = _xbzrle(runs.source_supports) & _xbzrle(runs.destination_supports)
    assert both.any() and (~both).any()
    assert list(_xbzrle(runs.capabilities)) == list(both)
    assert (runs[both].xbzrle_pages > 0).all()


def test_rollout_whole_cluster_uses_xbzrle_only_once_every_host_has_it(rollout) -> None:
    runs = rollout[rollout["cluster.policy"] == "whole-cluster"]
    assert (runs.status == "completed").all()
    used = _xbzrle(runs.capabilities)
    assert used.any()
    # only in the last step, the return to the last host upgraded
    assert set(runs[used].step) == {runs.step.iloc[-1]}
    assert runs[used].step.iloc[0].startswith("return")


def test_a_cluster_result_saves_its_extra_tables_and_draws_its_figures(tmp_path) -> None:
    """``queues`` and ``links`` are saved and loaded with the four tables; the standard figures
    of a cluster are its Gantt chart and downtime CDF; run ids are unique per migration."""
    from sim.figures import draw_standard_figures

    r = sim.run(_load(SMALL.replace("{name: v2, host: b, guest: small}",
                                    "{name: v2, host: a, guest: small}")))
    assert r.runs.run_id.is_unique
    r.save(tmp_path / "out")
    back = sim.Result.load(tmp_path / "out")
    for name in ("queues", "links"):
        pd.testing.assert_frame_equal(back.extra[name], r.extra[name], obj=name)
    links = back.extra["links"]
    assert {"a.tx", "b.rx"} <= set(links.link)
    assert (links.used_bytes_per_s <= links.capacity_bytes_per_s * (1 + 1e-9)).all()
    written = {p.name for p in draw_standard_figures(back, tmp_path / "fig", report=False)}
    assert written == {"gantt.png", "downtime-cdf.png", "link-utilisation.png", "bytes-by-tier.png"}


def test_a_failing_move_is_retried_after_its_backoff_and_the_guest_stays() -> None:
    """Policy none, a 2.12 source sending XBZRLE to a 1.1 destination: every attempt fails at the
    first XBZRLE record; with retries 2 there are three attempts, each ``retry_backoff`` after
    the previous one's end, and the guest is still on its source, nothing lost."""
    text = SMALL.replace("  plan: {kind: evacuate, hosts: [a]}",
                         "  plan: {kind: moves, moves: [{vm: v1, host: b}]}\n"
                         "  scheduler: {retries: 2, retry_backoff: 5s}\n  policy: none")
    r = sim.run(_load(text))
    runs = r.runs
    assert list(runs.attempt) == [1, 2, 3]
    assert (runs.status == "failed").all()
    assert runs.failure_reason.str.contains("load of migration failed").all()
    assert (runs.pages_lost == 0).all()
    gaps = runs.start_s.to_numpy()[1:] - runs.end_s.to_numpy()[:-1]
    assert gaps == pytest.approx([5.0, 5.0])
    queues = r.extra["queues"]
    a = queues[queues.host == "a"]
    assert a.outbound_queued.max() == 1 and a.outbound_running.max() == 1
    assert (a.iloc[-1][["outbound_queued", "outbound_running"]] == 0).all()


def test_cross_traffic_takes_its_share_of_a_nic() -> None:
    """Closed form: 2 Gbit/s of cross traffic on the source's 8 Gbit/s NIC leaves an idle
    guest's migration 6 Gbit/s (max-min: the cross flow wants less than an equal share)."""
    text = """\
seed: 1
vm: {memory: 64MiB}
migration: {max_bandwidth: 0B/s}
cluster:
  hosts: [{name: h0}, {name: h1}]
  topology: {nic: 8Gbit/s, nic_latency: 0s}
  cross_traffic: [{link: h0.tx, bandwidth: 2Gbit/s}]
  vms: [{name: v0, host: h0}]
  plan: {kind: moves, moves: [{vm: v0, host: h1}]}
"""
    row = sim.run(_load(text)).runs.iloc[0]
    assert row.status == "completed"
    rate = row.transferred_bytes / (row.total_time_s - row.setup_time_s)
    assert rate == pytest.approx(6e9 / 8, rel=0.005)


def test_a_controller_runs_beside_every_cluster_migration() -> None:
    """A top-level controller: supervises each migration: libvirt's --timeout suspends guests
    that would never converge (their writes outrun the NIC), and each then completes."""
    text = SMALL.replace('qemu_version: "1.1"', 'qemu_version: "2.12"').replace(
        "workload: {kind: uniform, writes_per_s: 500}",
        "workload: {kind: uniform, writes_per_s: 200000, write_pattern: full}") + (
        "controller: {kind: libvirt, timeout: 1s, timeout_action: suspend}\n")
    r = sim.run(_load(text))
    small = r.runs[r.runs.vm == "v0"]
    assert (small.status == "completed").all()
    assert (small.total_time_s > 1.0).all()
    acted = r.events[(r.events.endpoint == "management") & (r.events.event == "controller")]
    assert set(small.run_id) <= set(acted.run_id)


def test_a_cluster_scenario_round_trips_through_its_dict() -> None:
    """to_dict / from_dict keep every cluster key (scenario.yaml in a results folder)."""
    from sim.scenario import from_dict, to_dict

    s = load_scenario(ROOT / "scenarios" / "cluster-rollout.yaml")
    assert from_dict(to_dict(s)) == s


def test_a_guest_moved_twice_in_one_plan_is_refused() -> None:
    text = SMALL.replace("  plan: {kind: evacuate, hosts: [a]}",
                         "  plan: {kind: moves, moves: [{vm: v0, host: b}, {vm: v0, host: c}]}")
    with pytest.raises(ScenarioError, match=r"cluster\.plan\.moves\[1\]\.vm: moves this guest"):
        _load(text)
