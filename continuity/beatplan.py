"""Which scheduled jobs to hold back when the fleet is degraded.

When capacity is short, the lowest tiers' routine work (snapshots, verifies,
drills) yields to what must survive. This is the whole rule, kept pure so the
scheduler shell only has to ask it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def should_skip(tier: int | None, mode: Mapping[str, Any]) -> bool:
    """True when a job of ``tier`` must not be sent under ``mode`` ({mode, shed_tiers})."""
    if tier is None or not mode:
        return False
    state = mode.get("mode", "normal")
    if state == "normal":
        return False
    shed = mode.get("shed_tiers")
    if shed is None:
        # no explicit list: degraded sheds tiers 2-3, critical sheds everything but tier 0
        shed = [2, 3] if state == "degraded" else [1, 2, 3]
    return int(tier) in {int(t) for t in shed}
