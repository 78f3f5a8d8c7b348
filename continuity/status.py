"""What `continuity status` shows: one read of Redis folded into a plain report.

The report is a pure function of the blueprint, a snapshot of Redis values and
the time, so what operators see is testable without a fleet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from continuity.blueprint import Blueprint
from continuity.state import controls, detector_leader, fleet, leases, queued, routes
from continuity.state import mode as state_mode
from continuity.state import replication as state_replication
from continuity.state.fleet import RedisSnapshot
from continuity.state.replication import Applied, Committed, StandbyLag, SyncMode
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
    """Who runs the detector, when it last swept, and whether its classifications are too old to show as the truth.

    The node states in Redis are whatever the last sweep wrote: if the detector stopped (no control worker,
    Redis blip), they would keep saying "alive" forever. Past a few heartbeat intervals without a sweep they are
    reported as stale, not as the fleet's state. ``leader`` is the control worker holding the detector's lease
    (None: nobody sweeps now); ``grace``/``tilt`` say until when the detector holds back after a gap in its view
    or its own pause. None when no detector ever ran.
    """
    meta = _json(snap.detector_meta)
    meta = meta if isinstance(meta, Mapping) else {}
    last = meta.get("last_sweep")
    leader = detector_leader.parse(snap.detector_leader, snap.detector_leader_pttl)
    if last is None and not snap.detector and leader is None:
        return None
    stale_after = max(STALE_FLOOR, 3 * bp.policy.heartbeat_interval, bp.policy.dead_after)
    try:
        age = None if last is None else max(0.0, now - float(last))
    except (TypeError, ValueError):
        age = None
    grace = meta.get("grace_until")
    tilt = meta.get("tilt_until")
    return {"last_sweep": last, "age": None if age is None else round(age, 3), "stale_after": stale_after,
            "stale": age is None or age > stale_after, "leader": leader.as_dict() if leader else None,
            "grace": {"until": grace, "reason": meta.get("grace_reason")} if _later(grace, now) else None,
            "tilt_until": tilt if _later(tilt, now) else None}


def _later(at: Any, now: float) -> bool:
    try:
        return at is not None and float(at) > now
    except (TypeError, ValueError):
        return False


def node_state(bp: Blueprint, det: Mapping[str, Any], state: str | None, seen_age: float | None) -> str | None:
    """The detector's word for a node, with why it can read "dead" beside a heartbeat seen just now.

    A node that died and beats again stays dead (or suspect) until ``recover_beats`` timely beats in a row
    (hysteresis, so a flapping node is not handed roles back and forth): say it is recovering. A node
    whose beats reach Redis but are not accepted (bad signature, replayed sequence) is named as such."""
    if state not in ("dead", "suspect") or seen_age is None or seen_age > bp.policy.suspect_after:
        return state
    arrival, since = det.get("last_arrival"), det.get("since")
    try:
        accepted = arrival is not None and float(arrival) >= float(since or 0)
    except (TypeError, ValueError):
        accepted = False
    if accepted:
        return f"{state}, recovering ({int(det.get('good_beats') or 0)}/{bp.policy.recover_beats} beats)"
    return f"{state}, beats not accepted"


def live_standbys(bp: Blueprint, sid: str, primary: str | None) -> list[str]:
    """The placement's nodes other than where the service runs now: after a failover the old primary is the
    standby, and the node that took over is not listed as one."""
    sv = bp.services[sid]
    return [n for n in dict.fromkeys([sv.primary, *sv.standbys]) if n != primary]


def running(snap: RedisSnapshot, now: float) -> dict[str, Any]:
    """Failovers still open and the drill in progress, if any: what must not be disturbed right now."""
    failovers = []
    for rid, raw in sorted(snap.running_failovers.items()):
        meta = _json(raw) or {}
        started = meta.get("started")
        failovers.append({"id": rid, "service": meta.get("service"), "kind": meta.get("kind"),
                          "from": meta.get("old_primary"), "to": meta.get("candidate"),
                          "age": None if started is None else round(max(0.0, now - float(started)), 3)})
    drill = str(snap.drill_active).split("|")[0] if snap.drill_active else None
    return {"failovers": failovers, "drill": drill, "incidents": sorted(snap.incidents)}


# a replicator publishes twice a second: a row older than this means it stopped (or the primary is gone)
REPLICATION_STALE = 5.0


@dataclass(frozen=True)
class ReplicationSnapshot:
    """What the replicators published (:mod:`continuity.state.replication`), read beside the Redis snapshot."""

    lags: dict[str, list[StandbyLag]] = field(default_factory=dict)
    applied: dict[str, list[Applied]] = field(default_factory=dict)
    modes: dict[str, SyncMode] = field(default_factory=dict)
    committed: dict[str, dict[str, Committed]] = field(default_factory=dict)


def read_replication(client: Any, bp: Blueprint) -> ReplicationSnapshot:
    services = list(bp.services)
    return ReplicationSnapshot(state_replication.read_lags(client, services),
                               state_replication.read_applied(client, services),
                               state_replication.read_modes(client, services),
                               state_replication.read_committed(client, services))


def replication_mode(bp: Blueprint, sid: str, repl: ReplicationSnapshot, primary: str | None) -> str:
    """The service's replication mode as operators need it: ``sync(N)``, ``degraded`` (a sync service acknowledging
    without standbys), ``async``, or ``off``/``-`` (nothing to replicate)."""
    sv = bp.services[sid]
    if not sv.spec.data or not sv.standbys:
        return "-"
    spec = sv.replication
    if spec.mode != "sync":
        return spec.mode
    m = repl.modes.get(sid)
    if m is not None and m.mode == "degraded" and m.primary == primary:
        return "degraded"
    return f"sync({spec.need})"


def current_lags(repl: ReplicationSnapshot, sid: str, primary: str | None, now: float) -> list[StandbyLag]:
    """The lags that speak for ``sid`` now: published by its current primary, about another node, recently.

    A row from a former primary, or one its replicator stopped refreshing, describes a past that the standby may
    have left long ago; `status` and the metrics both show only these, so they cannot disagree."""
    return [lag for lag in repl.lags.get(sid, [])
            if lag.primary == primary and lag.standby != primary and now - lag.updated <= REPLICATION_STALE]


def replication_rows(bp: Blueprint, repl: ReplicationSnapshot, primaries: Mapping[str, str | None],
                     now: float) -> list[dict[str, Any]]:
    """One row per standby and source: its lag as the current primary measured it; where the primary publishes
    nothing (it is gone), what each standby says it holds."""
    rows: list[dict[str, Any]] = []
    for sid in bp.topo_order():
        primary = primaries.get(sid)
        committed = repl.committed.get(sid, {})
        fresh = current_lags(repl, sid, primary, now)
        if fresh:
            for lag in fresh:
                rows.append({"service": sid, "source": lag.source, "standby": lag.standby, "from": lag.primary,
                             "state": lag.state, "lag_seconds": lag.lag_seconds, "lag_records": lag.lag_records,
                             "lag_bytes": lag.lag_bytes, "applied": [lag.acked_offset, lag.acked_count],
                             "age": round(max(0.0, now - lag.updated), 3),
                             **_committed_columns(committed.get(lag.source), lag.acked_count)})
            continue
        for a in repl.applied.get(sid, []):
            if a.node == primary:
                continue
            rows.append({"service": sid, "source": a.source, "standby": a.node, "from": a.primary,
                         "state": "holds" if now - a.updated <= REPLICATION_STALE else "stale",
                         "lag_seconds": None, "lag_records": None, "lag_bytes": None,
                         "applied": [a.offset, a.count], "age": round(max(0.0, now - a.updated), 3),
                         **_committed_columns(committed.get(a.source), a.count)})
    return rows


def _committed_columns(c: Committed | None, count: int | None) -> dict[str, Any]:
    """The role's committed position of the row's source, and how many of its records the standby lacks (a standby
    lacking some may not take the role: docs/continuity/failover.md)."""
    if c is None:
        return {"committed": None, "short": None}
    return {"committed": [c.epoch, c.count], "short": max(0, c.count - (count or 0))}


NEAR_FULL = 0.9


def _refusals(info: Mapping[str, Any], code: str) -> int:
    stat = info.get(f"errorstat_{code}")
    try:
        return int(stat.get("count", 0)) if isinstance(stat, Mapping) else 0
    except (TypeError, ValueError):
        return 0


def redis_view(info: Mapping[str, Any]) -> dict[str, Any]:
    """What the Redis server itself says that the fleet's keys cannot: is it refusing writes, and why.

    At ``maxmemory`` (policy ``noeviction``) Redis refuses every write: heartbeats, lease renewals and beat all
    fail while the last values written keep reading "normal". A failing AOF or RDB save (``MISCONF``), data
    still loading after a restart, or a replica answering instead of the master do the same or worse.
    """
    def num(name: str) -> int:
        try:
            return int(info.get(name) or 0)
        except (TypeError, ValueError):
            return 0

    used, limit = num("used_memory"), num("maxmemory")
    warnings: list[str] = []
    if limit and used >= limit:
        warnings.append(f"Redis is at maxmemory ({used} of {limit} bytes, policy "
                        f"{info.get('maxmemory_policy', '?')}): writes are refused — heartbeats, leases and beat "
                        f"fail ({_refusals(info, 'OOM')} refused so far)")
    elif limit and used >= NEAR_FULL * limit:
        warnings.append(f"Redis memory at {100 * used // limit}% of maxmemory ({used} of {limit} bytes): "
                        "writes will be refused when it is full")
    if str(info.get("aof_last_write_status", "ok")) != "ok":
        warnings.append("Redis cannot write its append-only file (aof_last_write_status "
                        f"{info.get('aof_last_write_status')}): writes may be refused")
    if str(info.get("rdb_last_bgsave_status", "ok")) != "ok":
        warnings.append("Redis's last RDB save failed: with stop-writes-on-bgsave-error it refuses writes "
                        f"(MISCONF, {_refusals(info, 'MISCONF')} refused so far)")
    if num("loading"):
        warnings.append("Redis is still loading its data after a restart")
    if info.get("role") not in (None, "master"):
        warnings.append(f"status was read from a Redis {info.get('role')}, not the master")
    return {"used_memory": used, "maxmemory": limit, "oom_refused": _refusals(info, "OOM"),
            "role": info.get("role"), "warnings": warnings}


def queued_view(raw: list[Any], now: float) -> list[dict[str, Any]]:
    """The oldest messages waiting in a node's queue, each with its expiry (an unreadable one says so)."""
    out = []
    for item in raw:
        q = queued.parse(item)
        out.append(q.as_dict(now) if q is not None else {"task": None, "unreadable": True})
    return out


