"""Replication positions and lag in Redis: how far each standby's copy of each declared source is behind.

Three keys per service (built in :mod:`~continuity.state.keys`), none with a TTL — a reader judges freshness from
the ``updated`` stamp, because "the replicator stopped publishing" is itself what an operator must see:

- ``replication:lag:<service>`` (hash ``<standby>|<source>`` -> :class:`StandbyLag` JSON), written by the
  primary's replicator, the one process that sees both ends of a stream: its own end position and what each
  standby acknowledged having durably;
- ``replication:applied:<service>`` (hash ``<node>|<source>`` -> :class:`Applied` JSON), written by each
  standby for its own copy: still there when the primary is gone, and what a failover's prepare step needs to
  know which standby is freshest;
- ``replication:mode:<service>`` (:class:`SyncMode` JSON), the mode a sync service is in right now (``sync``,
  or ``degraded`` to async for want of standbys), written by the primary's replicator on every change;
- ``replication:committed:<service>`` (hash ``<source>`` -> :class:`Committed` JSON), the role's committed
  position: the most the fleet acknowledged to clients, with the epoch it was acknowledged at. Raised by the
  primary's replicator, re-based at the new epoch by a failover's prepare step (which records the difference
  as the measured data loss), and only ever moved forward (:func:`advance_committed`, one Lua script): a
  higher epoch, or more records at the same epoch. A node holding less than it never takes the role
  (issue 10 item 5: :mod:`continuity.services.survivors`).

Operations and their guarantees: :func:`publish_lags` / :func:`publish_applied` (one pipelined ``HSET`` per
service: a batch lands together or not at all as far as one service is concerned), :func:`write_mode` (one
``SET``), :func:`read_lags` / :func:`read_applied` / :func:`read_modes` (one pipelined read; an unreadable
value is skipped, never raised on — anyone with Redis access can write anything there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, TypeVar

from continuity.state import keys
from continuity.state.scripts import Script

T = TypeVar("T")


@dataclass(frozen=True)
class StandbyLag:
    """One standby's copy of one source, as its primary sees it.

    ``acked_*`` is what the standby confirmed it holds durably (fsync'd); ``end_*`` the primary's own end.
    ``lag_seconds`` is how long the oldest change the standby lacks has been waiting (0 when it has
    everything); ``lag_records`` the records it lacks (None for sources without records: SQLite,
    directories); ``lag_bytes`` the bytes. ``state``: ``streaming`` (caught up at least once since it
    connected), ``catchup`` or ``disconnected``. ``mode``: the service's effective mode (sync, async, degraded).
    """

    service: str
    source: str
    standby: str
    primary: str
    epoch: int
    state: str
    mode: str
    acked_offset: int
    acked_count: int | None
    end_offset: int
    end_count: int | None
    lag_seconds: float
    lag_records: int | None
    lag_bytes: int
    updated: float


@dataclass(frozen=True)
class Applied:
    """What ``node`` holds durably of one source: offset and record count (a ledger), or the digest of the
    image / manifest it applied (SQLite, directory); ``last_seq`` the last ledger record's own sequence number;
    ``epoch`` the highest epoch it applied data of, and from which ``primary``; ``synced`` the last wall time it
    knew it held everything that primary had written (its head, sent with every frame and keepalive): a
    failover's loss window starts no earlier (a ledger's records written before it are all here)."""

    service: str
    source: str
    node: str
    offset: int
    count: int | None
    last_seq: int | None
    digest: str | None
    epoch: int
    primary: str
    updated: float
    synced: float | None = None


@dataclass(frozen=True)
class SyncMode:
    """Whether a sync service is acknowledging writes synchronously right now, and since when."""

    service: str
    mode: str  # sync | degraded
    primary: str
    epoch: int
    since: float
    reason: str


def _field(item: StandbyLag | Applied) -> str:
    node = item.standby if isinstance(item, StandbyLag) else item.node
    return f"{node}|{item.source}"


def _encode(item: Any) -> str:
    return json.dumps(asdict(item), sort_keys=True)


# what JSON may hold for each annotation of the value types (annotations are strings: postponed evaluation)
_JSON_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                            "int | None": (int, type(None)), "str | None": (str, type(None)),
                                            "float | None": (int, float, type(None))}


def _well_typed(cls: type, doc: Mapping[str, Any]) -> bool:
    """Every field of the right JSON type, numbers finite: a lag of ``"slow"`` or an ``updated`` of null would
    otherwise pass as a value and fail whoever does arithmetic on it (status, the metrics)."""
    for f in fields(cls):
        if f.name not in doc and f.default is not MISSING:
            continue  # written before the field existed: its default
        v = doc[f.name]
        if isinstance(v, bool) or not isinstance(v, _JSON_TYPES[str(f.type)]):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
    return True


def _decode(cls: type[T], raw: Any) -> T | None:
    """A stored value as ``cls``; None when it is not one (garbled, or written by something else)."""
    try:
        doc = json.loads(raw)
        if not _well_typed(cls, doc):
            return None
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        return None


def _publish(client: Any, key_of: Any, items: Iterable[StandbyLag | Applied]) -> None:
    by_service: dict[str, dict[str, str]] = {}
    for item in items:
        by_service.setdefault(item.service, {})[_field(item)] = _encode(item)
    if not by_service:
        return
    with client.pipeline(transaction=True) as pipe:
        for service, mapping in by_service.items():
            pipe.hset(key_of(service), mapping=mapping)
        pipe.execute()


def publish_lags(client: Any, lags: Iterable[StandbyLag]) -> None:
    _publish(client, keys.replication_lag, lags)


def publish_applied(client: Any, applied: Iterable[Applied]) -> None:
    _publish(client, keys.replication_applied, applied)


def _read(client: Any, key_of: Any, cls: type[T], services: Iterable[str]) -> dict[str, list[T]]:
    names = sorted(set(services))
    with client.pipeline(transaction=False) as pipe:
        for s in names:
            pipe.hgetall(key_of(s))
        res = pipe.execute()
    out: dict[str, list[T]] = {}
    for s, raw in zip(names, res, strict=True):
        items = [v for _, r in sorted(dict(raw).items()) if (v := _decode(cls, r)) is not None]
        if items:
            out[s] = items
    return out


def read_lags(client: Any, services: Iterable[str]) -> dict[str, list[StandbyLag]]:
    """Service -> every standby/source lag published for it (services with none are left out)."""
    return _read(client, keys.replication_lag, StandbyLag, services)


def read_applied(client: Any, services: Iterable[str]) -> dict[str, list[Applied]]:
    """Service -> every node/source position published for it."""
    return _read(client, keys.replication_applied, Applied, services)


def write_mode(client: Any, mode: SyncMode) -> None:
    client.set(keys.replication_mode(mode.service), _encode(mode))


def read_modes(client: Any, services: Iterable[str]) -> dict[str, SyncMode]:
    names = sorted(set(services))
    values = client.mget([keys.replication_mode(s) for s in names]) if names else []
    return {s: m for s, raw in zip(names, values, strict=True) if raw and (m := _decode(SyncMode, raw)) is not None}


def as_dicts(items: Mapping[str, Iterable[Any]]) -> dict[str, list[dict[str, Any]]]:
    """JSON-ready form of a read (``status --json``)."""
    return {s: [asdict(i) for i in v] for s, v in items.items()}


# --- the committed position ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Committed:
    """The role's committed position of one ledger source: ``count`` records (``offset`` bytes, last record's
    ``last_seq``) acknowledged at ``epoch`` by ``node``; ``at`` the wall time its newest record was seen
    written (what a loss in seconds is measured against), ``updated`` when this was written, ``how``
    ``acked`` (raised by the primary) or ``rebased`` (a failover started the epoch from this)."""

    service: str
    source: str
    epoch: int
    count: int
    offset: int
    last_seq: int | None
    at: float | None
    node: str
    updated: float
    how: str = "acked"


# KEYS[1]=committed hash; ARGV[1]=source ARGV[2]=value JSON ARGV[3]=epoch ARGV[4]=count -> 1 written | 0 not forward
_ADVANCE = Script("replication.committed.advance", """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local epoch, count = tonumber(ARGV[3]), tonumber(ARGV[4])
if raw then
  local ok, c = pcall(cjson.decode, raw)
  if ok and type(c) == 'table' and tonumber(c.epoch) and tonumber(c.count) then
    local ce, cc = tonumber(c.epoch), tonumber(c.count)
    if epoch < ce or (epoch == ce and count <= cc) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
""")


def advance_committed(client: Any, value: Committed, pipe: Any = None) -> Any:
    """Write ``value`` if it moves the committed position forward (higher epoch, or same epoch and more records);
    1 when written, 0 when not (queued on ``pipe`` when given). A stale primary (lower epoch) never lowers it."""
    return _ADVANCE(client, keys=[keys.replication_committed(value.service)],
                    args=[value.source, _encode(value), int(value.epoch), int(value.count)], pipe=pipe)


def read_committed(client: Any, services: Iterable[str]) -> dict[str, dict[str, Committed]]:
    """Service -> source -> committed position (services with none are left out; garbled values skipped)."""
    names = sorted(set(services))
    with client.pipeline(transaction=False) as pipe:
        for s in names:
            pipe.hgetall(keys.replication_committed(s))
        res = pipe.execute()
    out: dict[str, dict[str, Committed]] = {}
    for s, raw in zip(names, res, strict=True):
        items = {}
        for src, r in dict(raw).items():
            c = _decode(Committed, r)
            if c is not None and c.service == s and c.source == (src.decode() if isinstance(src, bytes) else src):
                items[c.source] = c
        if items:
            out[s] = items
    return out
