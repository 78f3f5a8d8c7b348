"""What `continuity status` shows: one read of Redis folded into a plain report.

The report is a pure function of the blueprint, a snapshot of Redis values and
the time, so what operators see is testable without a fleet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from continuity.blueprint import Blueprint
from continuity.state import fleet, leases, routes
from continuity.state import mode as state_mode
from continuity.state.fleet import RedisSnapshot
from continuity.state.values import object_or_raw

SEEN_FRESH = 30.0
# a detector silent this long (or 3 beats, or the dead-after time, if longer) no longer speaks for the fleet
STALE_FLOOR = 10.0


def _json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def detector_view(bp: Blueprint, snap: RedisSnapshot, now: float) -> dict[str, Any] | None:
    """When the detector last swept, and whether its classifications are too old to show as the truth.

    The node states in Redis are whatever the last sweep wrote: if the detector stopped (beat gone, no
    control worker, Redis blip), they would keep saying "alive" forever. Past a few heartbeat intervals without
    a sweep they are reported as stale, not as the fleet's state. None when no detector ever ran.
    """
    meta = _json(snap.detector_meta)
    last = meta.get("last_sweep") if isinstance(meta, Mapping) else None
    if last is None and not snap.detector:
        return None
    stale_after = max(STALE_FLOOR, 3 * bp.policy.heartbeat_interval, bp.policy.dead_after)
    try:
        age = None if last is None else max(0.0, now - float(last))
    except (TypeError, ValueError):
        age = None
    return {"last_sweep": last, "age": None if age is None else round(age, 3), "stale_after": stale_after,
            "stale": age is None or age > stale_after}


def build_report(bp: Blueprint, snap: RedisSnapshot, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    when = datetime.fromtimestamp(now, UTC)
    detector = detector_view(bp, snap, now)
    nodes = []
    for nid, node in sorted(bp.nodes.items()):
        seen = float(snap.seen[nid]) if nid in snap.seen else None
        det = _json(snap.detector.get(nid)) or {}
        age = (now - seen) if seen is not None else None
        state = det.get("state") if isinstance(det, Mapping) else None
        if state and detector is not None and detector["stale"]:
            state = f"unknown (detector stale, last said {state})"
        if not state:
            state = "seen" if age is not None and age <= SEEN_FRESH else ("stale" if seen else "never-seen")
        nodes.append({
            "id": nid, "kind": node.kind, "queue": bp.queue(nid),
            "registered": nid in snap.registry,
            "last_seen": seen, "seen_ago": round(age, 3) if age is not None else None,
            "seen": age is not None and age <= SEEN_FRESH,
            "state": state, "queue_depth": snap.queue_depth.get(nid, 0),
            "in_contact": bp.in_contact(nid, when),
        })
    services = []
    for sid in bp.topo_order():
        sv = bp.services[sid]
        route = routes.parse(sid, snap.routes.get(sid))
        lease = leases.parse_record(sid, snap.leases.get(sid))  # a lease key that exists is live (it has a TTL)
        epoch = snap.epochs.get(sid)
        services.append({
            "id": sid, "domain": sv.domain, "tier": sv.tier, "rto": sv.rto, "rpo": sv.rpo,
            "primary": routes.primary_of(bp, sid, lease, route).node, "declared_primary": sv.primary,
            "standbys": list(sv.standbys), "epoch": int(epoch) if epoch else 0,
            "lease_holder": lease.node if lease else None,
            "route": route.as_dict() if route else None,
        })
    mode = state_mode.parse(snap.mode) or {"mode": "unknown"}
    if detector is not None and detector["stale"]:
        mode = {**mode, "stale": True}
    config = [object_or_raw(raw) for _, raw in sorted(snap.config_errors.items())]
    return {"fleet": bp.model.fleet, "time": now, "mode": mode, "nodes": nodes, "services": services,
            "minimal_continuity_set": bp.minimal_continuity_set(), "config_errors": config, "detector": detector}


def read_snapshot(client: Any, bp: Blueprint) -> RedisSnapshot:
    return fleet.read_snapshot(client, bp.services, bp.queues())
