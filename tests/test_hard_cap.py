"""``migration.max_sim_time`` is a hard cap: no page, wait or device-state push runs past it
(issue 20: a 30 s cap once reported 32976 s at 1 bit/s)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.scenario import load_scenario

CAP_S = 30.0

SCENARIOS = {
    # one page takes ~33,000 s at 1 bit/s: the live loop's chunk crosses the cap
    "live-page": "vm: {memory: 16MiB}\nlink: {bandwidth: 1bit/s}\n",
    # the link drops to 1 bit/s during stop-and-copy: the last stage's chunk crosses the cap
    "stop-and-copy": ("vm: {memory: 64MiB}\n"
                      "link: {bandwidth: 1Gbit/s, schedule: [{at: 0.6s, bandwidth: 1bit/s}]}\n"
                      "workload: {kind: uniform, writes_per_s: 20000}\n"
                      "migration: {switchover: rounds, max_passes: 1}\n"),
    # a device state far too big for the cap
    "device-state": ("vm: {memory: 16MiB, device_state: 1TiB}\n"
                     "link: {bandwidth: 1Gbit/s}\n"),
}


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_a_run_that_reaches_max_sim_time_ends_there(case: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = SCENARIOS[case].replace("migration: {", f"migration: {{max_sim_time: {CAP_S:g}s, ")
    if "migration:" not in text:
        text += f"migration: {{max_sim_time: {CAP_S:g}s}}\n"
    path.write_text(f"name: {case}\n{text}")
    runs = sim.run(load_scenario(path)).runs
    row = runs.iloc[0]
    assert row["status"] == "cancelled", row.to_dict()
    assert row["failure_reason"] == "not converged"
    assert CAP_S - 1e-9 <= row["total_time_s"] <= CAP_S + 1e-6
