"""The pulse history's shared copy: a Redis Stream of events, and the ids recently delivered into it.

``pulse`` (stream, approximately capped at ``maxlen`` entries) holds one entry per event with fields ``id`` (the
event's own id) and ``event`` (its canonical JSON); ``pulse:seen`` (sorted set event id -> stream time) remembers
the most recently delivered ids, trimmed to a bound; ``pulse:counts`` (hash ``<kind>|<service>`` -> integer, no
TTL) counts every event ever delivered, by kind and service: the stream is trimmed, these counters are not, so the
metrics' ``_total`` counters (local restarts, events by kind) never go down. The file copy
(``pulse_history.jsonl``, hash-chained) is :mod:`continuity.pulse`'s; this module only moves events in and out of
Redis.

Operations and their guarantees:

- :func:`deliver` — one script: look the id up among recently delivered ones, else ``XADD``, remember it and count
  it. A spooled event that reached Redis before the connection dropped is therefore never added (nor counted) twice.
- :func:`counts` — the delivered-event counters, by (kind, service).
- :func:`newest`, :func:`between` (by stream time), :func:`before` (walking back in batches), :func:`after`
  (blocking read for ``--follow``) — entries as (stream id, event dict); entries that are not an event's JSON are
  skipped, never raised on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity.state import keys
from continuity.state.scripts import Script

# KEYS[1]=stream KEYS[2]=seen KEYS[3]=counts ; ARGV[1]=event id ARGV[2]=payload ARGV[3]=stream maxlen
# ARGV[4]=seen bound -> 1 added | 0 already delivered
# The count is taken in the same call as the XADD, so an event is counted exactly when it is added; a payload
# that is not an event's JSON is stored (readers skip it) but not counted.
DELIVER = Script("pulse.deliver", """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local sid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[1], 'event', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(string.match(sid, '^(%d+)')), ARGV[1])
local ok, ev = pcall(cjson.decode, ARGV[2])
if ok and type(ev) == 'table' and type(ev['kind']) == 'string' then
  local svc = ev['service']
  if type(svc) ~= 'string' then svc = '' end
  redis.call('HINCRBY', KEYS[3], ev['kind'] .. '|' .. svc, 1)
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
return 1
""")


def deliver(client: Any, event_id: str, payload: str, maxlen: int, seen_max: int) -> bool:
    return bool(int(DELIVER(client, keys=[keys.pulse_stream(), keys.pulse_seen(), keys.pulse_counts()],
                            args=[event_id, payload, int(maxlen), int(seen_max)])))


def counts(client: Any) -> dict[tuple[str, str | None], int]:
    """(kind as written, service or None) -> events delivered; unreadable fields skipped."""
    out: dict[tuple[str, str | None], int] = {}
    for field, raw in client.hgetall(keys.pulse_counts()).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        kind, sep, service = name.rpartition("|")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            continue
        if sep:
            out[(kind, service or None)] = value
    return out


def parse_entry(fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    raw = fields.get("event") if "event" in fields else fields.get(b"event")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _events(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sid, fields in entries or []:
        ev = parse_entry(fields)
        if ev is not None:
            out.append((sid, ev))
    return out


def newest(client: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The newest ``count`` entries, newest first."""
    return _events(client.xrevrange(keys.pulse_stream(), count=count))


def last_id(client: Any) -> str:
    """The id of the newest entry ("0-0" when the stream is empty): where a follower starts."""
    top = client.xrevrange(keys.pulse_stream(), count=1)
    return str(top[0][0]) if top else "0-0"


def between(client: Any, since: float, until: float) -> list[tuple[str, dict[str, Any]]]:
    """Entries whose stream time (ms) falls between two unix times, oldest first."""
    return _events(client.xrange(keys.pulse_stream(), min=f"{int(since * 1000)}-0", max=f"{int(until * 1000)}-0"))


def before(client: Any, upper: str, count: int) -> list[tuple[str, Any]]:
    """Raw entries at or before stream id ``upper`` ("+" for the newest), newest first (the caller parses)."""
    return list(client.xrevrange(keys.pulse_stream(), max=upper, min="-", count=count))


def after(client: Any, last: str, block_ms: int, count: int) -> list[tuple[str, Any]]:
    """Raw entries after stream id ``last``, waiting up to ``block_ms`` for the first (0: not at all, where Redis
    itself would read ``BLOCK 0`` as forever); oldest first."""
    reply = client.xread({keys.pulse_stream(): last}, block=block_ms if block_ms > 0 else None, count=count)
    return [entry for _stream, entries in reply or [] for entry in entries]
