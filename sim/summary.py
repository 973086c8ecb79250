"""The runs row (DESIGN §6) of one migration, from its engine's named state: one builder for a
single run, a fleet's guests (:mod:`sim.run`) and a cluster's migrations (:mod:`sim.cluster`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .recorder import runs_row

if TYPE_CHECKING:
    from .endpoints import Pair


def migration_row(pair: Pair, seed: int, negotiation: str, now: float) -> dict[str, Any]:
    """The runs row (DESIGN §6) of ``pair``'s migration at sim time ``now``."""
    mig = pair.migration
    state = mig.state
    c = state.totals()
    xb = state.xbzrle_stats(int(mig.spec.xbzrle_cache_size))
    total = (state.total_time if state.ended
             else (now - state.t_migrate if state.status != "none" else 0.0))
    live = total - state.setup_time
    row: dict[str, Any] = {
        "seed": seed,
        "status": state.status,
        "failure_reason": state.failure_reason,
        "negotiation": negotiation,
        "capabilities": ",".join(sorted(mig.caps)),
        "total_time_s": total,
        "setup_time_s": state.setup_time,
        "downtime_s": state.downtime if state.status == "completed" else math.nan,
        "expected_downtime_s": state.expected_downtime,
        "transferred_bytes": state.transferred,
        "precopy_bytes": state.precopy_bytes,
        "downtime_bytes": state.downtime_bytes,
        "normal_pages": c["normal_pages"],
        "zero_pages": c["zero_pages"],
        "xbzrle_pages": c["xbzrle_pages"],
        "xbzrle_records": c["xbzrle_records"],
        "xbzrle_bytes": xb["bytes"],
        "xbzrle_cache_miss": xb["cache_miss"],
        "xbzrle_cache_miss_rate": xb["cache_miss_rate"],
        "xbzrle_encoding_rate": xb["encoding_rate"],
        "xbzrle_overflow": xb["overflow"],
        "plugin_pages": int(state.plugin_counts[:, 0].sum()),
        "plugin_bytes": int(state.plugin_counts[:, 1].sum()),
        "dirty_sync_count": state.sync_count,
        "mbps": (state.transferred * 8 / live / 1e6) if live > 0 else 0.0,
        "max_throttle_pct": state.max_throttle_pct,
        "guest_cpu_lost_s": state.guest_cpu_lost_s,
        "postcopy_faults": state.postcopy_faults,
        "postcopy_stall_s": state.postcopy_stall_s,
        "pages_lost": mig.pages_lost(),
    }
    if mig.guest.exact:
        row["memory_match"] = mig.pages_differing() == 0
    return runs_row(**row)
