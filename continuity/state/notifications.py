"""Webhook notifications as Redis holds them: what is owed to whom, and what was delivered.

=========================  ==========================================================================================
key                        value
=========================  ==========================================================================================
``notify:cursor``          the pulse stream id up to which events were turned into deliveries (only moves forward)
``notify:deliveries``      hash delivery id -> JSON {webhook, event, notice, created, attempts, status, ...}
``notify:due``             sorted set of pending delivery ids by the time of their next attempt
``notify:done``            sorted set of finished (delivered, given up) ids by finish time, trimmed to a bound (their
                           hash entries go with them)
``notify:claim:<id>``      the token of the loop posting that delivery now (``PX``: a dead loop's claim lapses)
``notify:stats``           hash ``<webhook>|delivered`` / ``<webhook>|given_up`` -> count (never trimmed)
``notify:episodes``        hash condition key -> JSON {since, notice} of each watched condition's open episode
``notify:check_at``        the time (the judges' clock) the watched conditions are next due to be judged
=========================  ==========================================================================================

A delivery id is ``<webhook>|<event id>``: one per webhook and pulse event, so the same event seen twice (two
loops reading the stream, a cursor read again after a crash) is owed once.

Operations and their guarantees:

- :func:`advance_cursor` — compare-and-set in one script: the cursor never moves back, so an event is turned into
  deliveries by whichever loop reads it first and never again after its record was trimmed.
- :func:`enqueue` — one script: the delivery is added (hash + due) only when its id is unknown; False otherwise.
- :func:`claim` / :func:`release` — ``SET NX PX`` / check-and-delete: one loop posts a delivery at a time.
- :func:`reschedule` and :func:`finish` — one script each, effective only for the claim's holder: the new body and
  the due time (or the done mark, the counter and the trim) change together, and the claim is dropped. A delivery
  is therefore never both finished and due, and is counted delivered exactly once.
- :func:`check_due` — compare-and-set in one script: of the control workers judging the watched conditions, one
  per interval does (the others find the time already moved on).
- :func:`open_episode` / :func:`close_episode` — one script each: the episode is added only when none is open for
  its key (closed only when it is still the value that was read), and its deliveries are enqueued in the same
  script, so an episode is announced once and resolved once however many judges race, and a judge dying half way
  leaves neither an episode nobody was told about nor a notice without its episode.
- :func:`due`, :func:`read`, :func:`stats`, :func:`pending_by_webhook`, :func:`recent` — reads; unreadable values
  are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity.state import keys
from continuity.state.scripts import Script
from continuity.state.values import object_or_raw

PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"
KEEP_DONE = 10_000  # finished deliveries kept for `continuity notify status` (and to recognise a re-read event)


def delivery_id(webhook: str, event_id: str) -> str:
    return f"{webhook}|{event_id}"


def webhook_of(did: str) -> str:
    return did.split("|", 1)[0]


def _stream_id(sid: str) -> tuple[int, int]:
    ms, _, seq = str(sid).partition("-")
    return int(ms), int(seq or 0)


# KEYS[1]=cursor ARGV[1]=stream id -> 1 moved | 0 not newer
_ADVANCE = Script("notify.advance", """
local cur = redis.call('GET', KEYS[1])
if cur then
  local cm, cs = string.match(cur, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[1], '^(%d+)-(%d+)$')
  if cm and nm then
    cm, cs, nm, ns = tonumber(cm), tonumber(cs), tonumber(nm), tonumber(ns)
    if nm < cm or (nm == cm and ns <= cs) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
