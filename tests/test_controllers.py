"""Management controllers (sim.controllers): each built-in's parameter schedule is replayed from
the events table by its documented rule (as the auto-converge oracle does), the commands take
effect as QEMU's (the threshold follows a new downtime-limit), plug-ins work under every
negotiation mode, and a controller that raises cancels its migration cleanly."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sim.controllers import CONTROLLERS
from sim.errors import ScenarioError
from sim.recorder import event_field
from sim.run import Testbed, run_one
from sim.scenario import load_scenario, loads_scenario, to_dict
from sim.units import GiB

# A guest that does not converge on its own at QEMU's defaults over 1 Gbit/s.
HARD = """
name: hard
vm: {memory: 256MiB}
workload: {kind: hotspot, writes_per_s: 60000, hot_set: 80MiB, write_pattern: full}
link: {bandwidth: 1Gbit/s}
migration: {max_bandwidth: 0, max_time: %s}
"""


def hard(max_time: str = "60s", **controller: object) -> str:
    text = HARD % max_time
    if controller:
        text += "controller: " + json.dumps(controller) + "\n"
    return text


def actions(result, name: str | None = None) -> list[tuple[float, dict]]:
    ev = result.events
    rows = ev[(ev["event"] == "controller") & (ev["endpoint"] == "management")]
    out = [(float(t), json.loads(d)) for t, d in zip(rows["t_s"], rows["detail"], strict=True)]
    return [(t, d) for t, d in out if name is None or d["action"] == name]


def status_times(result) -> dict[str, float]:
    ev = result.events
    rows = ev[(ev["event"] == "MIGRATION") & (ev["endpoint"] == "source")]
    return {d: float(t) for t, d in zip(rows["t_s"], event_field(rows, "status"), strict=True)}


def downtime_sets(result) -> list[tuple[float, int]]:
    return [(t, d["downtime-limit"]) for t, d in actions(result, "migrate-set-parameters")]


def polls(t0: float, t_end: float, interval: float) -> list[float]:
    """The poll instants from the migration's start (exactly as the runtime adds them up)."""
    out, t = [], t0
    while t < t_end:
        out.append(t)
        t = t + interval
    return out


# --------------------------------------------------------------------------- nova


def test_nova_downtime_steps_replay_the_rule():
    """nova/virt/libvirt/migration.py: delay = int(75 s * data_gb), step i at int(delay*i) sets
    int(base + offset*i) ms, applied at the first 0.5 s poll whose elapsed time exceeds it."""
    text = hard("75s", kind="nova", steps=3, step_delay="10s")
    result = run_one(loads_scenario(text))
    st = status_times(result)
    t0 = st["setup"]
    t_end = min(st.get(k, math.inf) for k in ("device", "completed", "cancelled"))
    gb = max(2.0, 256 * 2**20 / GiB)  # nova's minimum data_gb of 2
    delay = int(10 * gb)
    base = 500 / 3
    offset = (500 - base) / 3
    steps = [(int(delay * i), int(base + offset * i)) for i in range(4)]
    expected, current = [], None
    for p in polls(t0, t_end, 0.5):
        this = None
        for step in steps:
            if p - t0 > step[0]:
                this = step
        if this is not None and this[1] != current:
            expected.append((p, this[1]))
            current = this[1]
    got = downtime_sets(result)
    assert [v for _, v in got] == [166, 277, 388, 500]
    assert [v for _, v in got] == [v for _, v in expected]
    assert [t for t, _ in got] == pytest.approx([t for t, _ in expected])
    # QEMU's threshold follows each new limit: bandwidth × downtime-limit, window by window.
    s = result.samples
    for (t, ms), nxt in zip(got, [*got[1:], (math.inf, 0)], strict=True):
        inside = s[(s["t_s"] > t + 0.11) & (s["t_s"] < nxt[0]) & (s["status"] == "active")]
        assert len(inside) > 0 or nxt[0] == math.inf  # the last one switched over at once
        assert list(inside["threshold_bytes"]) == pytest.approx(
            list(inside["bandwidth_bytes_per_s"] * ms / 1000)), ms