def next_pass_view(bp: Blueprint, nid: str, now: float) -> dict[str, Any] | None:
    """The pass a satellite is in, or its next one (None for an always-connected node or when none is known)."""
    sched = bp.contact_schedule(nid)
    if not sched.intermittent:
        return None
    p = sched.next_pass(now)
    if p is None:
        return None
    return {"start": p.start, "end": p.end, "length": p.length, "in_pass": p.contains(now),
            "starts_in": round(max(0.0, p.start - now), 3)}


def build_report(bp: Blueprint, snap: RedisSnapshot, now: float | None = None,
                 repl: ReplicationSnapshot | None = None) -> dict[str, Any]:
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
        elif isinstance(det, Mapping):
            state = node_state(bp, det, state, age)
        if not state:
            state = "seen" if age is not None and age <= SEEN_FRESH else ("stale" if seen else "never-seen")
        nodes.append({
            "id": nid, "kind": node.kind, "queue": bp.queue(nid),
            "registered": nid in snap.registry,
            "last_seen": seen, "seen_ago": round(age, 3) if age is not None else None,
            "seen": age is not None and age <= SEEN_FRESH,
            "state": state, "queue_depth": snap.queue_depth.get(nid, 0),
            "in_contact": bp.in_contact(nid, when),
            "next_pass": next_pass_view(bp, nid, now),
            "queued": queued_view(snap.queued.get(nid) or [], now),
        })
    services = []
    for sid in bp.topo_order():
        sv = bp.services[sid]
        route = routes.parse(sid, snap.routes.get(sid))
        lease = leases.parse_record(sid, snap.leases.get(sid))  # a lease key that exists is live (it has a TTL)
        epoch = snap.epochs.get(sid)
        primary = routes.primary_of(bp, sid, lease, route).node
        services.append({
            "id": sid, "domain": sv.domain, "tier": sv.tier, "rto": sv.rto, "rpo": sv.rpo,
            "primary": primary, "declared_primary": sv.primary, "standbys": live_standbys(bp, sid, primary),
            "declared_standbys": list(sv.standbys), "epoch": int(epoch) if epoch else 0,
            "lease_holder": lease.node if lease else None,
            "route": route.as_dict() if route else None,
            "replication": replication_mode(bp, sid, repl or ReplicationSnapshot(), primary),
        })
    mode = state_mode.parse(snap.mode) or {"mode": "unknown"}
    if detector is not None and detector["stale"]:
        mode = {**mode, "stale": True}
    config = [object_or_raw(raw) for _, raw in sorted(snap.config_errors.items())]
    for n in nodes:
        n["primary_for"] = [s["id"] for s in services if s["primary"] == n["id"]]
    pauses = {scope: {**object_or_raw(raw), "expired": not controls.pause_in_force(raw, now)}
              for scope, raw in sorted(snap.pauses.items())}
    primaries = {s["id"]: s["primary"] for s in services}
    return {"fleet": bp.model.fleet, "time": now, "mode": mode, "nodes": nodes, "services": services,
            "minimal_continuity_set": bp.minimal_continuity_set(), "config_errors": config, "detector": detector,
            "running": running(snap, now), "pauses": pauses,
            "redis": redis_view(snap.server) if snap.server else None,
            "replication": replication_rows(bp, repl or ReplicationSnapshot(), primaries, now)}


def read_snapshot(client: Any, bp: Blueprint) -> RedisSnapshot:
    return fleet.read_snapshot(client, bp.services, bp.queues())
