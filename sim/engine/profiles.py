"""Behaviour profiles by QEMU version (``migration.qemu_version``): what differs between releases.

A comparison with a real QEMU must use that QEMU's rules. Each rule below names the release that
changed it (REF §1.4, §4.2, §6.2, §7.5); everything else is the same in every release migsim
models. ``resolve`` fills the version's defaults into a migration section; the engine asks
``profile(version)`` for the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..capabilities import parse_version
from ..spec import MigrationSpec
from ..units import MiB


@dataclass(frozen=True, slots=True)
class Profile:
    version: tuple[int, int, int]
    #: max-bandwidth default: 32 MiB/s before 5.2, 128 MiB/s since
    default_max_bandwidth: float
    #: avail-switchover-bandwidth exists (8.2+); before, the estimate is always used
    avail_switchover_bandwidth: bool
    #: auto-converge's 5 s periodic sync (9.2+)
    periodic_sync: bool
    #: precopy passes through the ``device`` state before completing (10.0+)
    device_state: bool


def profile(version: str) -> Profile:
    v = parse_version(version)
    return Profile(
        version=v,
        default_max_bandwidth=(128 if v >= (5, 2, 0) else 32) * MiB,
        avail_switchover_bandwidth=v >= (8, 2, 0),
        periodic_sync=v >= (9, 2, 0),
        device_state=v >= (10, 0, 0),
    )


def resolve(spec: MigrationSpec) -> MigrationSpec:
    """``spec`` with the version's defaults where the scenario left them open, and parameters the
    version does not have switched off."""
    p = profile(spec.qemu_version)
    if spec.max_bandwidth is None:
        spec = dataclasses.replace(spec, max_bandwidth=p.default_max_bandwidth)
    if not p.avail_switchover_bandwidth and spec.avail_switchover_bandwidth:
        spec = dataclasses.replace(spec, avail_switchover_bandwidth=0.0)
    return spec


def max_bandwidth(spec: MigrationSpec) -> float:
    """The byte budget per second (0: unlimited), the version's default when left open."""
    if spec.max_bandwidth is None:
        return profile(spec.qemu_version).default_max_bandwidth
    return spec.max_bandwidth