def test_nova_completion_timeout_aborts_at_the_first_poll_past_it():
    text = hard("120s", kind="nova", completion_timeout_per_gib="5s")  # 5 s × 2 GiB = 10 s
    result = run_one(loads_scenario(text))
    st = status_times(result)
    t0 = st["setup"]
    note = actions(result, "completion-timeout")
    first_past = min(p for p in polls(t0, 60, 0.5) if p - t0 > 10)
    assert note[0][0] == pytest.approx(first_past)
    assert actions(result, "migrate_cancel")[0][0] == pytest.approx(first_past)
    run = result.runs.iloc[0]
    assert run["status"] == "cancelled" and run["failure_reason"] == "migrate_cancel"
    assert st["cancelled"] - first_past <= 0.05 + 1e-9  # the chunk in flight ends first


def test_nova_force_complete_uses_postcopy_when_permitted():
    text = hard("120s", kind="nova", completion_timeout_per_gib="5s",
                timeout_action="force_complete", permit_postcopy=True)
    text += "\n"
    sc = loads_scenario(text, overrides={"migration.capabilities": ["postcopy-ram"]})
    result = run_one(sc)
    assert [d["action"] for _, d in actions(result)][-1] == "migrate-start-postcopy"
    assert "postcopy-active" in status_times(result)
    assert result.runs.iloc[0]["status"] == "completed"


# --------------------------------------------------------------------------- libvirt


def test_libvirt_timeout_suspend_stops_the_guest_at_n_seconds():
    result = run_one(loads_scenario(hard("60s", kind="libvirt", timeout="5s")))
    st = status_times(result)
    (t_stop, _), = actions(result, "stop")
    assert t_stop == pytest.approx(st["setup"] + 5)
    run = result.runs.iloc[0]
    assert run["status"] == "completed"
    # the guest was paused from the suspend to QEMU's own stop: lost CPU, every vCPU
    t_switch = float(result.events.query("event == 'switchover'")["t_s"].iloc[0])
    assert run["guest_cpu_lost_s"] == pytest.approx(t_switch - t_stop)
    # a paused guest writes nothing: once the chunk in flight (<= 50 ms) has ended, every sync
    # finds nothing new (pending before == pending after)
    ev = result.events
    syncs = ev[(ev["event"] == "dirty-sync") & (ev["t_s"] > t_stop + 0.05)]
    assert len(syncs) >= 1
    for detail in syncs["detail"]:
        fields = json.loads(detail)
        assert fields["pending_before_bytes"] == fields["pending_after_bytes"], detail


def test_libvirt_timeout_postcopy():
    sc = loads_scenario(hard("60s", kind="libvirt", timeout="5s", timeout_action="postcopy"),
                        overrides={"migration.capabilities": ["postcopy-ram"]})
    result = run_one(sc)
    (t, _), = actions(result, "migrate-start-postcopy")
    assert t == pytest.approx(status_times(result)["setup"] + 5)
    assert result.runs.iloc[0]["status"] == "completed"


# --------------------------------------------------------------------------- kubevirt


HARDER = ("256MiB", "512MiB"), ("hot_set: 80MiB", "hot_set: 200MiB")


def harder(text: str) -> str:
    for old, new in HARDER:
        text = text.replace(old, new)
    return text


def kubevirt_replay(result) -> tuple[list, list, list]:
    """(the ramp settings made, the ones the rule expects, the switchover notes): start at
    150 ms; from the bulk pass's end + 2 s, +(1050-150)/9 ms every 1 s, read at the 400 ms polls;
    a stall switchover ends the ramp (its own setting is checked apart)."""
    st = status_times(result)
    t0 = st["setup"]
    ev = result.events
    passes = ev[ev["event"] == "MIGRATION_PASS"]
    t_bulk = float(passes[event_field(passes, "pass") == 2]["t_s"].iloc[0])
    schedule = [(t_bulk + 2.0 + k * 1.0, round(150 + 900 * k / 9)) for k in range(1, 10)]
    sets = downtime_sets(result)
    assert sets[0] == (pytest.approx(t0), 150)
    switch = actions(result, "switchover")
    ramped = sets[1:-1] if switch else sets[1:]
    end = min(st.get(k, math.inf) for k in ("completed", "cancelled", "device"))
    if switch:
        end = switch[0][0] + 1e-9
    current, expected = 150, []
    for p in polls(t0, end, 0.4):
        due = [ms for t, ms in schedule if t <= p + 1e-9]
        if due and due[-1] > current:
            expected.append((p, due[-1]))
            current = due[-1]
    return ramped, expected, switch


