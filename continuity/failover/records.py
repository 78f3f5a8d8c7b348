"""Failover records: the durable answer to "what happened, who did it, and how long did each step take".

A record is a Redis hash that never expires (the Celery result backend does
expire, so it is not the history) plus its entry in a sorted set ordered by
start time, and every transition is also a ``failover.*`` pulse event. Steps run
in different processes, so each writes its own hash fields (start with HSETNX so
a redelivered step keeps its first start time, end with HSET): no
read-modify-write, no lost update between concurrent writers.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from typing import Any

from continuity import keys, paths
from continuity.events import (
    FAILOVER_COMPLETED,
    FAILOVER_ESCALATED,
    FAILOVER_FAILED,
    FAILOVER_STARTED,
    FAILOVER_STEP,
    FAILOVER_SUPERSEDED,
)
from continuity.pulse import Pulse

FINAL = ("succeeded", "failed", "escalated", "superseded")


def operator() -> str:
    """Who is acting: ``user@host`` for people, carried into every record and pulse event."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def pulse_for(client: Any) -> Pulse:
    """A pulse writer bound to this client and the current state dir (cheap; no cached global)."""
    return Pulse(client=client, path=paths.pulse_file(), node=os.environ.get("CONTINUITY_NODE"))


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
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.failover_record(rid), mapping={"meta": json.dumps(meta, default=str), "outcome": "running"})
        pipe.zadd(keys.failover_history(), {rid: now})
        pipe.execute()
    pulse_for(client).emit(FAILOVER_STARTED, service=plan["service"], epoch=plan.get("expected_epoch"),
                           data={"record": rid, "kind": meta["kind"], "who": who, "from": meta["old_primary"],
                                 "to": meta["candidate"], "reason": meta["reason"], "detection": detection,
                                 "trigger": trigger})
    return rid


def step_started(client: Any, rid: str, attempt: int, step: str, node: str | None, now: float,
                 epoch: int | None = None) -> bool:
    """Mark the step's start; False when it had already started (this is a redelivery)."""
    info = {"start": now, "node": node, "epoch": epoch}
    first = bool(client.hsetnx(keys.failover_record(rid), f"s:{attempt}:{step}", json.dumps(info)))
    if not first:
        client.hincrby(keys.failover_record(rid), f"r:{attempt}:{step}", 1)
    return first


def step_finished(client: Any, rid: str, attempt: int, step: str, ok: bool, now: float,
                  detail: dict[str, Any] | None = None, service: str | None = None,
                  epoch: int | None = None) -> None:
    info = {"end": now, "ok": ok, **(detail or {})}
    client.hset(keys.failover_record(rid), f"e:{attempt}:{step}", json.dumps(info, default=str))
    raw = client.hget(keys.failover_record(rid), f"s:{attempt}:{step}")
    start = json.loads(raw)["start"] if raw else now
    pulse_for(client).emit(FAILOVER_STEP, service=service, epoch=epoch,
                           data={"record": rid, "attempt": attempt, "step": step, "ok": ok,
                                 "duration": round(now - start, 6), **(detail or {})})


def set_attempt(client: Any, rid: str, attempt: int, candidate: str, expected_epoch: int | None,
                ctx: dict[str, Any] | None = None) -> None:
    """Note which candidate this attempt targets, and the chain context the watchdog needs to resume it."""
    mapping = {f"a:{attempt}": json.dumps({"candidate": candidate, "expected_epoch": expected_epoch})}
    if ctx is not None:
        mapping[f"c:{attempt}"] = json.dumps(ctx, default=str)
    client.hset(keys.failover_record(rid), mapping=mapping)


def latest_attempt(raw: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    """(attempt number, chain context) of the newest attempt stored in a raw record hash."""
    attempts = [int(f[2:]) for f in raw if f.startswith("c:")]
    if not attempts:
        return None
    n = max(attempts)
    return n, json.loads(raw[f"c:{n}"])


def finish(client: Any, rid: str, outcome: str, now: float, detail: dict[str, Any] | None = None,
           service: str | None = None, epoch: int | None = None) -> bool:
    """Close the record once (later calls change nothing and return False)."""
    assert outcome in FINAL, outcome
    key = keys.failover_record(rid)
    if not client.hsetnx(key, "finished", json.dumps({"at": now, **(detail or {})}, default=str)):
        return False
    client.hset(key, "outcome", outcome)
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
    raw = client.hgetall(keys.failover_record(rid))
    if not raw or "meta" not in raw:
        return None
    return assemble(raw)


def assemble(raw: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(raw["meta"])
    rec["outcome"] = raw.get("outcome", "running")
    finished = json.loads(raw["finished"]) if raw.get("finished") else None
    rec["finished"] = finished.get("at") if finished else None
    rec["finish_detail"] = {k: v for k, v in (finished or {}).items() if k != "at"}
    steps: list[dict[str, Any]] = []
    attempts: dict[int, dict[str, Any]] = {}
    for field, value in raw.items():
        if field.startswith("a:"):
            attempts[int(field[2:])] = json.loads(value)
        if not field.startswith("s:"):
            continue
        _, attempt, step = field.split(":", 2)
        start = json.loads(value)
        end = json.loads(raw[f"e:{attempt}:{step}"]) if f"e:{attempt}:{step}" in raw else {}
        entry = {"attempt": int(attempt), "step": step, "node": start.get("node"), "start": start["start"],
                 "end": end.get("end"), "ok": end.get("ok"),
                 "duration": round(end["end"] - start["start"], 6) if end.get("end") else None,
                 "redeliveries": int(raw.get(f"r:{attempt}:{step}", 0))}
        entry.update({k: v for k, v in end.items() if k not in ("end", "ok")})
        steps.append(entry)
    steps.sort(key=lambda s: (s["attempt"], s["start"]))
    rec["steps"] = steps
    rec["attempts"] = [dict(attempts[a], attempt=a) for a in sorted(attempts)]
    verified = [s for s in steps if s["step"] == "verify" and s["ok"]]
    promoted = [s for s in steps if s["step"] == "promote" and s["ok"]]
    rec["new_primary"] = promoted[-1]["node"] if promoted else None
    rec["epoch"] = promoted[-1].get("epoch") if promoted else None
    rec["duration"] = round(rec["finished"] - rec["started"], 6) if rec["finished"] else None
    fences = [s for s in steps if s["step"] == "fence"]
    # time spent waiting out the old lease + margin before the first fence ran (no step "owns" it)
    rec["lease_wait"] = round(fences[0]["start"] - rec["started"], 6) if fences else None
    # MTTR counted from the last sign of life of the old primary (the failure happened after it)
    origin = rec.get("last_seen") or rec["started"]
    rec["mttr"] = round(verified[-1]["end"] - origin, 6) if verified and verified[-1]["end"] else None
    return rec


def history(client: Any, limit: int = 50, service: str | None = None) -> list[dict[str, Any]]:
    """Newest first."""
    out = []
    ids = client.zrevrange(keys.failover_history(), 0, -1 if service else limit - 1)
    for rid in ids:
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
    client.hset(keys.incidents(), iid, json.dumps(body))
    return iid


def close_incident(client: Any, service: str) -> bool:
    return bool(client.hdel(keys.incidents(), f"failover-{service}"))
