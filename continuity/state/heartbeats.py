"""Signed heartbeats: what a node says about itself, and how the detector decides to believe it.

Anyone who can write to Redis could otherwise keep a dead primary looking alive
(or a live one looking sick) and steer failover. So every heartbeat carries an
HMAC-SHA256 over its exact bytes, made with a per-node key that lives only on
that node (env or a 0600 key file) and never in Redis, task arguments or logs.

Wire format (one string, one HSET): ``v1.<hex mac>.<node>|<seq>|<ts>|<nonce>|<services JSON>``.
The MAC covers the body as sent, so verifying needs no re-serialisation; the
fixed fields are read with one split and the services JSON is parsed only when
it is not empty, because at 10,000 nodes per second every microsecond of the
sweep's per-beat cost is 10 ms. A forged blob costs one HMAC.

Replays are refused twice over: the sequence number must grow (the sweep keeps
the last accepted one per node), and the timestamp must be close to the time
Redis stamped the write (so an old beat re-written later is stale even if the
detector lost its memory).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from continuity import paths, settings
from continuity.errors import ContinuityError
from continuity.state import keys
from continuity.state.leases import PRELUDE
from continuity.state.scripts import Script

try:  # the C one-shot HMAC that hmac.digest wraps: map() over it runs no Python frame per beat
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - Python built without OpenSSL
    _hmac_digest = hmac.digest

VERSION = "v1"
PREFIX = VERSION.encode() + b"."
TAG_LEN = 64  # hex SHA-256


class Rejected(Exception):
    """A heartbeat the detector must not believe; ``reason`` is a short stable word for events."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Heartbeat:
    node: str
    seq: int
    ts: float
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonce: str = ""

    def body(self) -> str:
        services = json.dumps(self.services, separators=(",", ":"), sort_keys=True) if self.services else "{}"
        return f"{self.node}|{self.seq}|{self.ts:.6f}|{self.nonce}|{services}"


# --- keys -----------------------------------------------------------------------------------
def env_var(node: str) -> str:
    return settings.NODE_KEY.env_name(node)


def key_file(node: str) -> Path:
    return paths.state_dir() / "keys" / f"{node}.key"


def node_key(node: str) -> bytes | None:
    """The node's HMAC key from its env var, else its key file; None when it has none."""
    value = settings.NODE_KEY.get(node)
    if value:
        return value.encode()
    try:
        data = key_file(node).read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ContinuityError(f"cannot read heartbeat key {key_file(node)}: {exc.strerror}") from None
    return data or None


def ensure_node_key(node: str) -> bytes:
    """Return the node's key, creating a random one (file mode 0600, never overwritten) if it has none."""
    existing = node_key(node)
    if existing:
        return existing
    path = key_file(node)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        key = node_key(node)
        if key is None:
            raise ContinuityError(f"heartbeat key file {path} exists but is empty") from None
        return key
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    key = node_key(node)
    assert key is not None
    return key


class KeyRing:
    """Node keys looked up once per process; the sweep verifies thousands of beats a second."""

    def __init__(self, preset: dict[str, bytes] | None = None) -> None:
        self._keys: dict[str, bytes | None] = dict(preset or {})

    def get(self, node: str) -> bytes | None:
        if node not in self._keys:
            self._keys[node] = node_key(node)
        return self._keys[node]

    def forget(self, node: str) -> None:
        self._keys.pop(node, None)


# --- signing --------------------------------------------------------------------------------
def mac(key: bytes, body: str) -> str:
    return hmac.digest(key, body.encode(), "sha256").hex()


def encode(hb: Heartbeat, key: bytes) -> str:
    body = hb.body()
    return f"{VERSION}.{mac(key, body)}.{body}"


def check_macs(keys: Sequence[bytes], bodies: Sequence[bytes], tags: Sequence[bytes]) -> list[bool]:
    """For each (key, body, tag): does ``tag`` equal the hex HMAC-SHA256 of ``body``? Compared in constant time.

    The batch form of the check in :func:`verify`, for the sweep: 10,000 beats a second, and every
    per-item step here (HMAC, hex, compare) runs inside C via ``map``.
    """
    macs = map(binascii.hexlify, map(_hmac_digest, keys, bodies, repeat("sha256")))
    return list(map(hmac.compare_digest, macs, tags))


def split(raw: str) -> tuple[str, str]:
    """(mac, body) of a wire heartbeat; Rejected('unsigned'/'malformed') when it is not one."""
    if not isinstance(raw, str):
        raise Rejected("malformed", "not a string")
    if raw.startswith("{"):
        raise Rejected("unsigned", "plain JSON without a signature")
    version, sep1, rest = raw.partition(".")
    tag, sep2, body = rest.partition(".")
    if not sep1 or not sep2 or version != VERSION:
        raise Rejected("malformed", f"expected {VERSION}.<mac>.<body>")
    if not tag:
        raise Rejected("unsigned", "empty signature")
    return tag, body