""")

# KEYS[1]=deliveries KEYS[2]=due KEYS[3]=done ARGV[1]=id ARGV[2]=body ARGV[3]=due time -> 1 added | 0 known
_ENQUEUE = Script("notify.enqueue", """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
""")

# KEYS[1]=check_at ARGV[1]=now ARGV[2]=next -> 1 this judge is due | 0 another judged this interval
_CHECK_DUE = Script("notify.check_due", """
local at = tonumber(redis.call('GET', KEYS[1]) or '')
if at and tonumber(ARGV[1]) < at then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
""")

# the enqueue of _ENQUEUE for every (id, body) pair from ARGV[first] on
_ENQUEUE_ALL = """
for i = first, #ARGV, 2 do
  if not redis.call('ZSCORE', KEYS[4], ARGV[i]) and redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[3], due, ARGV[i])
  end
end
"""

# KEYS[1]=episodes KEYS[2]=deliveries KEYS[3]=due KEYS[4]=done
# ARGV[1]=condition key ARGV[2]=episode body ARGV[3]=due time ARGV[4..]=delivery id, body pairs -> 1 opened | 0 open
_OPEN_EPISODE = Script("notify.open_episode", """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local first, due = 4, ARGV[3]
""" + _ENQUEUE_ALL + """
return 1
""")

# KEYS as _OPEN_EPISODE; ARGV[2]=the episode body read (closed only if unchanged) -> 1 closed | 0 not that episode
_CLOSE_EPISODE = Script("notify.close_episode", """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local first, due = 4, ARGV[3]
""" + _ENQUEUE_ALL + """
return 1
""")

# KEYS[1]=claim KEYS[2]=deliveries KEYS[3]=due ARGV[1]=token ARGV[2]=id ARGV[3]=body ARGV[4]=next time
_RESCHEDULE = Script("notify.reschedule", """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
""")

# KEYS[1]=claim KEYS[2]=deliveries KEYS[3]=due KEYS[4]=done KEYS[5]=stats
# ARGV[1]=token ARGV[2]=id ARGV[3]=body ARGV[4]=finish time ARGV[5]=stats field ARGV[6]=keep
_FINISH = Script("notify.finish", """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[6])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[4], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
end
redis.call('DEL', KEYS[1])
return 1
""")

# KEYS[1]=claim ARGV[1]=token
_RELEASE = Script("notify.release", """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


def cursor(client: Any) -> str | None:
    raw = client.get(keys.notify_cursor())
    return None if raw is None else str(raw.decode() if isinstance(raw, bytes) else raw)


def advance_cursor(client: Any, sid: str) -> bool:
    _stream_id(sid)  # refuse anything that is not a stream id before it reaches Redis
    return bool(int(_ADVANCE(client, keys=[keys.notify_cursor()], args=[sid])))


def enqueue(client: Any, did: str, body: Mapping[str, Any], due_at: float) -> bool:
    return bool(int(_ENQUEUE(client, keys=[keys.notify_deliveries(), keys.notify_due(), keys.notify_done()],
                             args=[did, json.dumps(dict(body), default=str), f"{due_at:.3f}"])))


def check_due(client: Any, now: float, every: float) -> bool:
    """Whether this judge should judge the watched conditions now (and nobody else for ``every`` seconds)."""
    return bool(int(_CHECK_DUE(client, keys=[keys.notify_check_at()], args=[f"{now:.3f}", f"{now + every:.3f}"])))


def episodes(client: Any) -> dict[str, str]:
    """Condition key -> the raw JSON of its open episode (parsed by :func:`continuity.notify.conditions.episode_of`;
    the raw value is what :func:`close_episode` compares)."""
    return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in client.hgetall(keys.notify_episodes()).items()}


def _episode_keys() -> list[str]:
    return [keys.notify_episodes(), keys.notify_deliveries(), keys.notify_due(), keys.notify_done()]


