"""Failover records: the durable answer to "what happened, who did it, and how long did each step take".

A record is a Redis hash that never expires (the Celery result backend does
expire, so it is not the history) plus its entry in a sorted set ordered by
start time, and every transition is also a ``failover.*`` pulse event. Steps run
in different processes, so each writes its own hash fields (start with HSETNX so
a redelivered step keeps its first start time, end with HSET): no
read-modify-write, no lost update between concurrent writers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from continuity import identity, paths, settings
from continuity.events import (
    FAILOVER_COMPLETED,
    FAILOVER_ESCALATED,
    FAILOVER_FAILED,
    FAILOVER_STARTED,
    FAILOVER_STEP,
    FAILOVER_SUPERSEDED,
)
from continuity.pulse import Pulse
from continuity.state import failover_records as store
from continuity.state import incidents

FINAL = store.FINAL


def operator() -> str:
    """Who is acting, carried into every record and pulse event: the operator key id when there is an operator
    key, else the login name marked unauthenticated (:mod:`continuity.identity`)."""
    return identity.who()


def pulse_for(client: Any) -> Pulse:
    """A pulse writer bound to this client and the current state dir (cheap; no cached global)."""
    return Pulse(client=client, path=paths.pulse_file(), node=settings.NODE.get())


def new_record_id(service: str, now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}-{service}-{uuid.uuid4().hex[:6]}"


def detection_time(trigger: dict[str, Any], old_primary: str | None) -> tuple[float | None, float | None]:
    """(last seen, seconds from last seen to declared dead) when the trigger says; None otherwise."""
    detected = trigger.get("detected_at")
    seen = trigger.get("last_seen")
    if isinstance(seen, dict):
        seen = seen.get(old_primary) if old_primary else None
    try:
        if detected is None or seen is None:
            return (float(seen) if seen is not None else None), None
        return float(seen), max(0.0, float(detected) - float(seen))
    except (TypeError, ValueError):
        return None, None


def open_record(client: Any, plan: dict[str, Any], trigger: dict[str, Any], who: str, now: float,
                record_id: str | None = None) -> str:
    rid = record_id or new_record_id(plan["service"], now)
    last_seen, detection = detection_time(trigger, plan.get("old_primary"))
    meta = {
        "id": rid, "service": plan["service"], "kind": plan.get("kind", "failover"), "who": who,
        "trigger": trigger, "old_primary": plan.get("old_primary"), "candidate": plan.get("candidate"),
        "fallbacks": list(plan.get("fallbacks") or ()), "reason": plan.get("reason", ""),
        "expected_epoch": plan.get("expected_epoch"), "not_before": plan.get("not_before"),
        "started": now, "detected_at": trigger.get("detected_at"), "last_seen": last_seen,
        "detection": detection, "action": plan.get("action", "failover"),
    }
    store.create(client, rid, meta, now)
    pulse_for(client).emit(FAILOVER_STARTED, service=plan["service"], epoch=plan.get("expected_epoch"),
                           data={"record": rid, "kind": meta["kind"], "who": who, "from": meta["old_primary"],
                                 "to": meta["candidate"], "reason": meta["reason"], "detection": detection,
                                 "trigger": trigger})
    return rid


def step_started(client: Any, rid: str, attempt: int, step: str, node: str | None, now: float,
                 epoch: int | None = None) -> bool:
    """Mark the step's start; False when it had already started (this is a redelivery)."""
    return store.step_started(client, rid, attempt, step, {"start": now, "node": node, "epoch": epoch})


def step_finished(client: Any, rid: str, attempt: int, step: str, ok: bool, now: float,
                  detail: dict[str, Any] | None = None, service: str | None = None,
                  epoch: int | None = None) -> None:
    info = {"end": now, "ok": ok, **(detail or {})}
    start = store.step_finished(client, rid, attempt, step, info)
    start = now if start is None else start
    pulse_for(client).emit(FAILOVER_STEP, service=service, epoch=epoch,
                           data={"record": rid, "attempt": attempt, "step": step, "ok": ok,
                                 "duration": round(now - start, 6), **(detail or {})})


def set_attempt(client: Any, rid: str, attempt: int, candidate: str, expected_epoch: int | None,
                ctx: dict[str, Any] | None = None) -> None:
    """Note which candidate this attempt targets, and the chain context the watchdog needs to resume it."""
    store.set_attempt(client, rid, attempt, {"candidate": candidate, "expected_epoch": expected_epoch}, ctx)


def finish(client: Any, rid: str, outcome: str, now: float, detail: dict[str, Any] | None = None,
           service: str | None = None, epoch: int | None = None) -> bool:
    """Close the record once (later calls change nothing and return False)."""
    if not store.close(client, rid, outcome, {"at": now, **(detail or {})}):
        return False
    rec = get_record(client, rid) or {}
    data = {"record": rid, "outcome": outcome, "mttr": rec.get("mttr"), "detection": rec.get("detection"),
            "duration": rec.get("duration"), "who": rec.get("who"), "from": rec.get("old_primary"),
            "to": rec.get("new_primary"), **(detail or {})}
    kind = {"succeeded": FAILOVER_COMPLETED, "failed": FAILOVER_FAILED,
            "escalated": FAILOVER_ESCALATED, "superseded": FAILOVER_SUPERSEDED}[outcome]
    pulse_for(client).emit(kind, service=service or rec.get("service"), epoch=epoch, data=data)
    return True


def get_record(client: Any, rid: str) -> dict[str, Any] | None:
    """The record assembled for reading: meta, outcome, attempts and steps with durations."""
    raw = store.read(client, rid)
    return None if raw is None else store.assemble(raw.fields)


def history(client: Any, limit: int = 50, service: str | None = None) -> list[dict[str, Any]]:
    """Newest first."""
    out = []
    for rid in store.history_ids(client, None if service else limit):
        rec = get_record(client, rid)
        if rec is None or (service and rec["service"] != service):
            continue
        out.append(rec)
        if len(out) >= limit:
            break
    return out


def open_incident(client: Any, service: str, reason: str, now: float, record_id: str | None = None,
                  who: str = "detector") -> str:
    """An open incident blocks drills and asks a human to act; closed by `continuity failover` actions."""
    iid = f"failover-{service}"
    body = {"id": iid, "kind": "failover", "service": service, "reason": reason, "opened": now,
            "record": record_id, "who": who}
    incidents.open_(client, iid, body)
    return iid


def close_incident(client: Any, service: str) -> bool:
    return incidents.close(client, f"failover-{service}")