def test_kubevirt_ramp_replays_the_rule():
    """The whole ramp: a guest whose rest never fits under the ceiling at once."""
    result = run_one(loads_scenario(harder(hard("60s", kind="kubevirt"))))
    ramped, expected, switch = kubevirt_replay(result)
    assert not switch
    assert [v for _, v in ramped] == [250, 350, 450, 550, 650, 750, 850, 950, 1050]
    assert [v for _, v in ramped] == [v for _, v in expected]
    assert [t for t, _ in ramped] == pytest.approx([t for t, _ in expected])
    assert result.runs.iloc[0]["status"] == "completed"


def test_kubevirt_stall_switches_over_near_the_minimum():
    """A stall (3 iterations without a new minimum), then, within 10 % of the minimum, the
    downtime limit that sends the rest at the measured rate with 25 % headroom."""
    result = run_one(loads_scenario(hard("60s", kind="kubevirt")))
    ramped, expected, switch = kubevirt_replay(result)
    assert [v for _, v in ramped] == [v for _, v in expected]
    assert [t for t, _ in ramped] == pytest.approx([t for t, _ in expected])
    (t_stall, stall), = actions(result, "stall")
    (t_switch, note), = switch
    assert t_stall < t_switch
    assert note["minimum_bytes"] <= stall["minimum_bytes"]
    assert note["remaining_bytes"] <= 1.10 * note["minimum_bytes"]
    needed = math.ceil(note["remaining_bytes"] / (note["mbps"] * 1e6 / 8) * 1000 * 1.25)
    assert note["needed_ms"] == needed <= 1050
    assert downtime_sets(result)[-1] == (pytest.approx(t_switch), needed)
    run = result.runs.iloc[0]
    assert run["status"] == "completed"
    assert status_times(result)["device"] - t_switch < 1.0  # QEMU switched soon after


def test_kubevirt_completion_timeout_is_150s_per_gib():
    text = hard("120s", kind="kubevirt", completion_timeout_per_gib="20s", downtime="200ms")
    result = run_one(loads_scenario(text))
    t0 = status_times(result)["setup"]
    note = actions(result, "completion-timeout")
    assert note[0][0] == pytest.approx(min(p for p in polls(t0, 60, 0.4) if p - t0 > 5.0))
    assert result.runs.iloc[0]["status"] == "cancelled"


def test_kubevirt_parallel_outbound_limits_a_fleet():
    text = textwrap.dedent("""
        name: fleet
        vm: {memory: 64MiB}
        workload: {kind: uniform, writes_per_s: 100}
        link: {bandwidth: 1Gbit/s}
        controller: {kind: kubevirt, parallel_outbound: 1}
        vms: [{name: a}, {name: b}, {name: c}]
    """)
    result = run_one(loads_scenario(text))
    ev = result.events
    spans = []
    for vm in ("a", "b", "c"):
        rows = ev[(ev["vm"] == vm) & (ev["event"] == "MIGRATION") & (ev["endpoint"] == "source")]
        times = dict(zip(event_field(rows, "status"), rows["t_s"], strict=True))
        spans.append((times["setup"], times["completed"]))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 1e-12  # one at a time
    assert spans[1][0] > 0
    assert (result.runs["status"] == "completed").all()


# --------------------------------------------------------------------------- vmotion-like


def test_vmotion_sets_its_goal_and_stuns_within_the_cap():
    result = run_one(loads_scenario(harder(hard("30s", kind="vmotion-like"))))
    assert downtime_sets(result)[0][1] == 500
    stops = [t for t, _ in actions(result, "stop")]
    conts = [t for t, _ in actions(result, "cont")]
    assert stops, "the guest outruns a 1 Gbit/s link: it must be stunned"
    for t_stop, t_cont in zip(stops, conts, strict=False):
        assert 0 < t_cont - t_stop <= 0.5 * 0.1 + 1e-9  # at most max_stun of a poll interval
    run = result.runs.iloc[0]
    paused = sum(c - s for s, c in zip(stops, conts, strict=False))
    assert run["guest_cpu_lost_s"] == pytest.approx(paused, rel=1e-6, abs=0.06)