def _pairs(deliveries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [x for did, body in sorted(deliveries.items()) for x in (did, json.dumps(dict(body), default=str))]


def open_episode(client: Any, key: str, body: Mapping[str, Any], deliveries: Mapping[str, Mapping[str, Any]],
                 due_at: float) -> bool:
    """Open the episode of ``key`` and owe its deliveries; False (nothing done) when one is open already."""
    return bool(int(_OPEN_EPISODE(client, keys=_episode_keys(),
                                  args=[key, json.dumps(dict(body), default=str), f"{due_at:.3f}",
                                        *_pairs(deliveries)])))


def close_episode(client: Any, key: str, raw: str, deliveries: Mapping[str, Mapping[str, Any]],
                  due_at: float) -> bool:
    """Close the episode of ``key`` if it is still ``raw`` and owe its deliveries; False otherwise."""
    return bool(int(_CLOSE_EPISODE(client, keys=_episode_keys(), args=[key, raw, f"{due_at:.3f}",
                                                                       *_pairs(deliveries)])))


def due(client: Any, now: float, limit: int) -> list[str]:
    """Pending ids whose next attempt is due, the longest-waiting first."""
    return [str(x) for x in client.zrangebyscore(keys.notify_due(), "-inf", f"{now:.3f}", start=0, num=limit)]


def claim(client: Any, did: str, token: str, ttl: float) -> bool:
    return bool(client.set(keys.notify_claim(did), token, nx=True, px=max(1, int(ttl * 1000))))


def release(client: Any, did: str, token: str) -> bool:
    return bool(int(_RELEASE(client, keys=[keys.notify_claim(did)], args=[token])))


def read(client: Any, did: str) -> dict[str, Any] | None:
    raw = client.hget(keys.notify_deliveries(), did)
    if not raw:
        return None
    body = object_or_raw(raw)
    return None if "raw" in body else body


def reschedule(client: Any, did: str, token: str, body: Mapping[str, Any], next_at: float) -> bool:
    return bool(int(_RESCHEDULE(client, keys=[keys.notify_claim(did), keys.notify_deliveries(), keys.notify_due()],
                                args=[token, did, json.dumps(dict(body), default=str), f"{next_at:.3f}"])))


def finish(client: Any, did: str, token: str, body: Mapping[str, Any], now: float, keep: int = KEEP_DONE) -> bool:
    """Mark delivered or given up (``body["status"]``); False when the claim was no longer ours."""
    status = str(body["status"])
    assert status in (DELIVERED, GIVEN_UP), status
    return bool(int(_FINISH(client, keys=[keys.notify_claim(did), keys.notify_deliveries(), keys.notify_due(),
                                          keys.notify_done(), keys.notify_stats()],
                            args=[token, did, json.dumps(dict(body), default=str), f"{now:.3f}",
                                  f"{webhook_of(did)}|{status}", int(keep)])))


def stats(client: Any) -> dict[tuple[str, str], int]:
    """(webhook, delivered | given_up) -> count."""
    out: dict[tuple[str, str], int] = {}
    for field, raw in client.hgetall(keys.notify_stats()).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        webhook, _, status = name.rpartition("|")
        try:
            out[(webhook, status)] = int(raw)
        except (TypeError, ValueError):
            continue
    return out


def pending_by_webhook(client: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for did in client.zrange(keys.notify_due(), 0, -1):
        name = webhook_of(did.decode() if isinstance(did, bytes) else str(did))
        out[name] = out.get(name, 0) + 1
    return out


def recent(client: Any, limit: int = 50) -> list[dict[str, Any]]:
    """The pending deliveries and the newest finished ones, newest first."""
    pending = [str(x) for x in client.zrange(keys.notify_due(), 0, -1)]
    done = [str(x) for x in client.zrevrange(keys.notify_done(), 0, limit - 1)]
    ids = list(dict.fromkeys(pending + done))
    if not ids:
        return []
    bodies = client.hmget(keys.notify_deliveries(), ids)
    out = []
    for did, raw in zip(ids, bodies, strict=True):
        body = object_or_raw(raw) if raw else None
        if body is not None and "raw" not in body:
            out.append({"id": did, **body})
    out.sort(key=lambda b: float(b.get("created") or 0), reverse=True)
    return out[:limit]
