"""Operator-facing failover controls: pauses and cool-downs with their pulse events, and the planner's inputs.

The keys and their atomic operations live in :mod:`continuity.state.controls` and :mod:`continuity.state.nodes`;
this module adds what the failover side owes on top: every pause change is a pulse event, and node states get
the blueprint's freshness window.
"""

from __future__ import annotations

import time
from typing import Any

from continuity.blueprint import Blueprint
from continuity.events import FAILOVER_PAUSED, FAILOVER_RESUMED
from continuity.failover import records
from continuity.state import controls, nodes


def read_controls(client: Any, bp: Blueprint) -> tuple[set[str], bool, dict[str, float]]:
    """(paused services, global pause, cool-down end time per service)."""
    return controls.read(client, bp.services).as_tuple()


def set_cooldown(client: Any, service: str, until: float, now: float) -> None:
    """The key expires when the cool-down ends: it is a guard, not history (the record is the history)."""
    controls.set_cooldown(client, service, until, now)


def pause(client: Any, service: str | None, who: str, reason: str = "", now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    body = {"service": service, "who": who, "at": now, "reason": reason}
    controls.set_pause(client, service, body)
    records.pulse_for(client).emit(FAILOVER_PAUSED, service=service,
                                   data={"who": who, "scope": service or "all", "reason": reason})
    return body


def resume(client: Any, service: str | None, who: str, now: float | None = None) -> bool:
    was = controls.clear_pause(client, service)
    records.pulse_for(client).emit(FAILOVER_RESUMED, service=service,
                                   data={"who": who, "scope": service or "all", "was_paused": was})
    return was


def read_pauses(client: Any, bp: Blueprint) -> dict[str, dict[str, Any]]:
    """scope ('*' for global, else service) -> who/when/why."""
    return controls.read_pauses(client, bp.services)


def read_node_states(client: Any, bp: Blueprint, now: float | None = None,
                     fresh: float | None = None) -> dict[str, Any]:
    """The detector's view per node; nodes it has not classified fall back to last-seen freshness.

    The fallback lets an operator act before the detector has ever run (first
    start, detector down): a node seen within ``fresh`` seconds counts as alive.
    """
    now = time.time() if now is None else now
    fresh = fresh if fresh is not None else max(bp.policy.dead_after, 3 * bp.policy.heartbeat_interval)
    return nodes.read_states(client, bp.nodes, now, fresh)