# --------------------------------------------------------------------------- plug-ins

PLUGIN = textwrap.dedent('''
    import sim

    class Halver(sim.Controller):
        """halves the downtime limit at the first poll"""
        name = "test-halver"
        poll_interval = 0.25

        def start(self, client):
            self.done = False

        def poll(self, client, info):
            if not self.done and info.get("status") == "active":
                limit = client.query_migrate_parameters()["downtime-limit"]
                client.migrate_set_parameters(**{"downtime-limit": limit // 2})
                self.done = True

    class Boom(sim.Controller):
        name = "test-boom"

        def poll(self, client, info):
            if client.elapsed > 1.0:
                raise RuntimeError("controller bug")

    class BoomAtStart(sim.Controller):
        name = "test-boom-start"

        def start(self, client):
            raise KeyError("no such thing")

    class ExitOnEvent(sim.Controller):
        name = "test-exit-event"

        def event(self, client, name, data):
            if name == "MIGRATION_PASS" and data["pass"] == 2:
                client.stop()  # the guest is paused when it fails: it must run again
                import sys
                sys.exit(3)
''')


@pytest.fixture
def plugin_dir(tmp_path: Path):
    (tmp_path / "ctl_plugin_mod.py").write_text(PLUGIN)
    yield tmp_path
    sys.modules.pop("ctl_plugin_mod", None)
    for name in ("test-halver", "test-boom", "test-boom-start", "test-exit-event"):
        CONTROLLERS.pop(name, None)


