"""Drill records, the one-drill-at-a-time lock and registered rollbacks, as Redis holds them.

``drill:record:<id>`` (JSON, no TTL) and ``drill:history`` (sorted set id -> start time, no TTL) are the drill's
history; ``drill:active`` is the running drill's lock token ``<drill id>|<host>|<pid>`` with a short TTL its
runner keeps extending (a dead runner's lock lapses); ``drill:rollbacks:<id>`` (hash index -> JSON entry) and
``drill:pending`` (set of drill ids with unfinished rollbacks) show what a crashed runner left: a summary only
(kind, node, status, host), never read back to run (the runner's local file is the one that runs). Every value
here is also on the runner's disk, so a drill that takes Redis away loses nothing.

Operations and their guarantees:

- :func:`save_record` — record and history entry in one ``MULTI``; :func:`read_record` / :func:`history` never
  raise on an unreadable value (skipped).
- :func:`take_lock` — ``SET NX PX``; when the holder is a dead runner (the caller's ``holder_is_dead`` says so
  from the token), the lock is swapped to ours under ``WATCH``: of two takers exactly one wins.
  :func:`keep_lock` extends ours or takes a lapsed one back; :func:`release_lock` deletes only our token
  (check-and-delete in one script); :func:`lock_holder` names the drill that holds it.
- :func:`save_rollbacks` — entries and the pending mark in one ``MULTI``; :func:`load_rollbacks`,
  :func:`finish_rollbacks`, :func:`pending_rollbacks`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from continuity.state import keys
from continuity.state.scripts import Script

# KEYS[1]=lock ARGV[1]=token -> 1 deleted | 0 not ours
_RELEASE = Script("drill.release", """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


@dataclass(frozen=True)
class DrillSummary:
    """The fields of a drill record every reader relies on; ``doc`` is the whole record as stored."""

    id: str
    scenario: str
    status: str
    started: float
    services: tuple[str, ...]
    doc: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: Any) -> DrillSummary | None:
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            return cls(id=str(doc["id"]), scenario=str(doc.get("scenario") or doc["id"]),
                       status=str(doc.get("status", "unknown")), started=float(doc.get("started") or 0),
                       services=tuple(str(s) for s in doc.get("services") or ()), doc=doc)
        except (ValueError, TypeError, KeyError):
            return None


# --- records ------------------------------------------------------------------------------------------------------
def save_record(client: Any, record: Mapping[str, Any]) -> None:
    body = json.dumps(record, default=str, sort_keys=True)
    pipe = client.pipeline()
    pipe.set(keys.drill_record(str(record["id"])), body)
    pipe.zadd(keys.drill_history(), {str(record["id"]): float(record["started"])})
    pipe.execute()


def read_record(client: Any, drill_id: str) -> dict[str, Any] | None:
    summary = DrillSummary.parse(client.get(keys.drill_record(drill_id)))
    return dict(summary.doc) if summary else None


def history(client: Any, limit: int = 200) -> list[DrillSummary]:
    """Newest first; unreadable records skipped."""
    ids = client.zrevrange(keys.drill_history(), 0, limit - 1)
    if not ids:
        return []
    out = []
    for raw in client.mget([keys.drill_record(i) for i in ids]):
        summary = DrillSummary.parse(raw)
        if summary is not None:
            out.append(summary)
    return out


# --- the drill lock -------------------------------------------------------------------------------------------------
def take_lock(client: Any, token: str, ttl: float, holder_is_dead: Callable[[str], bool]) -> bool:
    px = max(1, int(ttl * 1000))
    if client.set(keys.drill_active(), token, nx=True, px=px):
        return True
    held = str(client.get(keys.drill_active()) or "")
    if not held or not holder_is_dead(held):
        return False
    pipe = client.pipeline()
    try:
        pipe.watch(keys.drill_active())
        if pipe.get(keys.drill_active()) != held:
            return False
        pipe.multi()
        pipe.set(keys.drill_active(), token, px=px)
        pipe.execute()
        return True
    except Exception:  # noqa: BLE001 - someone else took it first
        return False
    finally:
        pipe.reset()


def keep_lock(client: Any, token: str, ttl: float) -> None:
    px = max(1, int(ttl * 1000))
    if client.get(keys.drill_active()) == token:
        client.pexpire(keys.drill_active(), px)
    else:
        client.set(keys.drill_active(), token, nx=True, px=px)


def release_lock(client: Any, token: str) -> bool:
    return bool(int(_RELEASE(client, keys=[keys.drill_active()], args=[token])))


def lock_holder(client: Any) -> str | None:
    """The drill id in the lock, None when no drill runs."""
    raw = client.get(keys.drill_active())
    return str(raw).split("|")[0] if raw else None


# --- rollbacks ------------------------------------------------------------------------------------------------------
def save_rollbacks(client: Any, drill_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
    pipe = client.pipeline()
    pipe.hset(keys.drill_rollbacks(drill_id), mapping={str(e["idx"]): json.dumps(e) for e in entries})
    if any(e.get("status") != "done" for e in entries):
        pipe.sadd(keys.drill_pending_rollbacks(), drill_id)
    pipe.execute()


def load_rollbacks(client: Any, drill_id: str) -> list[dict[str, Any]] | None:
    raw = client.hgetall(keys.drill_rollbacks(drill_id))
    if not raw:
        return None
    out = []
    for idx in sorted(raw, key=int):
        try:
            out.append(json.loads(raw[idx]))
        except ValueError:
            continue
    return out


def finish_rollbacks(client: Any, drill_id: str) -> None:
    client.srem(keys.drill_pending_rollbacks(), drill_id)


def pending_rollbacks(client: Any) -> Iterable[str]:
    return set(client.smembers(keys.drill_pending_rollbacks()))


# --- halt requests ---------------------------------------------------------------------------------------------------
HALT_TTL = 3600.0  # a request nobody picked up (the drill ended first) lapses


def request_halt(client: Any, body: Mapping[str, Any]) -> None:
    """Ask the running drill ``body['drill']`` to stop at its next probe round (and run its rollbacks)."""
    client.set(keys.drill_halt(), json.dumps(dict(body), sort_keys=True), px=int(HALT_TTL * 1000))


def halt_request(client: Any, drill_id: str) -> dict[str, Any] | None:
    """The halt request for ``drill_id``, None when there is none (or it names another drill)."""
    raw = client.get(keys.drill_halt())
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("drill") == drill_id else None


def clear_halt(client: Any, drill_id: str) -> None:
    if halt_request(client, drill_id) is not None:
        client.delete(keys.drill_halt())
