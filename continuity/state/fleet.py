"""One pipelined read of what ``continuity status`` shows: registry, last-seen, detector states, meta and leader,
queue depths, mode, every service's route, epoch and lease, and the failover pauses, as raw values (parsed by each
concept's own parser), and the server's own ``INFO`` (memory against maxmemory, persistence errors, refused
commands), since a Redis that refuses writes stops the fleet's heartbeats and beat while every key above still
reads "normal".

Operation: :func:`read_snapshot` — one round trip, not a transaction: each value is as fresh as its own write;
the status report says so by showing ages, never by claiming a consistent cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.state import keys, queued
from continuity.state.controls import GLOBAL
from continuity.state.failover_records import RUNNING


@dataclass(frozen=True)
class RedisSnapshot:
    registry: dict[str, str]
    seen: dict[str, str]
    detector: dict[str, str]
    queue_depth: dict[str, int]
    mode: str | None
    routes: dict[str, str | None]
    epochs: dict[str, str | None]
    leases: dict[str, str | None]
    config_errors: dict[str, str] = field(default_factory=dict)  # ``config:errors`` as read
    detector_meta: str | None = None  # ``detector:meta`` (when the detector last swept)
    drill_active: str | None = None  # the drill lock's token: a drill is running
    running_failovers: dict[str, str] = field(default_factory=dict)  # record id -> ``meta`` of records still open
    incidents: dict[str, str] = field(default_factory=dict)  # ``incidents`` as read
    pauses: dict[str, str] = field(default_factory=dict)  # scope (``*`` or service) -> pause note, as read
    detector_leader: dict[str, str] = field(default_factory=dict)  # ``detector:leader`` (who sweeps)
    detector_leader_pttl: int | None = None  # ms left on that lease (negative: none)
    server: dict[str, Any] = field(default_factory=dict)  # ``INFO`` as redis-py parses it
    queued: dict[str, list[Any]] = field(default_factory=dict)  # node -> oldest raw messages (state/queued.py)


RECENT_FAILOVERS = 20  # a record still running is among the newest ones


def read_snapshot(client: Any, services: Iterable[str], queues: Mapping[str, str]) -> RedisSnapshot:
    """``queues``: node -> queue name (whose length is the node's backlog)."""
    services = sorted(services)
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.nodes_registry())
        pipe.hgetall(keys.nodes_seen())
        pipe.hgetall(keys.node_state())
        for q in queues.values():
            pipe.llen(q)
        pipe.get(keys.mode())
        for s in services:
            pipe.get(keys.route(s))
        for s in services:
            pipe.get(keys.epoch(s))
        for s in services:
            pipe.get(keys.lease(s))
        pipe.hgetall(keys.config_errors())
        pipe.get(keys.detector_meta())
        pipe.get(keys.drill_active())
        pipe.hgetall(keys.incidents())
        pipe.zrevrange(keys.failover_history(), 0, RECENT_FAILOVERS - 1)
        pipe.hgetall(keys.detector_leader())
        pipe.pttl(keys.detector_leader())
        pipe.get(keys.failover_pause())
        for s in services:
            pipe.get(keys.failover_pause(s))
        pipe.info()
        *res, info = pipe.execute(raise_on_error=False)
    failed = next((r for r in res if isinstance(r, Exception)), None)
    if failed is not None:
        raise failed
    server = info if isinstance(info, dict) else {}  # INFO refused (renamed away, a test double): no server view
    n = len(queues)
    m = len(services)
    depths = dict(zip(queues.keys(), res[3:3 + n], strict=True))
    rest = res[3 + n:]
    mode = rest[0]
    routes = dict(zip(services, rest[1:1 + m], strict=True))
    epochs = dict(zip(services, rest[1 + m:1 + 2 * m], strict=True))
    leases = dict(zip(services, rest[1 + 2 * m:1 + 3 * m], strict=True))
    recent = list(rest[5 + 3 * m])
    running: dict[str, str] = {}
    if recent:  # a second round trip, only when there are records: which of them are still open
        with client.pipeline(transaction=False) as pipe:
            for rid in recent:
                pipe.hmget(keys.failover_record(rid), "outcome", "meta")
            for rid, (outcome, meta) in zip(recent, pipe.execute(), strict=True):
                if outcome == RUNNING and meta:
                    running[str(rid)] = meta
    notes = zip([GLOBAL, *services], rest[8 + 3 * m:], strict=True)
    waiting = [node for node, depth in depths.items() if depth]
    queued_raw: dict[str, list[Any]] = {}
    if waiting:  # a second round trip, only when some node has a backlog: what it is and when it expires
        with client.pipeline(transaction=False) as pipe:
            for node in waiting:
                pipe.lrange(queues[node], -queued.SHOWN, -1)
            queued_raw = {node: list(reversed(raw)) for node, raw in zip(waiting, pipe.execute(), strict=True)}
    return RedisSnapshot(res[0], res[1], res[2], depths, mode, routes, epochs, leases, dict(rest[1 + 3 * m]),
                         rest[2 + 3 * m], rest[3 + 3 * m], running, dict(rest[4 + 3 * m]),
                         pauses={scope: raw for scope, raw in notes if raw},
                         detector_leader=dict(rest[6 + 3 * m] or {}), detector_leader_pttl=rest[7 + 3 * m],
                         server=server, queued=queued_raw)
