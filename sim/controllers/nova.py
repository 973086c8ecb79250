"""OpenStack nova's live-migration monitor (nova/virt/libvirt/migration.py, driver.py).

Configuration options of the ``[libvirt]`` group, with nova's defaults and minimums:
``live_migration_downtime`` (500 ms, at least 100), ``live_migration_downtime_steps`` (10, at
least 3), ``live_migration_downtime_delay`` (75 s per GiB, at least 10),
``live_migration_completion_timeout`` (800 s per GiB; 0 disables it),
``live_migration_timeout_action`` (``abort`` or ``force_complete``) and
``live_migration_permit_post_copy`` (false).

* The amount of data is ``data_gb``: the flavor's RAM in GiB, at least 2 (``_live_migration_data_gb``;
  a block migration would add the disks, which migsim does not model).
* ``downtime_steps(data_gb)`` yields ``steps + 1`` pairs: with ``delay = int(delay_per_gib *
  data_gb)``, ``base = downtime / steps`` and ``offset = (downtime - base) / steps``, step ``i``
  is ``(int(delay * i), int(base + offset * i))``: from ``downtime/steps`` up to ``downtime``
  in equal increments.
* The monitor loop wakes every 0.5 s, takes ``elapsed`` since the migration started and
  (``update_downtime``) sets ``migrate-set-parameters downtime-limit`` to the last step whose time
  ``elapsed`` strictly exceeds, when that differs from the value it set before.
* With ``completion_timeout = int(completion_timeout_per_gib * data_gb)`` (when non-zero), once
  ``elapsed`` exceeds it and the migration is not in post-copy, the timeout action runs: ``abort``
  cancels the job (``migrate_cancel``); ``force_complete`` switches to post-copy when post-copy
  is permitted, else pauses the guest (``stop``).

Where I was unsure: the exact rounding (nova's ``int()`` on milliseconds and seconds is used);
that the timeout action runs once (here it does); older nova releases also switched to post-copy
on their own when an iteration made less than 10 % progress: not modelled (recent nova does not).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..spec import ControllerSpec, Scenario
from .base import Client, Controller, postcopy_asked, register_controller

DOWNTIME_MS, DOWNTIME_MIN_MS = 500, 100
STEPS, STEPS_MIN = 10, 3
DELAY_PER_GIB_S, DELAY_MIN_S = 75, 10
COMPLETION_PER_GIB_S = 800
MIN_DATA_GB = 2


def data_gb(ram_bytes: int) -> float:
    """nova's ``_live_migration_data_gb`` without block migration: RAM in GiB, at least 2."""
    return max(float(MIN_DATA_GB), ram_bytes / (1 << 30))


def downtime_steps(downtime_ms: int, steps: int, delay_per_gib_s: float,
                   gb: float) -> list[tuple[int, int]]:
    """nova's ``downtime_steps``: ``(seconds after the start, downtime-limit ms)`` pairs."""
    delay = int(delay_per_gib_s * gb)
    base = downtime_ms / steps
    offset = (downtime_ms - base) / steps
    return [(int(delay * i), int(base + offset * i)) for i in range(steps + 1)]


@register_controller
class Nova(Controller):
    """OpenStack nova: downtime steps, a completion timeout, post-copy when permitted."""

    name = "nova"
    keys: ClassVar[tuple[str, ...]] = ("downtime", "steps", "step_delay",
                                       "completion_timeout_per_gib", "timeout_action",
                                       "permit_postcopy")
    poll_interval: ClassVar[float] = 0.5  # the monitor loop's sleep

    @classmethod
    def refusal(cls, spec: ControllerSpec, scenario: Scenario) -> tuple[str, str] | None:
        if spec.downtime is not None and spec.downtime < DOWNTIME_MIN_MS / 1000:
            return "downtime", f"nova's live_migration_downtime is at least {DOWNTIME_MIN_MS}ms"
        if spec.steps is not None and spec.steps < STEPS_MIN:
            return "steps", f"nova's live_migration_downtime_steps is at least {STEPS_MIN}"
        if spec.step_delay is not None and spec.step_delay < DELAY_MIN_S:
            return "step_delay", f"nova's live_migration_downtime_delay is at least {DELAY_MIN_S}s"
        if spec.timeout_action not in (None, "abort", "force_complete"):
            return ("timeout_action", "nova's live_migration_timeout_action is abort or "
                                      f"force_complete, not {spec.timeout_action}")
        if spec.permit_postcopy and not postcopy_asked(scenario):
            return ("permit_postcopy", "post-copy needs postcopy-ram in migration.capabilities "
                                       "(nova asks libvirt for it)")
        return None

    def start(self, client: Client) -> None:
        gb = data_gb(client.ram_bytes)
        self.steps = downtime_steps(int(round(self.option("downtime", DOWNTIME_MS / 1000) * 1000)),
                                    int(self.option("steps", STEPS)),
                                    float(self.option("step_delay", DELAY_PER_GIB_S)), gb)
        self.completion_timeout = int(float(self.option("completion_timeout_per_gib",
                                                        COMPLETION_PER_GIB_S)) * gb)
        self.action = self.option("timeout_action", "abort")
        self.permit_postcopy = bool(self.option("permit_postcopy", False))
        self.downtime: int | None = None
        self.timed_out = False

    def poll(self, client: Client, info: dict[str, Any]) -> None:
        status = info.get("status")
        if status not in ("setup", "active"):
            return
        elapsed = client.elapsed
        this = None
        for step in self.steps:
            if elapsed > step[0]:
                this = step
        if this is not None and this[1] != self.downtime:
            client.migrate_set_parameters(**{"downtime-limit": this[1]})
            self.downtime = this[1]
        if (self.completion_timeout and not self.timed_out
                and elapsed > self.completion_timeout):
            self.timed_out = True
            client.note("completion-timeout", elapsed_s=round(elapsed, 6),
                        timeout_s=self.completion_timeout, then=self.action)
            if self.action == "abort":
                client.migrate_cancel()
            elif self.permit_postcopy:
                client.migrate_start_postcopy()
            else:
                client.stop()
