"""The detector's leader lease: which control worker runs the failure detector, and since when.

Every worker that consumes the control queue runs a detector loop; exactly one of them sweeps at a time, the
holder of this lease. It is short (about 1.5 s) and renewed by every tick of the holder's loop and again by
every sweep's write, so after the holder's process is killed a standby (polling a few times a second) takes
over within the TTL plus one poll. The lease, its term and its holder's identity live in one hash whose TTL is
the lease; Redis's own clock (``TIME`` inside the script, the key's TTL) is the only clock involved, the same
one that stamps heartbeat arrivals.

Keys (built in :mod:`continuity.state.keys`): ``detector:leader`` (hash ``id``, ``node``, ``host``, ``pid``,
``since``, ``term``; PX TTL) and ``detector:term`` (counter, no TTL: one more for every new holder).

Operations and their guarantees:

- :data:`CLAIM` / :func:`claim` — one atomic step: renew when the caller holds the lease (``renewed``), take
  it when nobody does (``acquired``, with a new term and ``since`` = Redis time), else report the holder
  (``held``). Returns Redis time with the answer, so the caller needs no clock of its own.
- :data:`RELEASE` / :func:`release` — deletes the lease only while the caller still holds it (a stopping
  worker hands over at once instead of after the TTL).
- :func:`guard` — inside a ``WATCH`` on :func:`key`: does the caller still hold the lease? The sweep writes
  its results in a transaction under this guard (:func:`continuity.state.detection.write`), so a process that
  lost the lease while it was paused writes nothing and launches nothing.
- :func:`read` — the current holder as a :class:`Leader` (for ``continuity status``), or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from continuity.state import keys
from continuity.state.scripts import Script

ACQUIRED = "acquired"
RENEWED = "renewed"
HELD = "held"

# KEYS: leader term   ARGV: holder id, ttl ms, node, host, pid
# -> {'renewed'|'acquired', secs, micros, term} | {'held', secs, micros, holder id, pttl ms}
CLAIM = Script("detector.leader.claim", """
local t = redis.call('TIME')
local cur = redis.call('HGET', KEYS[1], 'id')
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'renewed', t[1], t[2], redis.call('HGET', KEYS[1], 'term') or '0'}
elseif cur then
  return {'held', t[1], t[2], cur, tostring(redis.call('PTTL', KEYS[1]))}
end
local term = redis.call('INCR', KEYS[2])
local since = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'node', ARGV[3], 'host', ARGV[4], 'pid', ARGV[5], 'since', since,
           'term', term)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'acquired', t[1], t[2], tostring(term)}
""")

# KEYS: leader   ARGV: holder id  -> 1 released | 0 not ours
RELEASE = Script("detector.leader.release", """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
""")


@dataclass(frozen=True)
class Identity:
    """Who a detector process is: a unique holder id plus where it runs (shown by status and events)."""

    id: str
    node: str
    host: str
    pid: int


@dataclass(frozen=True)
class Claim:
    """The answer to one :func:`claim`: ``status`` is ``acquired``, ``renewed`` or ``held`` (by ``holder``)."""

    status: str
    now: float  # Redis time of the claim
    term: int = 0
    holder: str | None = None  # the other holder's id when ``held``
    ttl: float | None = None  # seconds left on the other holder's lease when ``held``

    @property
    def leading(self) -> bool:
        return self.status in (ACQUIRED, RENEWED)


@dataclass(frozen=True)
class Leader:
    """The current holder of the lease, as :func:`read` finds it."""

    id: str
    node: str
    host: str
    pid: int | None
    since: float | None
    term: int
    ttl: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "node": self.node, "host": self.host, "pid": self.pid, "since": self.since,
                "term": self.term, "ttl": self.ttl}


def key() -> str:
    return keys.detector_leader()


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def parse_claim(reply: Any) -> Claim:
    """The :data:`CLAIM` script's reply as a :class:`Claim` (a reply of another shape raises ValueError)."""
    status = _text(reply[0])
    now = int(_text(reply[1])) + int(_text(reply[2])) / 1e6
    if status == HELD:
        pttl = int(_text(reply[4]))
        return Claim(HELD, now, holder=_text(reply[3]), ttl=None if pttl < 0 else pttl / 1000)
    if status not in (ACQUIRED, RENEWED):
        raise ValueError(f"unexpected leader claim reply {reply!r}")
    return Claim(status, now, term=int(_text(reply[3])))


def claim(client: Any, me: Identity, ttl: float) -> Claim:
    """Renew the lease if ``me`` holds it, take it if nobody does; see :data:`CLAIM`."""
    reply = CLAIM(client, keys=[keys.detector_leader(), keys.detector_term()],
                  args=[me.id, max(1, int(ttl * 1000)), me.node, me.host, me.pid])
    return parse_claim(reply)


def release(client: Any, me: Identity) -> bool:
    """Give the lease up (only if still ours): a standby need not wait for the TTL."""
    return bool(RELEASE(client, keys=[keys.detector_leader()], args=[me.id]))


def guard(pipe: Any, holder: str) -> bool:
    """Inside ``WATCH`` of :func:`key` (immediate mode): True while ``holder`` holds the lease."""
    return _text(pipe.hget(keys.detector_leader(), "id") or "") == holder


def renew(pipe: Any, ttl: float) -> None:
    """Queue a renewal of the lease (in the guarded transaction that writes a sweep's results)."""
    pipe.pexpire(keys.detector_leader(), max(1, int(ttl * 1000)))


def parse(raw: Mapping[Any, Any] | None, pttl: int | None = None) -> Leader | None:
    """A leader hash as read (fields as str or bytes) -> :class:`Leader`; None when absent or without an id."""
    if not raw:
        return None
    doc = {_text(k): _text(v) for k, v in raw.items()}
    if not doc.get("id"):
        return None

    def number(name: str, kind: type) -> Any:
        try:
            return kind(doc[name])
        except (KeyError, ValueError):
            return None

    return Leader(id=doc["id"], node=doc.get("node", ""), host=doc.get("host", ""), pid=number("pid", int),
                  since=number("since", float), term=number("term", int) or 0,
                  ttl=None if pttl is None or pttl < 0 else pttl / 1000)


def read(client: Any) -> Leader | None:
    """Who leads the detector now (None: nobody holds the lease)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.detector_leader())
        pipe.pttl(keys.detector_leader())
        raw, pttl = pipe.execute()
    return parse(raw, pttl)