@pytest.mark.parametrize("mode", ["none", "qemu", "management", "inband"])
def test_plugin_controller_under_every_negotiation_mode(plugin_dir: Path, mode: str):
    path = plugin_dir / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        vm: {{memory: 64MiB}}
        workload: {{kind: uniform, writes_per_s: 2000}}
        link: {{bandwidth: 1Gbit/s}}
        negotiation: {mode}
        migration: {{capabilities: [xbzrle]}}
        controller: ctl_plugin_mod:Halver
    """))
    sc = load_scenario(path)
    result = run_one(sc)
    sets = downtime_sets(result)
    assert [v for _, v in sets] == [150]
    assert sets[0][0] == pytest.approx(status_times(result)["active"], abs=0.25 + 1e-9)
    assert result.runs.iloc[0]["status"] == "completed"
    assert CONTROLLERS["test-halver"].__name__ == "Halver"


def test_a_raising_controller_cancels_cleanly(plugin_dir: Path):
    path = plugin_dir / "s.yaml"
    path.write_text(hard("30s") + "controller: {kind: 'ctl_plugin_mod:Boom'}\n")
    testbed = Testbed(load_scenario(path))
    from sim import controllers
    from sim.spec import ControllerSpec

    assert testbed.scenario.controller == ControllerSpec(kind="ctl_plugin_mod:Boom")
    controllers.start(testbed.env, testbed.pairs, testbed.scenario.controller, "qemu", False)
    testbed.run()
    run = testbed.result().runs.iloc[0]
    reason = run["failure_reason"]
    assert run["status"] == "cancelled" and run["pages_lost"] == 0
    assert reason.startswith("controller 'test-boom': poll() raised RuntimeError: controller bug")
    assert "\n" not in reason
    assert testbed.source.running  # the source's guest keeps running
    errors = actions(testbed.result(), "error")
    assert len(errors) == 1 and errors[0][1]["error"] == reason


@pytest.mark.parametrize(("cls", "reason"), [
    ("BoomAtStart", "controller 'test-boom-start': start() raised KeyError: 'no such thing'"),
    ("ExitOnEvent", "controller 'test-exit-event': event() called sys.exit(3)"),
])
def test_failures_anywhere_in_a_controller_cancel_cleanly(plugin_dir: Path, cls: str, reason: str):
    path = plugin_dir / "s.yaml"
    path.write_text(hard("30s") + f"controller: ctl_plugin_mod:{cls}\n")
    testbed = Testbed(load_scenario(path))
    from sim import controllers

    controllers.start(testbed.env, testbed.pairs, testbed.scenario.controller, "qemu", False)
    testbed.run()
    run = testbed.result().runs.iloc[0]
    assert (run["status"], run["failure_reason"], run["pages_lost"]) == ("cancelled", reason, 0)
    assert testbed.source.running
    assert testbed.pairs[0].migration.paused_at is None


def test_cli_reports_a_bad_controller_in_one_line(tmp_path: Path):
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncontroller:\n  kind: nova\n  timeout: 5s\n")
    out = subprocess.run([sys.executable, "-m", "sim", "check", str(bad)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert lines == [f"{bad}:4: controller.timeout: the nova controller does not read this key "
                     "(it reads: downtime, steps, step_delay, completion_timeout_per_gib, "
                     "timeout_action, permit_postcopy) (got 5s)"]


# --------------------------------------------------------------------------- the schema


def test_string_and_mapping_forms_agree_and_round_trip():
    a = loads_scenario(hard() + "controller: nova\n")
    b = loads_scenario(hard() + "controller: {kind: nova}\n")
    assert a.controller == b.controller
    c = loads_scenario(hard("60s", kind="nova", downtime="700ms", steps=4))
    assert loads_scenario(json.dumps(to_dict(c))) == c
    assert "controller" not in to_dict(loads_scenario(hard()))


def test_a_sweep_over_controller_names_sweeps_the_kind():
    sc = loads_scenario(hard() + "sweep: {grid: {controller: [nova, libvirt]}}\n")
    assert sc.sweep.grid == (("controller.kind", ("nova", "libvirt")),)


@pytest.mark.parametrize(("extra", "message"), [
    ("controller: novva\n", "controller.kind: 'novva' is not a known controller"),
    ("controller: {kind: libvirt, steps: 3}\n",
     "controller.steps: the libvirt controller does not read this key"),
    ("controller: {kind: nova, permit_postcopy: true}\n",
     "controller.permit_postcopy: post-copy needs postcopy-ram"),
    ("controller: {kind: nova, downtime: 50ms}\n",
     "controller.downtime: nova's live_migration_downtime is at least 100ms"),
    ("controller: {kind: libvirt, timeout_action: abort}\n",
     "controller.timeout_action: the libvirt controller's actions are suspend and postcopy"),
    ("controller: {kind: nova, stepz: 3}\n", "controller.stepz: unknown key; did you mean"),
])
def test_bad_controller_keys_are_one_line(extra: str, message: str):
    with pytest.raises(ScenarioError) as err:
        loads_scenario(hard() + extra, file="s.yaml")
    text = str(err.value)
    assert text.startswith("s.yaml:7: " + message), text
    assert "\n" not in text


def test_controller_none_changes_nothing():
    plain = run_one(loads_scenario(hard("20s")))
    managed = run_one(loads_scenario(hard("20s") + "controller: none\n"))
    for table in ("runs", "passes", "samples", "events"):
        pd.testing.assert_frame_equal(getattr(plain, table).drop(columns="run_id"),
                                      getattr(managed, table).drop(columns="run_id"))


def test_the_timeline_draws_the_downtime_limit_the_controller_set():
    import matplotlib

    matplotlib.use("Agg")
    from sim.plots import downtime_limits, plot_timeline

    result = run_one(loads_scenario(hard("60s", kind="kubevirt")))
    limits = downtime_limits(result.events)
    assert [ms for _, ms in downtime_sets(result)] == [round(v * 1000) for _, v in limits]
    ax = plot_timeline(result.samples, result.events, result.passes)
    lines = [ln for a in ax.figure.axes for ln in a.get_lines()
             if ln.get_label() == "downtime limit"]
    assert len(lines) == 1
    ys = list(lines[0].get_ydata())
    assert ys[:-1] == pytest.approx([v * 1000 for _, v in limits])
    matplotlib.pyplot.close(ax.figure)
    plain = plot_timeline(run_one(loads_scenario(hard("5s"))).samples)
    assert not [ln for a in plain.figure.axes for ln in a.get_lines()
                if ln.get_label() == "downtime limit"]
    matplotlib.pyplot.close(plain.figure)
