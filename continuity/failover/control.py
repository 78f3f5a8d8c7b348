"""Reading and changing the operator-facing failover state in Redis: pauses, cool-downs, routes, node states.

These are the inputs the pure planner needs, gathered in one place so the
detector's sweep, the CLI and the chain tasks all read them the same way.
Pauses are maintenance switches an operator sets and clears; they carry who set
them and why, and every change is a pulse event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from continuity import keys
from continuity.blueprint import Blueprint
from continuity.events import FAILOVER_PAUSED, FAILOVER_RESUMED
from continuity.failover import records


def read_controls(client: Any, bp: Blueprint) -> tuple[set[str], bool, dict[str, float]]:
    """(paused services, global pause, cool-down end time per service)."""
    services = sorted(bp.services)
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.failover_pause())
        for s in services:
            pipe.exists(keys.failover_pause(s))
        for s in services:
            pipe.get(keys.failover_cooldown(s))
        res = pipe.execute()
    global_pause = bool(res[0])
    paused = {s for s, p in zip(services, res[1:1 + len(services)], strict=True) if p}
    cooldowns: dict[str, float] = {}
    for s, raw in zip(services, res[1 + len(services):], strict=True):
        if raw:
            try:
                cooldowns[s] = float(raw)
            except ValueError:
                continue
    return paused, global_pause, cooldowns


def set_cooldown(client: Any, service: str, until: float, now: float) -> None:
    """The key expires when the cool-down ends: it is a guard, not history (the record is the history)."""
    ttl_ms = max(1, int((until - now) * 1000))
    client.set(keys.failover_cooldown(service), f"{until:.3f}", px=ttl_ms)


def pause(client: Any, service: str | None, who: str, reason: str = "", now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    body = {"service": service, "who": who, "at": now, "reason": reason}
    client.set(keys.failover_pause(service), json.dumps(body))
    records.pulse_for(client).emit(FAILOVER_PAUSED, service=service,
                                   data={"who": who, "scope": service or "all", "reason": reason})
    return body


def resume(client: Any, service: str | None, who: str, now: float | None = None) -> bool:
    was = bool(client.delete(keys.failover_pause(service)))
    records.pulse_for(client).emit(FAILOVER_RESUMED, service=service,
                                   data={"who": who, "scope": service or "all", "was_paused": was})
    return was


def read_pauses(client: Any, bp: Blueprint) -> dict[str, dict[str, Any]]:
    """scope ('*' for global, else service) -> who/when/why."""
    scopes: list[tuple[str, str | None]] = [("*", None)] + [(s, s) for s in sorted(bp.services)]
    with client.pipeline(transaction=False) as pipe:
        for _, svc in scopes:
            pipe.get(keys.failover_pause(svc))
        res = pipe.execute()
    out = {}
    for (scope, _), raw in zip(scopes, res, strict=True):
        if raw:
            try:
                out[scope] = json.loads(raw)
            except ValueError:
                out[scope] = {"raw": raw}
    return out


def read_routes(client: Any, bp: Blueprint) -> dict[str, dict[str, Any]]:
    services = sorted(bp.services)
    values = client.mget([keys.route(s) for s in services]) if services else []
    out = {}
    for s, raw in zip(services, values, strict=True):
        if raw:
            try:
                out[s] = json.loads(raw)
            except ValueError:
                continue
    return out


def read_node_states(client: Any, bp: Blueprint, now: float | None = None,
                     fresh: float | None = None) -> dict[str, Any]:
    """The detector's view per node; nodes it has not classified fall back to last-seen freshness.

    The fallback lets an operator act before the detector has ever run (first
    start, detector down): a node seen within ``fresh`` seconds counts as alive.
    """
    now = time.time() if now is None else now
    fresh = fresh if fresh is not None else max(bp.policy.dead_after, 3 * bp.policy.heartbeat_interval)
    detector = client.hgetall(keys.node_state())
    seen = client.hgetall(keys.nodes_seen())
    out: dict[str, Any] = {}
    for node in bp.nodes:
        raw = detector.get(node)
        if raw:
            try:
                value = json.loads(raw)
                out[node] = value if isinstance(value, dict) else {"state": str(value)}
                continue
            except ValueError:
                out[node] = {"state": raw}
                continue
        last = seen.get(node)
        if last is not None and now - float(last) <= fresh:
            out[node] = {"state": "alive", "source": "last-seen"}
        else:
            out[node] = {"state": "unknown" if last is None else "stale", "source": "last-seen"}
    return out


def read_leases(client: Any, services: Iterable[str]) -> dict[str, Any]:
    from continuity.detect import leases as lease_store

    return {s: lease_store.read(client, s) for s in services}


def read_epochs(client: Any, services: Iterable[str]) -> dict[str, int]:
    svcs = list(services)
    values = client.mget([keys.epoch(s) for s in svcs]) if svcs else []
    return {s: int(v) if v else 0 for s, v in zip(svcs, values, strict=True)}