def verify(raw: str, field_node: str, keyring: KeyRing, *, last_seq: int | None, arrival: float | None,
           max_age: float) -> Heartbeat:
    """Return the heartbeat if it is authentic, fresh and new for ``field_node``; else raise Rejected.

    ``field_node`` is the hash field it was stored under: a node's valid beat
    copied under another node's name is refused (node-mismatch).
    """
    tag, body = split(raw)
    key = keyring.get(field_node)
    if key is None:
        raise Rejected("unknown-node", f"no heartbeat key for node {field_node!r}")
    if not hmac.compare_digest(tag, mac(key, body)):
        raise Rejected("bad-mac", "signature does not match the node's key")
    try:
        node, seq, ts, nonce, services = body.split("|", 4)
        parsed = json.loads(services) if services != "{}" else {}
        if not isinstance(parsed, dict):
            raise ValueError("services is not an object")
        hb = Heartbeat(node=node, seq=int(seq), ts=float(ts), services=parsed, nonce=nonce)
    except (ValueError, TypeError) as exc:
        raise Rejected("malformed", f"signed body unreadable: {exc}") from None
    if hb.node != field_node:
        raise Rejected("node-mismatch", f"beat of {hb.node!r} stored as {field_node!r}")
    if last_seq is not None and hb.seq <= last_seq:
        raise Rejected("replayed", f"seq {hb.seq} not after last accepted {last_seq}")
    if arrival is not None and abs(arrival - hb.ts) > max_age:
        raise Rejected("stale", f"sent at {hb.ts:.3f} but written at {arrival:.3f}")
    return hb


def digest(raw: str | bytes) -> str:
    """Short fingerprint of a rejected blob: the same bad beat is reported once, not every sweep."""
    data = raw if isinstance(raw, bytes) else raw.encode(errors="replace") if isinstance(raw, str) else b""
    return hashlib.sha256(data).hexdigest()[:16]


# --- in Redis: the beat script every agent runs, and the pending form the sweep drains ------------------------
# KEYS[1]=heartbeats KEYS[2]=arrivals KEYS[3]=nodes_seen KEYS[4]=pending, then per service: lease, holder record,
# epoch. ARGV[1]=node ARGV[2]=beat ARGV[3]=ttl_ms -> {arrival, holder1, epoch1, orphan1, holder2, ...};
# leases held by ARGV[1] are renewed. ``orphan`` is the epoch ARGV[1] may take back: the lease is gone but the
# record says it was ours at the service's current epoch (no fence since), else 0. The beat also lands in the
# pending hash with its arrival stamp, which the sweep drains (newlines blanked: one entry, one line).
BEAT = Script("heartbeat.beat", PRELUDE + """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local beat = ARGV[2]
if string.find(beat, '\\n', 1, true) then beat = (string.gsub(beat, '\\n', ' ')) end
redis.call('HSET', KEYS[1], ARGV[1], beat)
redis.call('HSET', KEYS[2], ARGV[1], now)
redis.call('HSET', KEYS[3], ARGV[1], now)
redis.call('HSET', KEYS[4], ARGV[1], now .. ' ' .. beat)
local out = {now}
for i = 5, #KEYS, 3 do
  local l = get_lease(KEYS[i])
  if l and l.node == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  if l and l.node then
    out[#out + 1] = tostring(l.node)
    out[#out + 1] = tostring(l.epoch or 0)
    out[#out + 1] = '0'
  else
    out[#out + 1] = ''
    out[#out + 1] = '0'
    local r = get_lease(KEYS[i + 1])
    local current = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
    if r and r.node == ARGV[1] and current > 0 and tonumber(r.epoch or -1) == current then
      out[#out + 1] = tostring(current)
    else
      out[#out + 1] = '0'
    end
  end
end
return out
""")


def beat_keys() -> list[str]:
    """The fixed KEYS of :data:`_BEAT`, in order (the bench and tests call the script too)."""
    return [keys.heartbeats(), keys.heartbeat_arrivals(), keys.nodes_seen(), keys.heartbeats_pending()]


def service_keys(services: Sequence[str]) -> list[str]:
    """The per-service KEYS of :data:`BEAT` (lease, holder record, epoch), in the order the script reads them."""
    return [k for s in services for k in (keys.lease(s), keys.lease_holder(s), keys.epoch(s))]


def split_pending(blob: bytes, count: int) -> tuple[list[bytes], tuple[bytes, ...], tuple[bytes, ...]] | None:
    """A drained pending batch (``node, "<arrival> <beat>"`` pairs joined by newlines, as :data:`BEAT` writes them
    and the sweep's scripts return them) as (raw node names, arrival stamps, beats); None when its element count
    does not match (a value held a newline: written by something other than the beat script)."""
    if not count:
        return [], (), ()
    parts = blob.split(b"\n")
    if len(parts) != count:
        return None
    # column-wise, each step one C-level pass: this runs for every beat of the fleet every second
    arrivals, _, raws = zip(*map(bytes.partition, parts[1::2], repeat(b" ")), strict=True)
    return parts[0::2], arrivals, raws
