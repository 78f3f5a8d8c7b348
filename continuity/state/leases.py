"""Role leases: who may act as a service's primary right now, held in Redis with a TTL.

A primary keeps its role only while it keeps renewing its lease; when it cannot
(partitioned, paused, Redis gone) the lease expires at Redis and, before that,
the node's own agent demotes the service (self-fencing). The failover planner
promotes a standby only after the old lease has expired plus a margin, so the
two can never overlap. Every operation is one Lua script so that "check the
holder, then change the key" cannot interleave with another node doing the same.
The first epoch of a service (bootstrap) is confirmed by ``WAIT`` on the replicas
(:mod:`continuity.state.durability`) before its holder starts it; later epochs are
confirmed where they are made and before they are used (:mod:`continuity.state.epochs`),
so a lease is only ever taken at an epoch the replicas have.

Layout: ``keys.lease(service)`` is a JSON string {node, epoch, acquired} with a PX expiry;
``keys.epoch(service)`` (the fencing counter, owned by failover) is read so a
promoter carrying an epoch older than the current one cannot take the role.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from continuity.state import keys
from continuity.state.durability import run_with_wait
from continuity.state.scripts import Script

# Shared Lua prelude: decode the lease JSON (nil when absent or unreadable), and stamp Redis time.
PRELUDE = """
local function get_lease(key)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  local ok, l = pcall(cjson.decode, raw)
  if not ok or type(l) ~= 'table' then return nil end
  return l
end
local function put_lease(key, node, epoch, ttl_ms, record)
  local t = redis.call('TIME')
  local v = cjson.encode({node = node, epoch = tonumber(epoch), acquired = tonumber(t[1]) + tonumber(t[2]) / 1e6})
  redis.call('SET', key, v, 'PX', ttl_ms)
  if record then redis.call('SET', record, v) end
end
"""

# KEYS[1]=lease KEYS[2]=epoch KEYS[3]=holder record ; ARGV[1]=node ARGV[2]=epoch ARGV[3]=ttl_ms
# -> {1,'ok'} | {0, reason}
_ACQUIRE = Script("lease.acquire", PRELUDE + """
local want = tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if want < current then return {0, 'stale-epoch'} end
local l = get_lease(KEYS[1])
if l and l.node ~= ARGV[1] then return {0, 'held'} end
if l and want < tonumber(l.epoch or 0) then return {0, 'stale-epoch'} end
put_lease(KEYS[1], ARGV[1], want, ARGV[3], KEYS[3])
return {1, 'ok'}
""")

# KEYS[1]=lease ; ARGV[1]=node ARGV[2]=epoch ARGV[3]=ttl_ms -> 1 renewed | 0 not ours
_RENEW = Script("lease.renew", PRELUDE + """
local l = get_lease(KEYS[1])
if l and l.node == ARGV[1] and tonumber(l.epoch) == tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
""")

# KEYS[1]=lease KEYS[2]=holder record ; ARGV[1]=node ARGV[2]=epoch -> 1 released | 0 not ours
# A release is deliberate (switchover): the record goes too, so the node does not take the role back.
_RELEASE = Script("lease.release", PRELUDE + """
local l = get_lease(KEYS[1])
if l and l.node == ARGV[1] and tonumber(l.epoch) == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  return 1
end
if not l then
  local r = get_lease(KEYS[2])
  if r and r.node == ARGV[1] and tonumber(r.epoch) == tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[2])
    return 1
  end
end
return 0
""")

# KEYS[1]=lease KEYS[2]=holder record KEYS[3]=failed marker ; ARGV[1]=node ARGV[2]=epoch ARGV[3]=marker JSON
# -> 1 given up | 0 not ours. Release and marker in one step: the sweep never sees the one without the other.
_GIVE_UP = Script("lease.give_up", PRELUDE + """
local l = get_lease(KEYS[1])
if l and l.node == ARGV[1] and tonumber(l.epoch) == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3])
  return 1
end
return 0
""")

# KEYS[1]=lease KEYS[2]=holder record KEYS[3]=failed marker KEYS[4]=epoch ; ARGV[1]=node ARGV[2]=epoch
# ARGV[3]=marker JSON -> 1 abandoned | 0 not ours. Like give_up, and also for a role whose lease lapsed while its
# record still names node at the current epoch (what a node back from a fast restart would otherwise reclaim).
_ABANDON = Script("lease.abandon", PRELUDE + """
local l = get_lease(KEYS[1])
if l then
  if l.node ~= ARGV[1] or tonumber(l.epoch) ~= tonumber(ARGV[2]) then return 0 end
