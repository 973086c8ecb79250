"""Closed forms of pre-copy (published-results §3.2, §4.1), written once, used to check case data.

Why here and not only in the case files: every expected number in ``cases/*.yaml`` is a literal
taken from the published derivation; ``formula:`` in a case names one of these functions, and the
tests check that the function reproduces the literal. A typo in the data, or a formula
misremembered, then fails a test instead of silently moving the goalposts. The simulator is never
consulted here.

Conventions (published-results §6): round 0 is the bulk pass; a "live pass" is any pass before the
stop-and-copy; the stop-and-copy is not counted as a live pass. ``M`` bytes of RAM, ``R`` bytes/s,
``D`` new distinct bytes dirtied per second, ``d_max`` the downtime limit (threshold ``R·d_max``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sim import units

Quantities = dict[str, float]


def geometric(M: float, R: float, D: float, d_max: float, n_max: int | None = None,
              page: int | None = None) -> Quantities:
    """The textbook geometric model, closed form: λ = D/R, V_i = M·λ^i, stop when V ≤ R·d_max.

    n = ⌈ln(R·d_max/M) / ln λ⌉ live passes (at least 1), V_stop = M·λ^n, T_down = V_stop/R,
    T_mig = (M/R)(1 − λ^(n+1))/(1 − λ), V_mig = M(1 − λ^(n+1))/(1 − λ).
    """
    lam = D / R
    if not 0 < lam < 1:
        raise ValueError("the closed form needs 0 < D/R < 1 (use rounds() otherwise)")
    n = max(1, math.ceil(math.log(R * d_max / M) / math.log(lam)))
    if n_max is not None:
        n = min(n, n_max)
    out = {
        "live_passes": float(n),
        "downtime_s": M * lam**n / R,
        "total_time_s": (M / R) * (1 - lam ** (n + 1)) / (1 - lam),
        "transferred_bytes": M * (1 - lam ** (n + 1)) / (1 - lam),
    }
    if page:
        out.update({f"pass_pages[{i}]": M * lam**i / page for i in range(n)})
        out["stop_copy_pages"] = M * lam**n / page
        out["transferred_pages"] = out["transferred_bytes"] / page
    return out


def rounds(volume0: float, R: float, dirtied: Callable[[float], float], threshold: float,
           n_max: int | None = None, max_factor: float | None = None,
           page: float | None = None) -> Quantities:
    """The same round structure computed round by round, for any dirtying law.

    ``dirtied(T)`` is the volume dirty after a round of ``T`` seconds; a live round sends what the
    previous one left dirty. After live round k: stop if the next volume ≤ ``threshold``, or k+1 =
    ``n_max`` (Xen's iteration cap), or the total sent exceeds ``max_factor``·``volume0`` (Xen's
    data cap, published-results §2). Volumes in bytes, or in pages if ``R`` is in pages/s.
    """
    sent, t, n = 0.0, 0.0, 0
    volumes = [volume0]
    v = volume0
    while True:
        dt = v / R
        sent, t, n = sent + v, t + dt, n + 1
        v = dirtied(dt)
        if (v <= threshold or (n_max is not None and n >= n_max)
                or (max_factor is not None and sent > max_factor * volume0)):
            break
        volumes.append(v)
    out = {"live_passes": float(n), "downtime_s": v / R, "total_time_s": t + v / R,
           "transferred_bytes": sent + v}
    if page:
        out.update({f"pass_pages[{i}]": vol / page for i, vol in enumerate(volumes)})
        out["stop_copy_pages"] = v / page
        out["transferred_pages"] = (sent + v) / page
    return out


def linear(D: float, cap: float | None = None) -> Callable[[float], float]:
    """A constant rate of new distinct bytes, capped by a writable set (published-results §3.2)."""
    return lambda T: D * T if cap is None else min(cap, D * T)


def occupancy(pages: float, writes_per_s: float) -> Callable[[float], float]:
    """Uniform random writes over ``pages`` pages: E[distinct] = P(1 − (1 − 1/P)^(w·T))."""
    return lambda T: pages * (1 - (1 - 1 / pages) ** (writes_per_s * T))


def uniform_rounds(P: float, w: float, R_pages: float, d_max: float, page: int,
                   n_max: int | None = None) -> Quantities:
    """published-results V6/V7: uniform writes, volumes in pages, threshold R_pages·d_max."""
    out = rounds(P, R_pages, occupancy(P, w), R_pages * d_max, n_max=n_max, page=1)
    out["transferred_bytes"] = out.pop("transferred_pages") * page
    return out


def hot_set_rounds(M: float, H: float, w: float, R: float, d_max: float, page: int,
                   header: int = 0, n_max: int | None = None) -> Quantities:
    """A writable working set of ``H`` pages rewritten by uniform writes (Clark et al.'s WWS):
    after the bulk pass every round re-sends what the hot set got dirty (occupancy within H).
    Wire cost ``page + header`` bytes per page. ``M``, ``H`` in pages."""
    R_pages = R / (page + header)
    out = rounds(M, R_pages, occupancy(H, w), R_pages * d_max, n_max=n_max, page=1)
    out["transferred_bytes"] = out.pop("transferred_pages") * (page + header)
    return out


def simgrid_lv08(ram: float, bandwidth: float, latency: float, vms: int = 1) -> Quantities:
    """SimGrid's idle-VM migration time under its LV08 network model (published-results §4.1):
    the flow gets bandwidth × 0.97 shared with 5% reverse traffic, and three control messages each
    cost 13.01 × the route latency. ``vms`` identical migrations share the link fairly."""
    rate = bandwidth * 0.97 / 1.05 / vms
    return {"total_time_s": ram / rate + 3 * 13.01 * latency, "downtime_s": 0.0}


def idle(M: float, R: float) -> Quantities:
    """An idle guest: one pass of M bytes, nothing left for the stop-and-copy."""
    return {"total_time_s": M / R, "downtime_s": 0.0, "transferred_bytes": M}


FORMULAS: dict[str, Callable[..., Quantities]] = {
    "geometric": geometric,
    "uniform_rounds": uniform_rounds,
    "hot_set_rounds": hot_set_rounds,
    "simgrid_lv08": simgrid_lv08,
    "idle": idle,
    "xen_rounds": lambda M, R, D, d_max, cap=None, n_max=29, max_factor=3.0, page=None: rounds(
        M, R, linear(D, cap), R * d_max, n_max=n_max, max_factor=max_factor, page=page),
}


def _number(value: Any) -> Any:
    """A formula argument: a number, or a size / rate / time with units ("1GiB", "128MiB/s")."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("/s"):
        return units.parse_rate(text)
    if text[-1:] == "s" and not text.endswith("Bs"):
        return units.parse_time(text)
    return units.parse_size(text)


def evaluate(spec: Mapping[str, Any]) -> Quantities:
    """``{name: geometric, M: 1GiB, ...}`` -> the formula's quantities."""
    args = {k: _number(v) for k, v in spec.items() if k != "name"}
    return FORMULAS[str(spec["name"])](**args)