else
  local r = get_lease(KEYS[2])
  local current = tonumber(redis.call('GET', KEYS[4]) or '0')
  if not r or r.node ~= ARGV[1] or tonumber(r.epoch) ~= tonumber(ARGV[2]) or current ~= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1
""")

# KEYS[1]=lease -> {node, epoch, pttl} or {} when there is no (readable) lease
READ = Script("lease.read", PRELUDE + """
local l = get_lease(KEYS[1])
if not l or not l.node then return {} end
return {tostring(l.node), tostring(l.epoch or 0), redis.call('PTTL', KEYS[1])}
""")

# KEYS[1]=lease KEYS[2]=epoch KEYS[3]=holder record ; ARGV[1]=node ARGV[2]=ttl_ms ARGV[3]='1' on a retry
# -> 1 when this call created epoch 1 for node (or, on a retry, finds it node's still: written again)
_BOOTSTRAP = Script("lease.bootstrap", PRELUDE + """
if ARGV[3] == '1' and redis.call('GET', KEYS[2]) == '1' then
  local l = get_lease(KEYS[1])
  if l and l.node == ARGV[1] and tonumber(l.epoch) == 1 then
    put_lease(KEYS[1], ARGV[1], 1, ARGV[2], KEYS[3])
    return 1
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], '1')
put_lease(KEYS[1], ARGV[1], 1, ARGV[2], KEYS[3])
return 1
""")


@dataclass(frozen=True)
class Lease:
    service: str
    node: str
    epoch: int
    ttl: float  # seconds left at Redis when read

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "node": self.node, "epoch": self.epoch, "ttl": round(self.ttl, 3)}


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))




def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def acquire_ex(client: Any, service: str, node: str, epoch: int, ttl: float) -> tuple[bool, str]:
    """Like :func:`acquire` but also says why it was refused ('held' or 'stale-epoch')."""
    ok, reason = _ACQUIRE(client, keys=[keys.lease(service), keys.epoch(service), keys.lease_holder(service)],
                          args=[node, int(epoch), _ms(ttl)])
    return bool(int(ok)), _text(reason)


def acquire(client: Any, service: str, node: str, epoch: int, ttl: float) -> bool:
    """Take (or re-take) the role for ``node`` at ``epoch``.

    Refused while another node holds an unexpired lease, or when ``epoch`` is
    older than the service's current fencing epoch or the lease's own epoch.
    """
    return acquire_ex(client, service, node, epoch, ttl)[0]


def renew(client: Any, service: str, node: str, epoch: int, ttl: float) -> bool:
    """Extend the lease only if ``node`` still holds it at ``epoch``; False means the role is gone."""
    return bool(int(_RENEW(client, keys=[keys.lease(service)], args=[node, int(epoch), _ms(ttl)])))


def release(client: Any, service: str, node: str, epoch: int) -> bool:
    """Give the role up (coordinated switchover, a failed promotion undone); a no-op unless ``node`` holds it at
    ``epoch``. A lease that already lapsed is given up too: its holder record naming ``node`` at ``epoch`` is
    deleted, or the node's agent would take the role back as its own (the orphan of the beat script) although
    whoever gave it up meant it to be gone."""
    return bool(int(_RELEASE(client, keys=[keys.lease(service), keys.lease_holder(service)],
                             args=[node, int(epoch)])))


def give_up(client: Any, service: str, node: str, epoch: int, info: dict[str, Any],
            sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
    """Release the role *and* mark the service failed on ``node`` (``keys.service_failed``), atomically.

    Used when the service kept failing on a live node: releasing alone would leave the role unowned
    with nobody to move it (the node is not dead), so the marker is what tells the detector to fail it
    over. ``sign`` (the node's key, :func:`continuity.state.heartbeats.sign_claim`) signs the marker: the
    detector acts only on a marker signed by the node it names. A no-op (False) unless ``node`` still holds
    the lease at ``epoch``.
    """
    claim = {**info, "node": node, "epoch": int(epoch), "service": service}
    marker = json.dumps(sign(claim) if sign is not None else claim, sort_keys=True)
    return bool(int(_GIVE_UP(
        client, keys=[keys.lease(service), keys.lease_holder(service), keys.service_failed(service)],
        args=[node, int(epoch), marker])))


def abandon(client: Any, service: str, node: str, epoch: int, info: dict[str, Any],
            sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
    """Give the role up for good on ``node`` and mark the service failed there, so the detector moves it: the
    lease is released if ``node`` holds it at ``epoch``, or, when it already lapsed, the holder record that would
    let ``node`` reclaim it is dropped (only while it names ``node`` at the current epoch). Atomic, like
    :func:`give_up`; False when the role is not ``node``'s at ``epoch`` (someone else moved it: nothing to do).
    For a node that must not serve what it holds (behind the committed position, issue 10 item 5). ``sign`` signs
    the marker as for :func:`give_up`: the detector believes an unsigned one from nobody, and the role would stay
    unowned while the node lives."""
    claim = {**info, "node": node, "epoch": int(epoch), "service": service}
    marker = json.dumps(sign(claim) if sign is not None else claim, sort_keys=True)
    return bool(int(_ABANDON(
        client, keys=[keys.lease(service), keys.lease_holder(service), keys.service_failed(service),
                      keys.epoch(service)], args=[node, int(epoch), marker])))


# KEYS[1]=failed marker ; ARGV[1]=epoch -> 1 cleared | 0 absent or not older than ARGV[1]
_CLEAR_FAILED = Script("lease.clear_failed", """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, m = pcall(cjson.decode, raw)
if ok and type(m) == 'table' and tonumber(m.epoch or 0) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
""")


def clear_failed(client: Any, service: str, below_epoch: int) -> bool:
    """Drop the service-failed marker once a newer epoch serves: compare-and-delete, so a marker the *new*
    primary set at its own epoch (it failed too, already) is never wiped by the failover that promoted it."""
    return bool(int(_CLEAR_FAILED(client, keys=[keys.service_failed(service)], args=[int(below_epoch)])))


def read_failed(raw: Any) -> dict[str, Any] | None:
    """A ``keys.service_failed`` value as a dict with at least node and epoch; None when absent or unreadable."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("node") and int(data.get("epoch")) >= 0:
            return data
    except (ValueError, TypeError):
        pass
    return None


def parse(service: str, raw: Any) -> Lease | None:
    if not raw:
        return None
    node, epoch, pttl = raw
    return Lease(service=service, node=_text(node), epoch=int(_text(epoch)), ttl=max(0, int(pttl)) / 1000.0)


def read(client: Any, service: str) -> Lease | None:
    """The current lease (holder, epoch, seconds left), read atomically; None when nobody holds it."""
    return parse(service, READ(client, keys=[keys.lease(service)], args=[]))


def read_many(client: Any, services: Iterable[str]) -> dict[str, Lease | None]:
    """All leases in one round trip (the sweep and the agent read every service each second)."""
    names = list(services)
    pipe = client.pipeline(transaction=False)
    for s in names:
        READ(client, keys=[keys.lease(s)], pipe=pipe)
    return {s: parse(s, raw) for s, raw in zip(names, pipe.execute(), strict=True)}


def bootstrap(client: Any, service: str, node: str, ttl: float, retry: bool = False) -> bool:
    """Give a never-placed service its first primary (epoch 1); False once any epoch or lease exists.

    Only the blueprint's primary calls this, at first start of the fleet; after
    that, roles change only through failover (fence -> promote -> acquire).
    Confirmed on the replicas, else :class:`~continuity.state.durability.Unconfirmed`; call again with
    ``retry=True``, which also answers True while epoch 1 and its lease are still ``node``'s.
    """
    (res,), confirmation = run_with_wait(client, lambda pipe: _BOOTSTRAP(
        client, keys=[keys.lease(service), keys.epoch(service), keys.lease_holder(service)],
        args=[node, _ms(ttl), "1" if retry else "0"], pipe=pipe))
    if int(res):
        confirmation.require(f"{service}: epoch 1 for {node}")
    return bool(int(res))


def holder_of_record(client: Any, service: str) -> Lease | None:
    """The last node that took the lease and at which epoch (ttl 0: it says whose role it was, not that it is)."""
    return parse_record(service, client.get(keys.lease_holder(service)))


def parse_record(service: str, raw: Any) -> Lease | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Lease(service=service, node=str(data["node"]), epoch=int(data["epoch"]), ttl=0.0)
    except (ValueError, TypeError, KeyError):
        return None
